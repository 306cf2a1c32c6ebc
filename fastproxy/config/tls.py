"""TLS from the configuration, built once per snapshot: the root `tls` block (the main port
terminates TLS) and the root `client_tls` block (how `https://` backends are verified).

Owns reading the certificate and key files, every check of them, and the `ssl.SSLContext`s the
server uses. Everything happens at compile time, so `fastproxy check`, the master's validation
of a reload and the worker's reload all see the same errors, each naming its JSON path and file:
a missing or unreadable file, a file that is not PEM, an encrypted private key, a key that is
not the certificate's. An expired (or not yet valid) certificate is a warning: the port still
serves, as KrakenD's does.

Rules it keeps (KrakenD's, Go's crypto/tls underneath):
- A `tls` block that is not `disabled` makes the port TLS only; the default is TLS 1.3 only;
  `min_version` / `max_version` take `TLS12` and `TLS13`; older versions are refused (an error,
  not a warning: TLS 1.0 and 1.1 are deprecated by RFC 8996 and OpenSSL 3 refuses them at its
  default security level anyway).
- `cipher_suites` are IANA numbers. The TLS 1.2 ones map to OpenSSL names; the three TLS 1.3
  suites (4865, 4866, 4867) are accepted and always all enabled: like Go, Python's ssl cannot
  restrict them. RC4 and 3DES suites are refused.
- `curve_preferences` are Go CurveIDs (23 P-256, 24 P-384, 25 P-521, 29 X25519). Python's ssl
  sets one key-exchange group (`set_ecdh_curve`), not a list: the first listed curve is the only
  one offered, and listing more is a warning.
- Several `keys`: the certificate is chosen by SNI (the DNS names of its subjectAltName,
  wildcards of one label, else its Common Name), the first key for any other name. ALPN offers
  `http/1.1` only.
- `enable_mtls`: a client certificate is required and verified against `ca_certs` plus the
  system's CAs unless `disable_system_ca_pool`.
- `client_tls`: one client context per snapshot, shared by every backend pool; verification is
  on unless `allow_insecure_connections`; `client_certs` presents one certificate (Python's ssl
  holds one per context).
"""

import datetime
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import NameOID

from fastproxy.config import schema
from fastproxy.config.namespaces import is_comment
from fastproxy.config.problems import Problems

VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
REFUSED_VERSIONS = ("SSL3.0", "TLS10", "TLS11")
ALPN = ["http/1.1"]

# IANA number -> OpenSSL name, for the TLS 1.2 suites Go's crypto/tls implements (RFC 5246,
# 5289, 7905). TLS 1.3 suites are not in this table: they cannot be chosen (see TLS13_SUITES).
TLS12_SUITES = {
    0x002F: "AES128-SHA",
    0x0035: "AES256-SHA",
    0x003C: "AES128-SHA256",
    0x009C: "AES128-GCM-SHA256",
    0x009D: "AES256-GCM-SHA384",
    0xC009: "ECDHE-ECDSA-AES128-SHA",
    0xC00A: "ECDHE-ECDSA-AES256-SHA",
    0xC013: "ECDHE-RSA-AES128-SHA",
    0xC014: "ECDHE-RSA-AES256-SHA",
    0xC023: "ECDHE-ECDSA-AES128-SHA256",
    0xC027: "ECDHE-RSA-AES128-SHA256",
    0xC02B: "ECDHE-ECDSA-AES128-GCM-SHA256",
    0xC02C: "ECDHE-ECDSA-AES256-GCM-SHA384",
    0xC02F: "ECDHE-RSA-AES128-GCM-SHA256",
    0xC030: "ECDHE-RSA-AES256-GCM-SHA384",
    0xCCA8: "ECDHE-RSA-CHACHA20-POLY1305",
    0xCCA9: "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = {0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
                0x1303: "TLS_CHACHA20_POLY1305_SHA256"}
WEAK_SUITES = {0x0005: "TLS_RSA_WITH_RC4_128_SHA", 0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
               0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", 0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
               0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"}
# Without `cipher_suites`, TLS 1.2 offers forward-secret AEAD suites only.
DEFAULT_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
CURVES = {23: "prime256v1", 24: "secp384r1", 25: "secp521r1", 29: "X25519"}

SERVER_FIELDS = frozenset(schema.ServerTLS.__struct_fields__)
CLIENT_FIELDS = frozenset(schema.ClientTLS.__struct_fields__)


@dataclass(frozen=True, slots=True)
class Certificate:
    """One `keys` entry as loaded: where it came from and the names it answers to."""

    public_key: str
    private_key: str
    names: tuple[str, ...]  # lower-case DNS names; `*.example.com` for a wildcard
    not_after: datetime.datetime


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """What the worker wraps accepted sockets with. `context` is the first key's; with several
    keys its SNI callback moves a handshake to the context of the key the name belongs to."""

    context: ssl.SSLContext
    handshake_timeout: float
    certificates: tuple[Certificate, ...]
    mtls: bool
    min_version: ssl.TLSVersion


def listener_change(old: Optional[ServerTLS], new: Optional[ServerTLS]) -> Optional[str]:
    """Why a reload from `old` to `new` must be refused, or None: the protocol the port speaks
    (TLS or plain HTTP) is what clients were told; changing it takes a restart."""
    if (old is None) == (new is None):
        return None
    turned = "on" if new is not None else "off"
    return (f"$.tls: the reload would turn TLS {turned} on the main port, which is fixed for the life of the "
            "process (clients connect with one protocol): restart fastproxy to change it")


# -- reading files ----------------------------------------------------------------------------------
MAKE_CERT_HINT = " (to try TLS, scripts/make-cert.sh DIR NAME makes a self-signed certificate and key)"


def _read(path: str, file: str, what: str, problems: Problems, hint: str = "") -> Optional[bytes]:
    if not isinstance(file, str) or not file:
        problems.error(path, f"expected the path of {what}, found {file!r}")
        return None
    try:
        with open(file, "rb") as f:
            return f.read()
    except OSError as exc:
        missing = hint if isinstance(exc, FileNotFoundError) else ""
        problems.error(path, f"cannot read {what} {file!r}: {exc.strerror or exc}{missing}")
        return None


def _certificate(path: str, file: str, problems: Problems, hint: str = "") -> Optional[x509.Certificate]:
    data = _read(path, file, "the certificate", problems, hint)
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        problems.error(path, f"{file!r} is not a PEM certificate (expected a '-----BEGIN CERTIFICATE-----' block)")
        return None


def _private_key(path: str, file: str, problems: Problems, hint: str = "") -> Any:
    data = _read(path, file, "the private key", problems, hint)
    if data is None:
        return None
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        problems.error(path, f"{file!r} is an encrypted private key: fastproxy reads unencrypted PEM keys only "
                             "(decrypt it, e.g. `openssl pkey -in KEY -out KEY.plain`, and protect the file)")
    except (ValueError, UnsupportedAlgorithm):
        problems.error(path, f"{file!r} is not a PEM private key (expected a '-----BEGIN ... PRIVATE KEY-----' block)")
    return None


def _public_bytes(key: Any) -> bytes:
    return bytes(key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate answers to: its subjectAltName DNS entries, else its CN (as
    browsers and Go did before they dropped the CN fallback)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [n.lower().rstrip(".") for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(names)


def _key_pair(path: str, cert_file: str, key_file: str, cert_field: str, key_field: str,
              problems: Problems, now: datetime.datetime, hint: str = "") -> Optional[Certificate]:
    """Read and check one certificate and its key; warn when the certificate is not valid now."""
    cert = _certificate(f"{path}.{cert_field}", cert_file, problems, hint)
    key = _private_key(f"{path}.{key_field}", key_file, problems, hint)
    if cert is None or key is None:
        return None
    if _public_bytes(cert.public_key()) != _public_bytes(key.public_key()):
        problems.error(path, f"the private key {key_file!r} does not belong to the certificate {cert_file!r} "
                             "(their public keys differ)")
        return None
    not_after = cert.not_valid_after_utc
    if not_after < now:
        problems.warn(f"{path}.{cert_field}", f"the certificate {cert_file!r} expired on {not_after:%Y-%m-%d %H:%M} "
                                              "UTC: clients that verify it will refuse the connection")
    elif cert.not_valid_before_utc > now:
        problems.warn(f"{path}.{cert_field}", f"the certificate {cert_file!r} is not valid before "
                                              f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    return Certificate(cert_file, key_file, cert_names(cert), not_after)


def _load_chain(ctx: ssl.SSLContext, path: str, cert: Certificate, problems: Problems) -> bool:
    try:
        # the password callable is never asked for: encrypted keys were refused above
        ctx.load_cert_chain(cert.public_key, cert.private_key, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        problems.error(path, f"OpenSSL refused the certificate {cert.public_key!r} with the key "
                             f"{cert.private_key!r}: {getattr(exc, 'reason', None) or exc}")
        return False
    return True


def _load_cas(ctx: ssl.SSLContext, path: str, files: list[str], problems: Problems) -> bool:
    ok = True
    for i, file in enumerate(files):
        where = f"{path}[{i}]"
        if _read(where, file, "the CA certificate", problems) is None:
            ok = False
            continue
        try:
            ctx.load_verify_locations(cafile=file)
        except (ssl.SSLError, OSError) as exc:
            problems.error(where, f"{file!r} is not a PEM CA certificate: {getattr(exc, 'reason', None) or exc}")
            ok = False
    return ok


# -- versions, suites, curves ----------------------------------------------------------------------
def _version(raw: Optional[str], path: str, default: ssl.TLSVersion, problems: Problems) -> ssl.TLSVersion:
    if raw is None:
        return default
    if raw in VERSIONS:
        return VERSIONS[raw]
    if raw in REFUSED_VERSIONS:
        problems.error(path, f"{raw} is refused: fastproxy speaks TLS 1.2 and 1.3 only (RFC 8996 deprecates "
                             "TLS 1.0 and 1.1): expected 'TLS12' or 'TLS13'")
    else:
        problems.error(path, f"expected 'TLS12' or 'TLS13', found {raw!r}")
    return default


def _versions(block: Any, path: str, default_min: ssl.TLSVersion, problems: Problems,
              ) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    low = _version(block.min_version, f"{path}.min_version", default_min, problems)
    high = _version(block.max_version, f"{path}.max_version", ssl.TLSVersion.TLSv1_3, problems)
    if low > high:
        problems.error(f"{path}.max_version", f"expected a version at least min_version {block.min_version!r}, "
                                              f"found {block.max_version!r}")
    return low, high


def tls12_ciphers(suites: list[int], path: str, problems: Problems, tls12: bool) -> Optional[str]:
    """The OpenSSL cipher string of the listed TLS 1.2 suites (None: OpenSSL's choice is not
    changed, the list named TLS 1.3 suites only and TLS 1.2 is off)."""
    names = []
    for i, n in enumerate(suites):
        if n in TLS12_SUITES:
            names.append(TLS12_SUITES[n])
        elif n in WEAK_SUITES:
            problems.error(f"{path}[{i}]", f"{n} ({WEAK_SUITES[n]}) is refused: RC4 and 3DES are broken")
        elif n not in TLS13_SUITES:
            problems.error(f"{path}[{i}]", f"expected the IANA number of a cipher suite Go implements (e.g. 49199 "
                                           f"for TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, 4865 for "
                                           f"TLS_AES_128_GCM_SHA256), found {n!r}")
    if not suites:
        return DEFAULT_TLS12_CIPHERS
    if tls12 and not names:
        problems.error(path, "lists no TLS 1.2 cipher suite while TLS 1.2 is allowed (min_version TLS12): TLS 1.2 "
                             "clients could not connect; add TLS 1.2 suites or set min_version TLS13")
        return None
    return ":".join(names) if names else None


def _curve(curves: list[int], path: str, problems: Problems) -> Optional[str]:
    for i, c in enumerate(curves):
        if c not in CURVES:
            problems.error(f"{path}[{i}]", f"expected a Go CurveID (23 P-256, 24 P-384, 25 P-521, 29 X25519), "
                                           f"found {c!r}")
            return None
    if not curves:
        return None
    if len(curves) > 1:
        problems.warn(path, f"Python's ssl offers one key-exchange curve, not a list: only the first, {curves[0]} "
                            f"({CURVES[curves[0]]}), is offered; clients without it cannot connect")
    return CURVES[curves[0]]


@dataclass(frozen=True, slots=True)
class Settings:
    """Versions, TLS 1.2 suites and the curve of a block, checked once, applied to each context."""

    minimum: ssl.TLSVersion
    maximum: ssl.TLSVersion
    ciphers: Optional[str]
    curve: Optional[str]

    def apply(self, ctx: ssl.SSLContext) -> None:
        ctx.minimum_version, ctx.maximum_version = self.minimum, self.maximum
        if self.ciphers is not None:
            ctx.set_ciphers(self.ciphers)
        if self.curve is not None:
            ctx.set_ecdh_curve(self.curve)


def _settings(block: Any, path: str, default_min: ssl.TLSVersion, problems: Problems) -> Settings:
    """Check versions, suites and curve; what OpenSSL refuses is an error here, not at apply."""
    low, high = _versions(block, path, default_min, problems)
    ciphers = tls12_ciphers(block.cipher_suites, f"{path}.cipher_suites", problems, low <= ssl.TLSVersion.TLSv1_2)
    curve = _curve(block.curve_preferences, f"{path}.curve_preferences", problems)
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if ciphers is not None:
        try:
            probe.set_ciphers(ciphers)
        except ssl.SSLError:
            problems.error(f"{path}.cipher_suites", f"{ssl.OPENSSL_VERSION} offers none of {ciphers!r}")
            ciphers = None
    if curve is not None:
        try:
            probe.set_ecdh_curve(curve)
        except (ValueError, ssl.SSLError):
            problems.error(f"{path}.curve_preferences", f"{ssl.OPENSSL_VERSION} does not offer {curve}")
            curve = None
    return Settings(low, max(low, high), ciphers, curve)


def _cas_readable(path: str, files: list[str], problems: Problems) -> bool:
    """Each CA file read and parsed once (into a throwaway context), each failure at its index."""
    return _load_cas(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), path, files, problems)


def _unknown_fields(raw: dict[str, Any], path: str, known: frozenset[str], problems: Problems, what: str) -> None:
    """A field this block does not implement is an error (fail closed: a TLS setting that is
    silently dropped could weaken what the operator asked for)."""
    for key in raw:
        if not is_comment(key) and key not in known:
            problems.error(f"{path}.{key}", f"unknown or unimplemented {what} field: expected one of "
                                            f"{', '.join(sorted(known))}")


# -- the server side ----------------------------------------------------------------------------------
def server_tls(raw: Any, problems: Problems, handshake_timeout: float,
               now: Optional[datetime.datetime] = None) -> Optional[ServerTLS]:
    """The root `tls` block compiled (None: absent, null or `disabled`)."""
    path = "$.tls"
    before = len(problems.errors)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.error(path, f"expected an object, found {type(raw).__name__}")
        return None
    if raw.get("disabled") is True:
        return None  # KrakenD: plain HTTP, the rest of the block is not read
    _unknown_fields(raw, path, SERVER_FIELDS, problems, "tls")
    block = problems.convert({k: v for k, v in raw.items() if k in SERVER_FIELDS}, schema.ServerTLS, path)
    if block is None:
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    pairs: list[tuple[str, str, str]] = []  # (JSON path, certificate, key)
    if block.public_key is not None or block.private_key is not None:
        if block.public_key is None or block.private_key is None:
            missing = "public_key" if block.public_key is None else "private_key"
            problems.error(f"{path}.{missing}", "expected both public_key and private_key, found only one")
        else:
            pairs.append((path, block.public_key, block.private_key))
    for i, key in enumerate(block.keys):
        pairs.append((f"{path}.keys[{i}]", key.public_key, key.private_key))
    if not pairs:
        problems.error(path, "expected `keys` ([{\"public_key\": ..., \"private_key\": ...}]) or public_key and "
                             "private_key, found neither")
        return None
    if block.enable_mtls and block.disable_system_ca_pool and not block.ca_certs:
        problems.error(f"{path}.ca_certs", "enable_mtls with disable_system_ca_pool needs ca_certs: no client "
                                           "certificate could be verified")
    if block.ca_certs and not block.enable_mtls:
        problems.warn(f"{path}.ca_certs", "read for mTLS only, and enable_mtls is not set: ignored")
    settings = _settings(block, path, ssl.TLSVersion.TLSv1_3, problems)
    cas_ok = not block.enable_mtls or _cas_readable(f"{path}.ca_certs", block.ca_certs, problems)
    certs = [_key_pair(where, c, k, "public_key", "private_key", problems, now, MAKE_CERT_HINT)
             for where, c, k in pairs]
    if len(problems.errors) > before or not cas_ok:
        return None  # (a context is built from checked files only)
    contexts: list[ssl.SSLContext] = []
    for (where, _, _), cert in zip(pairs, certs, strict=True):
        assert cert is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        settings.apply(ctx)
        if block.prefer_server_cipher_suites:
            ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.set_alpn_protocols(ALPN)
        if block.enable_mtls:
            ctx.verify_mode = ssl.CERT_REQUIRED
            for ca in block.ca_certs:
                ctx.load_verify_locations(cafile=ca)
            if not block.disable_system_ca_pool:
                ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        if not _load_chain(ctx, where, cert, problems):
            return None
        contexts.append(ctx)
    loaded = tuple(c for c in certs if c is not None)
    if len(contexts) > 1:
        contexts[0].sni_callback = sni_chooser(tuple(zip(loaded, contexts, strict=True)))
    return ServerTLS(contexts[0], handshake_timeout, loaded, block.enable_mtls, settings.minimum)


def sni_chooser(keys: tuple[tuple[Certificate, ssl.SSLContext], ...],
                ) -> Callable[[ssl.SSLObject, Optional[str], ssl.SSLContext], None]:
    """The SNI callback of the default context: the first key whose names match the requested
    server name wins; no match (or no SNI) keeps the default, the first key."""
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}  # "example.com" for "*.example.com"
    for cert, ctx in keys:
        for name in cert.names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], ctx)
            else:
                exact.setdefault(name, ctx)
    default = keys[0][1]

    def choose(obj: ssl.SSLObject, server_name: Optional[str], _ctx: ssl.SSLContext) -> None:
        if not server_name:
            return
        name = server_name.lower().rstrip(".")
        ctx = exact.get(name)
        if ctx is None:
            ctx = wildcard.get(name.partition(".")[2])
        if ctx is not None and ctx is not default:
            obj.context = ctx

    return choose


# -- the client side ----------------------------------------------------------------------------------
def client_tls(raw: Any, problems: Problems) -> ssl.SSLContext:
    """The context of every `https://` backend: the root `client_tls` block, or verification
    against the system's CAs when it is absent."""
    path = "$.client_tls"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if raw is not None and not isinstance(raw, dict):
        problems.error(path, f"expected an object, found {type(raw).__name__}")
        raw = None
    if raw is None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return ctx
    _unknown_fields(raw, path, CLIENT_FIELDS, problems, "client_tls")
    block = problems.convert({k: v for k, v in raw.items() if k in CLIENT_FIELDS}, schema.ClientTLS, path)
    if block is None:
        return ctx
    _settings(block, path, ssl.TLSVersion.TLSv1_2, problems).apply(ctx)
    if block.allow_insecure_connections:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        problems.warn(f"{path}.allow_insecure_connections", "backend certificates are not verified: anybody on "
                                                            "the path to an https:// backend can read and change "
                                                            "the traffic")
    else:
        _load_cas(ctx, f"{path}.ca_certs", block.ca_certs, problems)
        if not block.disable_system_ca_pool:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        elif not block.ca_certs:
            problems.error(f"{path}.disable_system_ca_pool", "with no ca_certs, no backend certificate could be "
                                                             "verified: every https:// backend would fail")
    if len(block.client_certs) > 1:
        problems.error(f"{path}.client_certs", f"expected one client certificate, found {len(block.client_certs)}: "
                                               "fastproxy presents one certificate to every https:// backend")
    for i, pair in enumerate(block.client_certs[:1]):
        where = f"{path}.client_certs[{i}]"
        cert = _key_pair(where, pair.certificate, pair.private_key, "certificate", "private_key", problems,
                         datetime.datetime.now(datetime.UTC))
        if cert is not None:
            _load_chain(ctx, where, cert, problems)
    return ctx

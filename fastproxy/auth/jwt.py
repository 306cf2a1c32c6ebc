"""JSON Web Token verification for `auth/validator`: pure objects, no I/O, no loop, no clock of
their own (the wall clock is passed in: token times are wall-clock seconds, RFC 7519 §2).

Owns:
- `KeySet`: the keys of a JWK Set usable for the one configured algorithm, by `kid`. A key whose
  `kty`, curve, `alg` or `use` does not fit that algorithm is left out when the set is read, so
  no token can be checked with a key of another family (algorithm confusion: an HS256 token
  "signed" with an RSA public key's bytes never meets that key as an HMAC secret).
- `Verifier.verify`: a token's header names exactly the configured `alg` (`none` and every other
  algorithm are refused before any key is touched), its key by `kid` (a token without `kid` only
  against a set of one key), its signature (PyJWT with `cryptography`), then `exp` / `nbf` /
  `iat` with `leeway`, `iss`, and every configured audience (KrakenD: all of them, not any).
- `Verifier.authorize`: `roles` (any of them, at `roles_key`, a dotted path when
  `roles_key_is_nested`) and `scopes` (`any` / `all`, at `scopes_key`, space-separated or a list).
- `Failure`: why a token was refused, mapped once to the status (401; 403 for roles and scopes;
  503 for no keys at all), the RFC 6750 `WWW-Authenticate` challenge and the metric reason.

Why PyJWT: it is maintained, covers every algorithm KrakenD accepts (HS, RS, PS, ES, EdDSA) on
`cryptography`, and reads JWKs into keys itself (`PyJWK`), so no key parsing is written here.
Its own time, audience and issuer checks are off: they read `time.time()` (not injectable) and
its audience rule is "any"; this module does them with the clock it is given.
"""

import base64
from collections.abc import Callable, Sequence
from typing import Any, Final, Optional

import jwt as pyjwt
import msgspec

ALGORITHMS: Final = ("EdDSA", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
                     "PS256", "PS384", "PS512")
_KTY: Final = {"HS": "oct", "RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_CURVES: Final = {"ES256": ("P-256",), "ES384": ("P-384",), "ES512": ("P-521",), "EdDSA": ("Ed25519", "Ed448")}


class Failure(Exception):
    """A refused token: `kind` (one of KINDS) and a short description for the challenge."""

    __slots__ = ("kind", "description")

    def __init__(self, kind: str, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.description = description


# kind -> (status, RFC 6750 error code or "" for none, metric reason). A missing token gets a bare
# challenge (RFC 6750 §3.1: no error code when the request carried no credentials).
KINDS: Final = {
    "missing": (401, "", "jwt missing"),
    "malformed": (401, "invalid_token", "jwt malformed"),
    "alg": (401, "invalid_token", "jwt algorithm"),
    "kid": (401, "invalid_token", "jwt unknown key"),
    "signature": (401, "invalid_token", "jwt signature"),
    "expired": (401, "invalid_token", "jwt expired"),
    "early": (401, "invalid_token", "jwt not yet valid"),
    "issuer": (401, "invalid_token", "jwt issuer"),
    "audience": (401, "invalid_token", "jwt audience"),
    "claim": (401, "invalid_token", "jwt claim"),
    "roles": (403, "insufficient_scope", "jwt roles"),
    "scopes": (403, "insufficient_scope", "jwt scopes"),
    "no keys": (503, "", "jwt no keys"),
}


def challenge(kind: str, description: str) -> bytes:
    """The `WWW-Authenticate` value for a failure (RFC 6750 §3)."""
    code = KINDS[kind][1]
    if not code:
        return b'Bearer realm="fastproxy"'
    # printable ASCII only, no quote or backslash: a description must never end the header line
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description)[:200]
    return f'Bearer realm="fastproxy", error="{code}", error_description="{text}"'.encode("ascii")


class Key:
    """One verification key: PyJWT's key object and the JWK's `kid` ("" without one)."""

    __slots__ = ("kid", "key")

    def __init__(self, kid: str, key: Any) -> None:
        self.kid = kid
        self.key = key


class KeySet:
    """The keys of a JWK Set usable for `alg`. `skipped` says why the others were left out."""

    __slots__ = ("alg", "by_kid", "only", "skipped")

    def __init__(self, alg: str, keys: Sequence[Key], skipped: Sequence[str] = ()) -> None:
        self.alg = alg
        self.by_kid: dict[str, Key] = {k.kid: k for k in keys}
        self.only: Optional[Key] = keys[0] if len(keys) == 1 else None
        self.skipped = tuple(skipped)

    def __len__(self) -> int:
        return len(self.by_kid)

    def find(self, kid: object) -> Optional[Key]:
        if kid is None:
            return self.only  # no `kid`: only a set of one key says which key is meant
        if isinstance(kid, str):
            return self.by_kid.get(kid)
        return None


def check_alg(alg: object) -> None:
    if alg not in ALGORITHMS:
        raise ValueError(f"expected one of {', '.join(ALGORITHMS)}, found {alg!r}")


def read_jwks(data: "bytes | dict[str, Any]", alg: str) -> KeySet:
    """The keys of a JWK Set (RFC 7517 §5) that fit `alg`; ValueError when none does."""
    doc: Any = data
    if isinstance(data, bytes):
        try:
            doc = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('expected a JWK Set, an object with a "keys" list')
    kty = _KTY[alg[:2]]
    curves = _CURVES.get(alg)
    keys: list[Key] = []
    skipped: list[str] = []
    seen: set[str] = set()
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{i}]: not an object")
            continue
        kid = jwk.get("kid", "")
        name = f"keys[{i}] (kid {kid!r})"
        if not isinstance(kid, str):
            skipped.append(f"{name}: kid is not a string")
        elif jwk.get("kty") != kty:
            skipped.append(f"{name}: kty {jwk.get('kty')!r}, {alg} needs {kty!r}")
        elif "alg" in jwk and jwk["alg"] != alg:
            skipped.append(f"{name}: for {jwk['alg']!r}, not {alg}")
        elif jwk.get("use", "sig") != "sig":
            skipped.append(f"{name}: use {jwk.get('use')!r}, not 'sig'")
        elif curves is not None and jwk.get("crv") not in curves:
            skipped.append(f"{name}: curve {jwk.get('crv')!r}, {alg} needs {' or '.join(curves)}")
        elif kid in seen:
            skipped.append(f"{name}: a second key with this kid")
        else:
            try:
                key = pyjwt.PyJWK(jwk, algorithm=alg).key
            except (pyjwt.PyJWKError, pyjwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
                skipped.append(f"{name}: unreadable ({exc})")
                continue
            seen.add(kid)
            keys.append(Key(kid, key))
    if not keys:
        why = "; ".join(skipped) if skipped else "the set is empty"
        raise ValueError(f"no key usable for {alg} ({why})")
    return KeySet(alg, keys, skipped)


_OPTIONS: Final[Any] = {"verify_signature": True, "verify_exp": False, "verify_nbf": False, "verify_iat": False,
                        "verify_aud": False, "verify_iss": False, "verify_sub": False, "verify_jti": False,
                        "require": []}


def claim_at(claims: dict[str, Any], key: str, nested: bool = True) -> Any:
    """The claim named `key`; with `nested`, a dotted path when no claim has the whole name
    (`realm_access.roles`). None when absent."""
    if key in claims:
        return claims[key]
    if not nested or "." not in key:
        return None
    value: Any = claims
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def claim_text(value: Any) -> Optional[str]:
    """A claim as header text (KrakenD's rendering): strings as they are, numbers and booleans as
    JSON writes them, a list comma-joined, an object as JSON. None for null or absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list):
        parts = [claim_text(v) for v in value]
        return ",".join(p for p in parts if p is not None)
    return msgspec.json.encode(value).decode()


def _number(claims: dict[str, Any], name: str) -> Optional[float]:
    v = claims.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Failure("malformed", f"claim {name} is not a number")
    return float(v)


class Verified:
    """A token whose signature and claims checked out: its claims and `exp` (None without one)."""

    __slots__ = ("claims", "exp")

    def __init__(self, claims: dict[str, Any], exp: Optional[float]) -> None:
        self.claims = claims
        self.exp = exp


class Verifier:
    """The checks of one `auth/validator` block. `clock` returns wall-clock seconds."""

    __slots__ = ("alg", "issuer", "audience", "leeway", "roles_key", "roles_nested", "roles", "scopes_key",
                 "scopes", "scopes_all", "clock")

    def __init__(self, alg: str, clock: Callable[[], float], issuer: str = "", audience: Sequence[str] = (),
                 leeway: float = 0.0, roles_key: str = "", roles_nested: bool = False, roles: Sequence[str] = (),
                 scopes_key: str = "", scopes: Sequence[str] = (), scopes_all: bool = False) -> None:
        check_alg(alg)
        self.alg = alg
        self.clock = clock
        self.issuer = issuer
        self.audience = tuple(audience)
        self.leeway = leeway
        self.roles_key = roles_key
        self.roles_nested = roles_nested
        self.roles = frozenset(roles)
        self.scopes_key = scopes_key
        self.scopes = frozenset(scopes)
        self.scopes_all = scopes_all

    def header(self, token: bytes) -> dict[str, Any]:
        """The token's JOSE header, once its `alg` is the configured one."""
        if token.count(b".") != 2:
            raise Failure("malformed", "not a JWS compact serialization")
        # read here rather than with pyjwt.get_unverified_header: 2 µs against 18 (PyJWT
        # decodes the header again, with the signature, in `verify`)
        seg = token[:token.index(b".")]
        try:
            header = msgspec.json.decode(base64.urlsafe_b64decode(seg + b"=" * (-len(seg) % 4)))
        except (ValueError, msgspec.DecodeError):
            raise Failure("malformed", "unreadable token header") from None
        if not isinstance(header, dict):
            raise Failure("malformed", "unreadable token header")
        alg = header.get("alg")
        if alg != self.alg:
            # `none`, another algorithm, or an HS token meant for an RSA key: refused before any key
            raise Failure("alg", "algorithm not accepted")  # (never the token's text: it reaches a header)
        return header

    def verify(self, token: bytes, keys: KeySet) -> Verified:
        """Check `token` against `keys`; raise Failure (kind "kid" when no key has its kid)."""
        header = self.header(token)
        key = keys.find(header.get("kid"))
        if key is None:
            raise Failure("kid", "no key for this token")
        try:
            claims = pyjwt.decode(token, key.key, algorithms=[self.alg], options=_OPTIONS)
        except pyjwt.InvalidSignatureError:
            raise Failure("signature", "bad signature") from None
        except pyjwt.InvalidAlgorithmError:
            raise Failure("alg", "algorithm not accepted") from None
        except pyjwt.PyJWTError:
            raise Failure("malformed", "unreadable token") from None
        if not isinstance(claims, dict):
            raise Failure("malformed", "claims are not an object")
        return Verified(claims, self.check_claims(claims))

    def check_claims(self, claims: dict[str, Any]) -> Optional[float]:
        """Times (with leeway), issuer, audiences; returns `exp`."""
        now = self.clock()
        leeway = self.leeway
        exp = _number(claims, "exp")
        if exp is not None and now > exp + leeway:
            raise Failure("expired", "token expired")
        nbf = _number(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise Failure("early", "token not valid yet")
        iat = _number(claims, "iat")
        if iat is not None and now + leeway < iat:
            raise Failure("early", "token issued in the future")
        if self.issuer and claims.get("iss") != self.issuer:
            raise Failure("issuer", "wrong issuer")
        if self.audience:
            aud = claims.get("aud")
            have: set[str] = set()
            if isinstance(aud, str):
                have.add(aud)
            elif isinstance(aud, list):
                have.update(a for a in aud if isinstance(a, str))
            for a in self.audience:
                if a not in have:
                    raise Failure("audience", "wrong audience")
        return exp

    def authorize(self, claims: dict[str, Any]) -> None:
        """Roles (any) and scopes (any or all); raise Failure (403) when they fall short."""
        if self.roles:
            value = claim_at(claims, self.roles_key, self.roles_nested)
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not any(isinstance(r, str) and r in self.roles for r in value):
                raise Failure("roles", "missing role")
        if self.scopes:
            value = claim_at(claims, self.scopes_key)
            if isinstance(value, str):
                have = set(value.split())
            elif isinstance(value, list):
                have = {s for s in value if isinstance(s, str)}
            else:
                raise Failure("scopes", "missing scope")
            if self.scopes_all:
                ok = self.scopes <= have
            else:
                ok = not self.scopes.isdisjoint(have)
            if not ok:
                raise Failure("scopes", "missing scope")

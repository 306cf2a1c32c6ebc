"""`auth/validator` (endpoint `extra_config`) as a request policy: JWT validation as KrakenD CE's
krakend-jose, with the verification itself in `auth.jwt` and the JWK Set's I/O in `auth.jwks`.

Per request (`LiveValidator.check`):
1. the token: `auth_header_name` (default `Authorization`, `Bearer <token>`), else the cookie
   `cookie_key`; none: 401 with a bare `WWW-Authenticate: Bearer` challenge;
2. the cache of verified tokens (per worker, per validator, bounded: FIFO beyond MAX_TOKENS): a
   token verified before, still before its `exp` (+ leeway) and checked against the key set now
   in use, costs one dict lookup and its stored verdict is applied as it is;
3. otherwise the verifier (`auth.jwt`), with the keys of `jwk_local_path` (read at load) or of
   the worker's `JWKSource` for `jwk_url`: while the first fetch is in flight the request waits
   on it (`check` returns its future, `complete` judges again); an unknown `kid` waits on one
   rate-limited refetch; no keys at all: 503 with Retry-After;
4. on success: `propagate_claims` set their headers on the request (a client's own copies,
   `_` spellings included, are dropped first) and `{JWT.claim}` placeholders of the backend's
   `url_pattern` are filled (percent-encoded) in the request's parameters.

Statuses (RFC 6750 challenges): bad, missing, expired or not-yet-valid token, wrong algorithm,
issuer or audience, unknown key: 401; roles or scopes missing: 403 `insufficient_scope`; a claim
a propagated header or a placeholder needs is absent or not header-safe: 401. The metric reason
is one of a fixed set (`auth.jwt.KINDS`), never text from the token.
"""

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Optional
from urllib.parse import quote, urlsplit

import msgspec

from fastproxy import policies
from fastproxy.auth import Header, drop_headers, header_value, is_header_name, safe_header_value
from fastproxy.auth.jwks import JWKSource, SourceConfig
from fastproxy.auth.jwt import ALGORITHMS, KINDS, Failure, KeySet, Verifier, challenge, claim_at, claim_text, read_jwks
from fastproxy.http.wire import REQUEST_DROP
from fastproxy.policies import CompileContext, Policy, Rejection, RouteDraft

if TYPE_CHECKING:
    import asyncio

    from fastproxy.policies.state import Binder

MAX_TOKENS: Final = 10_000  # verified tokens remembered per validator and worker
NO_EXP_TTL: Final = 300.0  # how long a token without `exp` stays verified in the cache (seconds)
NO_CACHE_REFRESH: Final = 60.0  # refresh period of a jwk_url without `cache` (KrakenD fetches per request)
DEFAULT_COOLDOWN: Final = 10.0  # failed_jwk_key_cooldown when unset: one refetch per 10 s at most


class ValidatorBlock(msgspec.Struct, frozen=True):
    alg: str = "RS256"
    jwk_url: str = ""
    jwk_local_path: str = ""
    jwk_local_ca: str = ""
    disable_jwk_security: bool = False
    cache: bool = False
    cache_duration: int = 900
    failed_jwk_key_cooldown: Optional[str] = None
    audience: list[str] = []
    issuer: str = ""
    roles_key: str = ""
    roles_key_is_nested: bool = False
    roles: list[str] = []
    scopes_key: str = ""
    scopes: list[str] = []
    scopes_matcher: str = "any"
    cookie_key: str = ""
    auth_header_name: str = "Authorization"
    leeway: Optional[str] = None
    propagate_claims: list[list[str]] = []
    propagate_claims_preserve_array: bool = False
    key_identify_strategy: str = "kid"
    operation_debug: bool = False
    # read so that they are refused by name, not ignored: each would weaken the check unnoticed
    jwk_fingerprints: Optional[list[str]] = None
    cipher_suites: Optional[list[int]] = None
    secret_url: Optional[str] = None
    cypher_key: Optional[str] = None


_NOT_IMPLEMENTED: Final = {
    "jwk_fingerprints": "certificate pinning of the JWK server",
    "cipher_suites": "the TLS cipher suites used to fetch the JWK Set",
    "secret_url": "encrypted local JWK files",
    "cypher_key": "encrypted local JWK files",
}


class _Verdict:
    """What verifying one token decided, kept in the cache: the headers and parameters to set on
    a request it admits, or the Rejection it gets (403: a valid token without the roles)."""

    __slots__ = ("generation", "until", "headers", "params", "rejection")

    def __init__(self, generation: int, until: float, headers: tuple[tuple[bytes, bytes], ...],
                 params: tuple[tuple[str, bytes], ...], rejection: Optional[Rejection]) -> None:
        self.generation = generation
        self.until = until  # wall-clock second after which the token is expired
        self.headers = headers
        self.params = params
        self.rejection = rejection


@dataclass(frozen=True, slots=True)
class ValidatorPolicy:
    """One endpoint's compiled validator (shared by every worker)."""

    verifier: Verifier
    header: bytes  # lowercased auth_header_name
    bearer: bool  # the header carries `Bearer <token>` (Authorization): anything else is no token
    cookie: bytes  # cookie_key, or b""
    claims: tuple[tuple[str, bytes], ...]  # propagate_claims: (claim, header name as written)
    placeholders: tuple[str, ...]  # {JWT.x} names of the backend url_pattern ("JWT.x")
    local: Optional[KeySet]  # jwk_local_path's keys, or None with a jwk_url
    source: Optional[SourceConfig]  # jwk_url, or None with a jwk_local_path
    order: int = policies.ORDER_AUTH
    names: frozenset[bytes] = field(init=False)  # the propagated headers, lowercased

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(h.lower() for _, h in self.claims))

    @property
    def sets_headers(self) -> frozenset[bytes]:
        """The headers this validator sets, a client's copies dropped (`auth.OwnedHeaders`)."""
        return self.names

    def bind(self, binder: "Binder") -> "LiveValidator":
        src = None
        cfg = self.source
        if cfg is not None:
            src = binder.entry(cfg.fingerprint, lambda: JWKSource(cfg), JWKSource.close)
            src.start()
        return LiveValidator(self, src)


def _reject(f: Failure) -> Rejection:
    status, _, reason = KINDS[f.kind]
    if status == 503:
        return Rejection(503, reason, ((b"Retry-After", b"1"),))
    return Rejection(status, reason, ((b"WWW-Authenticate", challenge(f.kind, f.description)),))


_MISSING: Final = Failure("missing", "no token")


class LiveValidator:
    """A ValidatorPolicy in one worker: its keys (or JWK source) and its cache of verdicts."""

    __slots__ = ("p", "verifier", "source", "local", "cache", "names", "clock")

    def __init__(self, policy: ValidatorPolicy, source: Optional[JWKSource]) -> None:
        self.p = policy
        self.verifier = policy.verifier
        self.clock = policy.verifier.clock
        self.source = source
        self.local = policy.local
        self.cache: dict[bytes, _Verdict] = {}
        self.names = policy.names

    def token(self, x: Any) -> Optional[bytes]:
        p = self.p
        headers = x.headers
        value = header_value(headers, p.header)
        if value is not None:
            if value[:7].lower() == b"bearer ":
                value = value[7:].strip()
            elif p.bearer:
                value = b""  # Authorization with another scheme (Basic ...): no token
            if value:
                return value
        cookie = p.cookie
        if cookie:
            for h in headers:
                if h[0] == b"cookie":
                    for part in h[2].split(b";"):
                        name, eq, val = part.strip().partition(b"=")
                        if eq and name == cookie and val:
                            return val.strip(b'"')  # type: ignore[no-any-return]
        return None

    def check(self, x: Any, now: float) -> "Optional[asyncio.Future[Any]]":
        token = self.token(x)
        if token is None:
            raise _reject(_MISSING)
        verdict = self.cache.get(token)
        if verdict is not None:
            if verdict.generation == self._generation() and self.clock() <= verdict.until:
                self._apply(x, verdict)
                return None
            del self.cache[token]
        return self._verify(x, token, True)

    def complete(self, x: Any, result: Any, now: float) -> None:
        """The fetch a request waited on is over: judge it with the keys there are now."""
        token = self.token(x)
        if token is None:
            raise _reject(_MISSING)
        self._verify(x, token, False)

    def _generation(self) -> int:
        src = self.source
        return src.generation if src is not None else 0

    def _verify(self, x: Any, token: bytes, may_wait: bool) -> "Optional[asyncio.Future[Any]]":
        src = self.source
        keys = self.local
        if src is not None:
            keys = src.keys
            if keys is None:
                if may_wait:
                    src.start()  # (a State built before the loop ran)
                    if src.pending is not None:
                        return src.pending
                raise _reject(Failure("no keys", "no keys"))
        assert keys is not None
        try:
            verified = self.verifier.verify(token, keys)
        except Failure as f:
            if f.kind == "kid" and may_wait and src is not None:
                fut = src.refetch()
                if fut is not None:
                    return fut
            raise _reject(f) from None
        claims = verified.claims
        rejection = None
        headers: list[tuple[bytes, bytes]] = []
        params: list[tuple[str, bytes]] = []
        try:
            self.verifier.authorize(claims)
            for claim, name in self.p.claims:
                text = claim_text(claim_at(claims, claim))
                if text is None:
                    continue  # as KrakenD: no header (the client's copy is still dropped)
                if not safe_header_value(text):
                    raise Failure("claim", f"claim {claim} cannot be a header value")
                headers.append((name, text.encode("latin-1")))
            for ph in self.p.placeholders:
                text = claim_text(claim_at(claims, ph[4:]))
                if text is None:
                    raise Failure("claim", f"claim {ph[4:]} is required")
                params.append((ph, quote(text, safe="").encode()))
        except Failure as f:
            rejection = _reject(f)
        exp = verified.exp
        until = exp + self.verifier.leeway if exp is not None else self.clock() + NO_EXP_TTL
        verdict = _Verdict(self._generation(), until, tuple(headers), tuple(params), rejection)
        cache = self.cache
        if len(cache) >= MAX_TOKENS:
            del cache[next(iter(cache))]  # the oldest entry
        cache[token] = verdict
        self._apply(x, verdict)
        return None

    def _apply(self, x: Any, v: _Verdict) -> None:
        if v.rejection is not None:
            raise v.rejection
        names = self.names
        if names:
            kept: list[Header] = drop_headers(x.headers, names)
            for name, value in v.headers:
                kept.append((name.lower(), name, value))
            x.headers = kept
        if v.params:
            p = x.params
            if p is None:
                x.params = p = {}
            p.update(v.params)


# -- compile ------------------------------------------------------------------------------------

def _url(block: ValidatorBlock, path: str, ctx: CompileContext) -> Optional[Any]:
    try:
        u = urlsplit(block.jwk_url)
        u.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError:
        ctx.problems.error(f"{path}.jwk_url", f"expected an http(s) URL, found {block.jwk_url!r}")
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        ctx.problems.error(f"{path}.jwk_url", f"expected an http(s) URL, found {block.jwk_url!r}")
        return None
    if u.scheme == "http" and not block.disable_jwk_security:
        ctx.problems.error(f"{path}.jwk_url", "expected an https:// URL: keys fetched over plain HTTP can be replaced "
                           "on the way (set disable_jwk_security to allow http://, for development only)")
        return None
    return u


def _local(block: ValidatorBlock, path: str, ctx: CompileContext) -> Optional[KeySet]:
    where = f"{path}.jwk_local_path"
    try:
        with open(block.jwk_local_path, "rb") as f:
            data = f.read()
    except OSError as exc:
        ctx.problems.error(where, f"cannot read the JWK Set {block.jwk_local_path!r}: {exc.strerror or exc}")
        return None
    try:
        return read_jwks(data, block.alg)
    except ValueError as exc:
        ctx.problems.error(where, f"{block.jwk_local_path!r}: {exc}")
        return None


def compile_endpoint(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    p = ctx.problems
    block = p.control_block(raw, ValidatorBlock, path)
    if block is None:
        return []
    ok = True
    for name, what in _NOT_IMPLEMENTED.items():
        if getattr(block, name) is not None:
            p.error(f"{path}.{name}", f"{what} is not implemented by fastproxy: remove `{name}` (fail closed: the "
                                      "check it asks for would not be made)")
            ok = False
    if block.propagate_claims_preserve_array:
        p.error(f"{path}.propagate_claims_preserve_array", "multi-value propagated headers are not implemented by "
                                                           "fastproxy: arrays are comma-joined; remove it")
        ok = False
    if block.key_identify_strategy != "kid":
        p.error(f"{path}.key_identify_strategy", f"only 'kid' is implemented, found {block.key_identify_strategy!r}")
        ok = False
    if block.operation_debug:
        p.warn(f"{path}.operation_debug", "not implemented: each refusal is counted in /metrics by reason, and "
                                          "its reason is in the access log; ignored")
    if block.alg not in ALGORITHMS:
        p.error(f"{path}.alg", f"expected one of {', '.join(ALGORITHMS)}, found {block.alg!r}")
        return []
    if block.scopes_matcher not in ("any", "all"):
        p.error(f"{path}.scopes_matcher", f"expected 'any' or 'all', found {block.scopes_matcher!r}")
        ok = False
    if block.roles and not block.roles_key:
        p.error(f"{path}.roles_key", "roles are checked at a claim: expected roles_key, found none")
        ok = False
    if block.scopes and not block.scopes_key:
        p.error(f"{path}.scopes_key", "scopes are checked at a claim: expected scopes_key, found none")
        ok = False
    if not is_header_name(block.auth_header_name):
        p.error(f"{path}.auth_header_name", f"expected a header name, found {block.auth_header_name!r}")
        ok = False
    if block.cookie_key and not is_header_name(block.cookie_key):  # a cookie name is a token too (RFC 6265)
        p.error(f"{path}.cookie_key", f"expected a cookie name, found {block.cookie_key!r}")
        ok = False
    if block.cache_duration < 1:
        p.error(f"{path}.cache_duration", f"expected seconds >= 1, found {block.cache_duration}")
        ok = False
    leeway = p.duration(block.leeway, f"{path}.leeway", 1.0)
    cooldown = p.duration(block.failed_jwk_key_cooldown, f"{path}.failed_jwk_key_cooldown", DEFAULT_COOLDOWN)
    cooldown = max(cooldown, 1.0)  # KrakenD: under a second is ignored
    claims: list[tuple[str, bytes]] = []
    seen: set[bytes] = set()
    for i, pair in enumerate(block.propagate_claims):
        where = f"{path}.propagate_claims[{i}]"
        if len(pair) != 2 or not pair[0]:
            p.error(where, f"expected [claim, header], found {pair!r}")
            ok = False
            continue
        claim, header = pair
        lname = header.lower().encode()
        if not is_header_name(header) or "_" in header:
            p.error(f"{where}[1]", f"expected a header name without '_' (backends read '_' as '-'), found {header!r}")
            ok = False
        elif lname in REQUEST_DROP or lname in (b"authorization", b"cookie", block.auth_header_name.lower().encode()):
            p.error(f"{where}[1]", f"{header} cannot carry a claim: fastproxy sets or reads it itself")
            ok = False
        elif lname in seen:
            p.error(f"{where}[1]", f"{header} is set by an earlier claim already")
            ok = False
        else:
            seen.add(lname)
            claims.append((claim, header.encode()))
    local = None
    source = None
    if block.jwk_local_path:  # KrakenD: the local file has preference over jwk_url
        local = _local(block, path, ctx)
        ok = ok and local is not None
    elif block.jwk_url:
        u = _url(block, path, ctx)
        if u is None:
            ok = False
        else:
            refresh = float(block.cache_duration) if block.cache else NO_CACHE_REFRESH
            source = SourceConfig(u, block.alg, refresh, cooldown, block.jwk_local_ca)
    else:
        p.error(path, "expected jwk_url or jwk_local_path (where the keys that sign the tokens are), found neither")
        ok = False
    if block.jwk_local_ca:
        try:
            open(block.jwk_local_ca, "rb").close()
        except OSError as exc:
            p.error(f"{path}.jwk_local_ca", f"cannot read {block.jwk_local_ca!r}: {exc.strerror or exc}")
            ok = False
    if not ok:
        return []
    placeholders = route.jwt_claims if route is not None else ()
    verifier = Verifier(block.alg, time.time, issuer=block.issuer, audience=block.audience, leeway=leeway,
                        roles_key=block.roles_key, roles_nested=block.roles_key_is_nested, roles=block.roles,
                        scopes_key=block.scopes_key, scopes=block.scopes, scopes_all=block.scopes_matcher == "all")
    auth = block.auth_header_name.lower().encode()
    return [ValidatorPolicy(verifier, auth, auth == b"authorization", block.cookie_key.encode(), tuple(claims),
                            tuple(placeholders), local, source)]


def compile_service(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    """At the root KrakenD reads `auth/validator` for the JWK cache its validators share
    (`shared_cache_duration`, enterprise): fastproxy's workers each keep their own."""
    if not isinstance(raw, dict):
        ctx.problems.error(path, "expected an object")
        return []
    for key in raw:
        where = f"{path}.{key}"
        if key == "shared_cache_duration":
            ctx.problems.warn(where, "each worker keeps its own JWK cache (see the endpoints' cache_duration): ignored")
        elif key[:1] not in ("@", "$", "_", "#"):
            ctx.problems.error(where, "at the root, auth/validator only takes shared_cache_duration: an endpoint is "
                                      "protected by its own auth/validator block; move it there")
    return []

"""Cross-Origin Resource Sharing (`security/cors`, root `extra_config`): KrakenD CE's krakend-cors,
which is rs/cors, as one compiled object consulted by the server (no request policy: a preflight
is answered before routing, authentication and any limit, so it spends no token).

Semantics (rs/cors):
- A preflight is an `OPTIONS` request with `Access-Control-Request-Method`. fastproxy answers it
  itself with `options_success_status` (204), before routing (any path), unless
  `options_passthrough`: then it is routed and sent on like any request, and its response gets
  the preflight headers. A preflight whose origin, method or headers are not allowed is answered
  the same status without `Access-Control-Allow-*` headers: the browser refuses it.
- Every other response (the backend's and fastproxy's own: 401, 403, 404, 429, 503 ...) gets
  `Vary: Origin` and, for an allowed origin and method, `Access-Control-Allow-Origin`,
  `Access-Control-Expose-Headers` and `Access-Control-Allow-Credentials`.
- Origins: exact (case-insensitive), `*` (any), or one `*` inside a pattern
  (`https://*.example.com`). `Access-Control-Allow-Origin` is `*` for an any-origin
  configuration, the request's origin otherwise, and always the request's origin with
  `allow_credentials` (a browser refuses `*` with credentials).
- Defaults (rs/cors): origins `*`, methods GET, POST, HEAD, headers Origin, Accept, Content-Type,
  X-Requested-With (`*` allows any; Origin is always allowed), nothing exposed, no max age.

The backend's own `Access-Control-*` headers are passed through unchanged (as KrakenD's no-op
endpoints do).
"""

from typing import Any, Final, Optional

import msgspec

from fastproxy.auth import header_value, is_header_name
from fastproxy.policies import CompileContext, Policy, RouteDraft

Pairs = tuple[tuple[bytes, bytes], ...]

DEFAULT_METHODS: Final = ("GET", "POST", "HEAD")
DEFAULT_HEADERS: Final = ("Origin", "Accept", "Content-Type", "X-Requested-With")
METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})


class CorsBlock(msgspec.Struct, frozen=True):
    allow_origins: list[str] = []
    allow_methods: list[str] = []
    allow_headers: list[str] = []
    expose_headers: list[str] = []
    max_age: Optional[str] = None
    allow_credentials: bool = False
    allow_private_network: bool = False
    options_passthrough: bool = False
    options_success_status: int = 204
    debug: bool = False


_VARY_ACTUAL: Final = ((b"Vary", b"Origin"),)
_VARY_PREFLIGHT: Final = ((b"Vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),)
_VARY_PREFLIGHT_PN: Final = ((b"Vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers, "
                                       b"Access-Control-Request-Private-Network"),)


class Cors:
    """A compiled `security/cors` block (frozen after construction, shared by every worker)."""

    __slots__ = ("any_origin", "origins", "patterns", "methods", "any_header", "headers", "expose", "max_age",
                 "credentials", "private_network", "passthrough", "status")

    def __init__(self, origins: list[str], methods: list[str], headers: list[str], expose: list[str],
                 max_age: float, credentials: bool, private_network: bool, passthrough: bool, status: int) -> None:
        self.any_origin = not origins or "*" in origins
        exact: set[bytes] = set()
        patterns: list[tuple[bytes, bytes]] = []
        for o in origins:
            low = o.lower().encode()
            if o == "*":
                continue
            if b"*" in low:
                prefix, _, suffix = low.partition(b"*")
                patterns.append((prefix, suffix))
            else:
                exact.add(low)
        self.origins = frozenset(exact)
        self.patterns = tuple(patterns)
        self.methods = frozenset(m.upper().encode() for m in (methods or DEFAULT_METHODS))
        names = headers or list(DEFAULT_HEADERS)
        self.any_header = "*" in names
        self.headers = frozenset(h.lower().encode() for h in names if h != "*") | {b"origin"}
        self.expose = ", ".join(expose).encode()
        self.max_age = b"%d" % int(max_age) if max_age >= 1 else b""
        self.credentials = credentials
        self.private_network = private_network
        self.passthrough = passthrough
        self.status = status

    def allowed_origin(self, origin: bytes) -> bool:
        if self.any_origin:
            return True
        low = origin.lower()
        if low in self.origins:
            return True
        for prefix, suffix in self.patterns:
            if len(low) >= len(prefix) + len(suffix) and low.startswith(prefix) and low.endswith(suffix):
                return True
        return False

    def _allow_origin(self, origin: bytes) -> bytes:
        return b"*" if self.any_origin and not self.credentials else origin

    def answers_preflight(self, x: Any) -> bool:
        """`x` is a preflight fastproxy answers itself (before routing)."""
        if self.passthrough or x.method != b"OPTIONS":
            return False
        return header_value(x.headers, b"access-control-request-method") is not None

    def response_headers(self, x: Any) -> Pairs:
        """The CORS headers of the response to `x` (a preflight's or an actual request's)."""
        headers = x.headers
        origin = header_value(headers, b"origin")
        if x.method == b"OPTIONS":
            method = header_value(headers, b"access-control-request-method")
            if method is not None:
                return self._preflight(headers, origin, method)
        if origin is None or not self.allowed_origin(origin) or (
                x.method not in self.methods and x.method != b"OPTIONS"):
            return _VARY_ACTUAL
        out = [(b"Vary", b"Origin"), (b"Access-Control-Allow-Origin", self._allow_origin(origin))]
        if self.expose:
            out.append((b"Access-Control-Expose-Headers", self.expose))
        if self.credentials:
            out.append((b"Access-Control-Allow-Credentials", b"true"))
        return tuple(out)

    def _preflight(self, headers: list[Any], origin: Optional[bytes], method: bytes) -> Pairs:
        vary = _VARY_PREFLIGHT_PN if self.private_network else _VARY_PREFLIGHT
        if origin is None or not self.allowed_origin(origin):
            return vary
        method = method.strip().upper()
        if method != b"OPTIONS" and method not in self.methods:
            return vary
        requested = header_value(headers, b"access-control-request-headers")
        names = [n.strip() for n in requested.split(b",") if n.strip()] if requested else []
        if not self.any_header:
            for n in names:
                if n.lower() not in self.headers:
                    return vary
        out = list(vary)
        out.append((b"Access-Control-Allow-Origin", self._allow_origin(origin)))
        out.append((b"Access-Control-Allow-Methods", method))
        if names:
            out.append((b"Access-Control-Allow-Headers", b", ".join(names)))
        if self.credentials:
            out.append((b"Access-Control-Allow-Credentials", b"true"))
        if self.private_network and header_value(headers, b"access-control-request-private-network") == b"true":
            out.append((b"Access-Control-Allow-Private-Network", b"true"))
        if self.max_age:
            out.append((b"Access-Control-Max-Age", self.max_age))
        return tuple(out)

    def lines(self, x: Any) -> bytes:
        """`response_headers` as header lines, for a response head being built."""
        return b"".join(name + b": " + value + b"\r\n" for name, value in self.response_headers(x))


def compile_cors(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> list[Policy]:
    """Root `security/cors`: compiled into `ctx.shared["cors"]` (the Snapshot's `cors`); no policy."""
    p = ctx.problems
    block = p.control_block(raw, CorsBlock, path)
    if block is None:
        return []
    ok = True
    for i, m in enumerate(block.allow_methods):
        if m.upper() not in METHODS:
            p.error(f"{path}.allow_methods[{i}]", f"expected an HTTP method, found {m!r}")
            ok = False
    for field in ("allow_headers", "expose_headers"):
        for i, h in enumerate(getattr(block, field)):
            if not (is_header_name(h) or (h == "*" and field == "allow_headers")):
                p.error(f"{path}.{field}[{i}]", f"expected a header name, found {h!r}")
                ok = False
    for i, o in enumerate(block.allow_origins):
        if o != "*" and (o.count("*") > 1 or not o.isascii() or any(c in o for c in " ,\r\n\t")):
            p.error(f"{path}.allow_origins[{i}]", f"expected an origin (scheme://host[:port], one '*' at most), "
                                                  f"found {o!r}")
            ok = False
    if not 200 <= block.options_success_status <= 299:
        p.error(f"{path}.options_success_status", f"expected a 2xx status, found {block.options_success_status}")
        ok = False
    max_age = p.duration(block.max_age, f"{path}.max_age", 0.0)
    if block.debug:
        p.warn(f"{path}.debug", "CORS debugging output is not implemented: ignored")
    if block.allow_credentials and (not block.allow_origins or "*" in block.allow_origins):
        p.warn(f"{path}.allow_credentials", "with every origin allowed, credentials are allowed for every origin: "
               "any web page can make credentialed requests and read the answers (the origin is echoed, as "
               "KrakenD does); list the origins to trust")
    if ok:
        ctx.shared["cors"] = Cors(block.allow_origins, block.allow_methods, block.allow_headers, block.expose_headers,
                                  max_age, block.allow_credentials, block.allow_private_network,
                                  block.options_passthrough, block.options_success_status)
    return []

"""The request head a backend receives, built as one list of byte pieces (joined once).

Rules it keeps: the backend's path comes from the route's template (parameters filled in, a
wildcard's rest appended, the query filtered by `input_query_strings`); a client's HEAD stays
HEAD, other methods become the backend's `method` when it sets one; Host is the backend's own;
X-Forwarded-For / -Host / -Proto are fastproxy's (a client's are never passed on, except a
trusted proxy's chain; -Proto is `https` when the main port speaks TLS); only the headers the
route forwards cross (`input_headers`), never a hop-by-hop one; the body framing is regenerated
(Content-Length from the parsed value, chunked re-chunked).
"""

from typing import TYPE_CHECKING, Final, Optional

from fastproxy.http.head import RequestHead, forwarded_block, named_headers
from fastproxy.http.request import filter_query

if TYPE_CHECKING:
    from fastproxy.config.compile import Route, Target

# A route's query_mode: no query string for the backend, all of it, or the listed parameters.
QUERY_NONE, QUERY_ALL, QUERY_LIST = 0, 1, 2
_BODY_METHODS: Final = frozenset((b"POST", b"PUT", b"PATCH"))


def backend_target(h: RequestHead, route: "Route", params: Optional[dict[str, bytes]], rest: Optional[bytes]) -> bytes:
    """The request target for the backend: the route's template, filled in, plus the query."""
    template = route.template
    if len(template) == 1 and not rest:
        target = template[0]
        assert isinstance(target, bytes)
    else:
        pieces: list[bytes] = []
        for p in template:
            if isinstance(p, bytes):
                pieces.append(p)
            else:
                assert params is not None
                pieces.append(params[p])
        target = b"".join(pieces)
        if rest is not None:
            target = target.rstrip(b"/") + b"/" + rest
    qm = route.query_mode
    if qm and h.query:
        q = h.query if qm == QUERY_ALL else filter_query(h.query, route.query_names)
        if q:
            target = target + (b"&" if b"?" in target else b"?") + q
    return target


def backend_method(h: RequestHead, route: "Route") -> bytes:
    """A client's HEAD stays HEAD (the backend's `method` applies to the other requests)."""
    method = h.method
    if method == b"HEAD":
        return method
    return route.upstream_method or method


def request_head(h: RequestHead, route: "Route", target: "Target", method: bytes, path: bytes, xff: bytes,
                 extra: Optional[bytes]) -> list[bytes]:
    """The backend request head as pieces, up to and including the empty line."""
    parts = [method, b" ", path, b" HTTP/1.1\r\nHost: ", target.host_header, b"\r\nX-Forwarded-For: ", xff]
    if h.host is not None:
        parts += (b"\r\nX-Forwarded-Host: ", h.host)
    parts.append(route.forwarded_proto)  # http, or https when the main port speaks TLS
    if extra is not None:
        parts.append(extra)
    if route.forward_headers:
        parts += forwarded_block(h)
    elif route.header_names:
        parts += named_headers(h, route.header_names)
    if h.chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif h.cl > 0:
        parts.append(b"Content-Length: %d\r\n\r\n" % h.cl)
    elif method in _BODY_METHODS:
        parts.append(b"Content-Length: 0\r\n\r\n")
    else:
        parts.append(b"\r\n")
    return parts

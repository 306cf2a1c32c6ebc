"""The decisions of a request's phases, as plain functions that return values; the client
connection acts on them (writes, connects, closes). See ARCHITECTURE.md for the phases.

- `route`: health check, CORS preflight (`security/cors`), route match, 404/405 → an Answer, or
  None with `x.route` set;
- `retry`: after a backend failure, whether and how to try again (`Retry`).
"""

from enum import Enum
from typing import TYPE_CHECKING, Any, Final, Optional, cast

from fastproxy.http.response import ERROR_BODIES
from fastproxy.routing import METHOD_NOT_ALLOWED, NOT_FOUND
from fastproxy.upstream.errors import FailureKind

if TYPE_CHECKING:
    from fastproxy.config.compile import Snapshot
    from fastproxy.server.exchange import Exchange
    from fastproxy.server.worker import Worker

IDEMPOTENT: Final = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
JSON: Final = b"application/json"
TEXT: Final = b"text/plain; charset=utf-8"


class Answer:
    """A response fastproxy writes itself."""

    __slots__ = ("status", "reason", "body", "extra", "content_type")

    def __init__(self, status: int, reason: str, body: bytes = b"", extra: tuple[tuple[bytes, bytes], ...] = (),
                 content_type: bytes = TEXT) -> None:
        self.status = status
        self.reason = reason
        self.body = body
        self.extra = extra
        self.content_type = content_type


def route(snap: "Snapshot", x: "Exchange", worker: "Worker") -> Optional[Answer]:
    """Match `x` to its route (setting `x.route`, `x.params`, `x.rest`), or answer it."""
    path = x.path
    if path == b"/__health":
        draining = worker.draining
        return Answer(503 if draining else 200, "draining" if draining else "", worker.health_body(),
                      content_type=JSON)
    cors = snap.cors
    if cors is not None and cors.answers_preflight(x):  # before routing and every policy: no token spent
        return Answer(cors.status, "cors preflight")  # (its headers: `respond`, as for any answer)
    found, params, rest = snap.routes.match(x.method, path)
    if found is NOT_FOUND:
        return Answer(404, "no route", ERROR_BODIES[404])
    if found is METHOD_NOT_ALLOWED:
        assert params is not None
        allow = b", ".join(sorted(cast("dict[bytes, object]", params)))  # the methods the path has
        return Answer(405, "method not allowed", ERROR_BODIES[405], ((b"Allow", allow),))
    x.route = found
    matched: Any = params  # a route's match: parameter name -> value (a dict[str, bytes])
    x.params = matched
    x.rest = rest
    return None


class Retry(Enum):
    NO = 0
    OTHER_HOST = 1  # nothing of the request reached a backend: any method, another host
    FRESH = 2  # a pooled connection the backend had closed: an idempotent request, a new connection


def retry(x: "Exchange", kind: FailureKind) -> Retry:
    """Once per request, and only before any byte of the answer."""
    if x.retried or x.head_sent:
        return Retry.NO
    assert x.route is not None
    if kind is FailureKind.CONNECT and len(x.route.targets) > 1:
        return Retry.OTHER_HOST
    if kind is FailureKind.STALE and x.method in IDEMPOTENT and x.cl <= 0 and not x.chunked:
        return Retry.FRESH
    return Retry.NO

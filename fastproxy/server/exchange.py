"""One request and its response: the client side's half of a backend exchange.

Owns the response side: as the `ResponseSink` of a backend connection it receives the head,
body pieces, end and failures; it regenerates the status line and framing for the client
(`http.wire.Framing`: Content-Length kept, chunked re-chunked for HTTP/1.1, close-delimited
for HTTP/1.0), adds RateLimit headers, holds what one backend read produced so that it leaves
in one write (`up_flush`), reports the outcome to the host's breaker, and tells whether the
whole request went out (the backend connection's reuse decision). The request side (reading,
phases, dispatch) is `server.connection`.
"""

from enum import IntEnum
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final, Optional

from fastproxy.http.head import RequestHead, ResponseHead
from fastproxy.http.request import HTTPError
from fastproxy.http.response import STATUS_LINE_11, status_line
from fastproxy.http.wire import LAST_CHUNK, ChunkedEnd, Framing, chunk, response_framing
from fastproxy.limits.headers import rl_headers
from fastproxy.server.flow import BACKEND_BUSY
from fastproxy.upstream.errors import FailureKind

if TYPE_CHECKING:
    from fastproxy.breaker import CircuitBreaker
    from fastproxy.config.compile import Route, Target
    from fastproxy.policies.state import RouteState
    from fastproxy.server.connection import ClientConnection
    from fastproxy.upstream.connection import UpstreamConnection


class Phase(IntEnum):
    QUEUED = 0  # parsed, waiting for the requests before it
    WAITING = 1  # sent to (or connecting to) a backend, no response head yet
    STREAMING = 2  # the response is being relayed
    DONE = 3  # answered
    CHECKING = 4  # waiting for a policy decision (Redis)
    TUNNEL = 5  # the backend switched protocols: bytes pass both ways (server.tunnel)


class Deadline(IntEnum):
    """What the connection's one deadline is for."""

    IDLE = 0  # keep-alive, between requests
    HEAD = 1  # a request head is being received
    UPSTREAM = 2  # the active request's backend (or policy) answer
    NONE = 3
    LINGER = 4  # closing: reading and dropping what the client still sends
    TUNNEL = 5  # an upgrade tunnel's idle timeout
    FLUSH = 6  # closed, its last writes not taken by the client: reset when this passes


QUEUED: Final = int(Phase.QUEUED)
WAITING: Final = int(Phase.WAITING)
STREAMING: Final = int(Phase.STREAMING)
DONE: Final = int(Phase.DONE)
CHECKING: Final = int(Phase.CHECKING)
TUNNEL: Final = int(Phase.TUNNEL)
DL_IDLE: Final = int(Deadline.IDLE)
DL_HEAD: Final = int(Deadline.HEAD)
DL_UPSTREAM: Final = int(Deadline.UPSTREAM)
DL_NONE: Final = int(Deadline.NONE)
DL_LINGER: Final = int(Deadline.LINGER)
DL_TUNNEL: Final = int(Deadline.TUNNEL)
DL_FLUSH: Final = int(Deadline.FLUSH)
_CHUNKED: Final = int(Framing.CHUNKED)
_CLOSE: Final = int(Framing.CLOSE)


class Exchange(RequestHead):
    """One request (its head is the RequestHead part) and its response."""

    __slots__ = ("conn", "body_left", "chunks", "body_done", "body_size", "body_buf", "body_sent", "route",
                 "rstate", "params", "rest", "client_ip", "rl", "up_extra", "up", "target", "breaker", "ticket",
                 "retried", "started", "phase", "status", "framing", "head_sent", "out", "reason", "error", "recorded",
                 "upgrade")

    def __init__(self, conn: "ClientConnection") -> None:
        RequestHead.__init__(self)
        self.conn = conn
        self.body_left = 0  # Content-Length bytes still to come
        self.chunks: Optional[ChunkedEnd] = None  # where a chunked body ends
        self.body_done = False
        self.body_size = 0
        self.body_buf: Optional[list[bytes]] = None  # body received before a backend was attached
        self.body_sent = False
        self.route: Optional[Route] = None
        self.rstate: Optional[RouteState] = None  # the route's live checks and breakers in this worker
        self.params: Optional[dict[str, bytes]] = None
        self.rest: Optional[bytes] = None
        self.client_ip: Optional[str] = None
        self.rl: Optional[tuple[bytes, int, float]] = None  # RateLimit state of the tightest limit
        self.up_extra: Optional[bytes] = None  # header lines policies add for the backend
        self.up: Optional[UpstreamConnection] = None
        self.target: Optional[Target] = None
        self.breaker: Optional[CircuitBreaker] = None
        self.ticket: Any = None
        self.retried = False
        self.started = 0.0
        self.phase = QUEUED
        self.status = 0
        self.framing = 0  # Framing of the response to the client
        self.head_sent = False
        self.out: Optional[list[bytes]] = None  # what the current backend read produced
        self.reason = ""
        self.error: Optional[HTTPError] = None
        self.recorded = False  # counted and logged (ClientConnection.record)
        self.upgrade = False  # an upgrade handshake for a websocket route (server.tunnel)

    # -- ResponseSink: called by the backend connection -------------------------------------
    def up_head(self, head: ResponseHead) -> None:
        conn = self.conn
        w = conn.w
        route = self.route
        assert route is not None and self.up is not None
        self.phase = STREAMING
        status = head.status
        self.status = status
        w.metrics.upstream(route.name, perf_counter() - self.up.sent_at)
        # a backend answering before the whole request body arrived: the rest of the body has
        # nowhere to go, so the connection closes after this answer
        close = not self.keep_alive or w.draining or not self.body_done
        parts = [STATUS_LINE_11.get(status) or status_line(status)]
        parts += head.lines
        cors = w.snap.cors
        if cors is not None:  # security/cors
            parts.append(cors.lines(self))
        if self.rl is not None and w.snap.protocol.ratelimit_headers:
            parts.append(rl_headers(self.rl))
        length = head.length
        framing = response_framing(length, self.version == "1.1")
        self.framing = framing
        if length >= 0:  # (a HEAD answer keeps the backend's, as it describes the GET)
            parts.append(b"Content-Length: %d\r\n" % length)
        elif framing == _CHUNKED:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif framing == _CLOSE:
            close = True  # HTTP/1.0 client, unknown length: the close delimits the body
        if close:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n\r\n")
        elif self.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        # Held until the backend read that carried it is parsed, so head and body leave in one
        # write (one syscall per response in the common case; `up_flush`).
        self.out = [b"".join(parts)]

    def up_body(self, data: bytes) -> None:
        if not data or self.method == b"HEAD":
            return
        out = self.out
        if out is None:
            self.out = out = []
        out.append(chunk(data) if self.framing == _CHUNKED else data)

    def up_flush(self) -> None:
        """Write what the last backend read produced; re-arm the body timeout."""
        if self.out:
            self._write_out()
        conn = self.conn
        assert self.route is not None
        conn.deadline = conn.w.clock() + self.route.timeout
        conn.dl_kind = DL_UPSTREAM

    def _write_out(self) -> None:
        out = self.out
        assert out is not None
        self.out = None
        self.head_sent = True
        t = self.conn.transport
        if len(out) == 1:
            t.write(out[0])
        else:
            t.writelines(out)

    def up_end(self, framed: bool) -> bool:
        conn = self.conn
        conn.flow.resume(BACKEND_BUSY)  # this backend no longer holds the client's body back
        if self.framing == _CHUNKED:
            if self.out is None:
                self.out = []
            self.out.append(LAST_CHUNK)
        now = conn.w.clock()
        b = self.breaker
        if b is not None:  # known before the last bytes leave (and logged by then)
            self.breaker = None
            rs = self.rstate
            assert rs is not None and rs.breakers is not None
            b.after(self.ticket, rs.breakers.ok(self.status), now)
        conn.record(self)
        if self.out:
            self._write_out()
        self.up = None
        complete = self.body_done and self.body_sent
        conn.finish(self, now)
        return complete

    def up_upgrade(self, up: "UpstreamConnection", raw: bytes, rest: bytes) -> None:
        """The backend answered the upgrade handshake with 101 (`raw`; `rest` followed it): the
        connection leaves HTTP and becomes a tunnel."""
        from fastproxy.server.tunnel import open_tunnel

        self.conn.flow.resume(BACKEND_BUSY)
        open_tunnel(self.conn, self, up, raw, rest)

    def up_error(self, kind: FailureKind) -> None:
        """The backend failed (reset, malformed, timeout)."""
        self.up = None
        if self.out is not None:  # a response head read in the same read: never sent
            self.out = None
            self.phase = WAITING
        self.conn.flow.resume(BACKEND_BUSY)
        self.conn.upstream_failed(self, kind)

    def up_pause(self) -> None:
        self.conn.flow.pause(BACKEND_BUSY)

    def up_resume(self) -> None:
        self.conn.flow.resume(BACKEND_BUSY)

    # -- called by the client connection ----------------------------------------------------
    def abandon(self, now: float) -> None:
        """Stop this exchange's backend work for a reason that says nothing about the host
        (client gone or too slow, request body broken, a backend limit): the breaker ticket is
        cancelled, never reported, so a half-open probe slot is freed even while connecting."""
        b = self.breaker
        if b is not None:
            self.breaker = None
            b.cancel(self.ticket, now)
        up = self.up
        if up is not None:
            self.up = None
            up.detach()  # its state is unknown: never back to the pool

"""One request and its response, as the client connection and the backend connection see it.

Owns the response side of an exchange: the backend connection calls `up_head`, `up_body`,
`up_end`, `up_error` and the flow-control pair `up_pause`/`up_resume`; the exchange regenerates
the status line and framing for the client (Content-Length kept, chunked re-chunked for
HTTP/1.1, close-delimited for HTTP/1.0), adds RateLimit headers, holds what one backend read
produced so that it leaves in one write (`flush_out`), reports the outcome to the host's
breaker and hands the connection back to the pool or closes it. The request side (parsing,
phases, dispatch) is `server.connection`.
"""

from time import perf_counter
from typing import Any, Optional

from fastproxy.http.request import HTTPError
from fastproxy.http.response import STATUS_LINE_11, status_line
from fastproxy.limits.headers import rl_headers

# Exchange phases
QUEUED, WAITING, STREAMING, DONE, CHECKING = 0, 1, 2, 3, 4
# Connection deadline kinds
DL_IDLE, DL_HEAD, DL_UPSTREAM, DL_NONE, DL_LINGER = 0, 1, 2, 3, 4



class Exchange:
    """One request and its response."""

    # Class-level defaults, no __slots__: a new exchange sets two attributes instead of forty,
    # and the fields that keep their default are never written (neutral within noise on
    # bench/micro_request.py). Fields, by phase: head (method, url, version, headers,
    # keep_alive, host, host_count, cl, chunked, expect, ua, conn_opts, path, query), body (body_done,
    # body_size, body_buf, body_sent), policies (route, rstate, params, rest, client_ip, rl, up_extra),
    # backend (up, target, breaker, ticket, retried, started), response (phase, status,
    # resp_mode, head_sent, out, reason, error, recorded).
    method: Optional[bytes] = None
    url = b""
    version = "1.1"
    keep_alive = True
    host: Optional[bytes] = None
    host_count = 0
    cl = -1
    chunked = False
    expect = False
    ua: Optional[bytes] = None
    conn_opts: Optional[bytes] = None  # the Connection header's value(s), comma-joined
    path = b""
    query = b""
    body_done = False
    body_size = 0
    body_buf: Optional[list] = None
    body_sent = False
    route: Any = None
    rstate: Any = None  # the route's policies.state.RouteState in this worker
    params: Optional[dict] = None
    rest: Optional[bytes] = None
    client_ip: Optional[str] = None
    rl: Any = None
    up_extra: Optional[bytes] = None
    up: Any = None
    target: Any = None
    breaker: Any = None
    ticket: Any = None
    retried = False
    started = 0.0
    phase = QUEUED
    status = 0
    resp_mode = 0
    head_sent = False
    out: Optional[list] = None
    reason = ""
    error: Optional[HTTPError] = None
    recorded = False  # counted and logged (server.connection.ClientConnection.record)

    def __init__(self, conn: Any) -> None:  # a server.connection.ClientConnection
        self.conn = conn
        self.headers: list = []

    # -- called by the backend connection ---------------------------------------------------
    def up_head(self, up: Any, status: int, parts: list, length: int) -> None:
        """`parts`: the backend's end-to-end header lines, to which framing is added here."""
        conn = self.conn
        self.phase = STREAMING
        self.status = status
        w = conn.w
        w.metrics.upstream(self.route.name, perf_counter() - up.sent_at)
        # a backend answering before the whole request body arrived: the rest of the body has
        # nowhere to go, so the connection closes after this answer
        close = not self.keep_alive or conn.w.draining or not self.body_done
        parts.insert(0, STATUS_LINE_11.get(status) or status_line(status))
        if self.rl is not None and conn.w.snap.protocol.ratelimit_headers:
            parts.append(rl_headers(self.rl))
        if length == -2 or self.method == b"HEAD" and length != -1:
            # no body: keep the backend's Content-Length for HEAD, as it describes the GET
            if length >= 0:
                parts.append(b"Content-Length: %d\r\n" % length)
            self.resp_mode = 0
        elif length >= 0:
            parts.append(b"Content-Length: %d\r\n" % length)
            self.resp_mode = 0
        elif self.version == "1.1":
            parts.append(b"Transfer-Encoding: chunked\r\n")
            self.resp_mode = 1
        else:
            close = True  # HTTP/1.0 client, unknown length: the close delimits the body
            self.resp_mode = 2
        if close:
            self.keep_alive = False
            parts.append(b"Connection: close\r\n")
        elif self.version == "1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self.head_sent = True
        # Held until the backend read that carried it is parsed, so head and body leave in one
        # write (one syscall per response in the common case; `flush_out`).
        self.out = [b"".join(parts)]

    def up_body(self, data: bytes) -> None:
        if not data or self.method == b"HEAD":
            return
        out = self.out
        if out is None:
            self.out = out = []
        out.append(b"%x\r\n%b\r\n" % (len(data), data) if self.resp_mode == 1 else data)

    def flush_out(self, last: bool = False) -> None:
        """Write what the last backend read produced for the client; re-arm the body timeout
        unless this was the `last` of the response (`finish` sets the next deadline)."""
        out = self.out
        self.out = None
        conn = self.conn
        if len(out) == 1:
            conn.transport.write(out[0])
        else:
            conn.transport.writelines(out)
        if not last:
            conn.deadline = conn.w.clock() + self.route.timeout
            conn.dl_kind = DL_UPSTREAM

    def up_end(self, up: Any, framed: bool) -> None:
        conn = self.conn
        if conn.paused & 2:
            conn.resume_reading(2)  # this backend no longer holds the client's body back
        if self.resp_mode == 1:
            if self.out is None:
                self.out = []
            self.out.append(b"0\r\n\r\n")
        now = conn.w.clock()
        if self.breaker is not None:  # known before the last bytes leave (and logged by then)
            self.breaker.after(self.ticket, self.rstate.breakers.ok(self.status), now)
            self.breaker = None
        conn.record(self)
        if self.out:
            self.flush_out(True)
        self.up = None
        if framed:
            if not self.body_done or not self.body_sent:
                up.reusable = False  # the backend answered before the whole request went out
            up.release(now)
        conn.finish(self, now)

    def up_error(self, up: Any, kind: str) -> None:
        """The backend failed (reset, malformed, timeout)."""
        self.up = None
        self.conn.resume_reading(2)
        if kind == "reset" and up.reused and not up.resp_started:
            kind = "stale"
        self.conn.upstream_failed(self, kind)

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
            up.abort()  # its state is unknown: never back to the pool

    def up_pause(self) -> None:
        self.conn.pause_reading(2)

    def up_resume(self) -> None:
        self.conn.resume_reading(2)

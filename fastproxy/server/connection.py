"""The client-facing protocol: one object per TCP connection, one Exchange per request. It
only acts (reads, writes, pauses, closes); the decisions are functions elsewhere
(ARCHITECTURE.md draws the phases and their modules).

Rules this module keeps:
- llhttp validates every byte and is fed each byte once, cut at message ends only: the end of
  a head is found here (the first empty line), the end of a body from its Content-Length or
  chunk framing (`http.wire.ChunkedEnd`), and llhttp must agree (else 400).
- Answers go out in request order; pipelined requests queue (bodies buffered up to
  PIPELINE_BYTES, at most PIPELINE_DEPTH waiting, beyond which reading pauses: `server.flow`).
- One backend write per client read; a request refused within the read sends nothing upstream.
- A refused request gets its 4xx after those before it, then a lingering close. One deadline
  per connection, swept by the worker's clock. A half-close inside a body refuses that request
  and resets its backend connection; at `max_connections` the worker may `evict` an idle one.
- An upgrade handshake for a route with the `websocket` namespace ends HTTP reading: what the
  client sends after it waits in `early` (bounded) until the backend answers; a 101 hands both
  transports to a `server.tunnel.Tunnel`, any other answer closes the connection after it. A
  lingering close whose answer the client never takes is reset after the idle timeout.
"""

from typing import TYPE_CHECKING, Any, Optional

import httptools

from fastproxy.http.head import find_crlf, find_head_end, scan_request
from fastproxy.http.request import HTTPError, check_host
from fastproxy.http.response import simple_response
from fastproxy.http.wire import LAST_CHUNK, ChunkedEnd, chunk
from fastproxy.server import forward, tunnel
from fastproxy.server.exchange import (
    CHECKING,
    DL_FLUSH,
    DL_HEAD,
    DL_IDLE,
    DL_LINGER,
    DL_NONE,
    DL_TUNNEL,
    DL_UPSTREAM,
    DONE,
    QUEUED,
    STREAMING,
    WAITING,
    Exchange,
)
from fastproxy.server.flow import CLIENT_SLOW, PIPELINE_BUFFER, QUEUE_DEPTH, FlowControl
from fastproxy.server.forward import PIPELINE_BYTES, body_size
from fastproxy.upstream.connection import UpstreamConnection, set_nodelay
from fastproxy.upstream.errors import FailureKind

if TYPE_CHECKING:
    from fastproxy.server.worker import Worker

PIPELINE_DEPTH = 64  # queued requests per connection beyond which reading pauses
LINGER = 2.0  # seconds a closing connection keeps reading (and dropping) what the client sends


class ClientConnection:
    """An asyncio protocol (compiled, a C class: asyncio.Protocol is not its base, uvloop needs
    only the methods)."""

    __slots__ = ("w", "transport", "parser", "flow", "peer", "peer_b", "cur", "queue", "deadline", "dl_kind",
                 "closing", "pending", "llhttp_done", "buffered", "writing_paused", "broken", "held",
                 "dispatching", "host_ok", "eof", "early", "tunnel")

    def __init__(self, worker: "Worker") -> None:
        self.w = worker
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.flow = FlowControl(None)
        self.peer = ""
        self.peer_b = b""
        self.cur: Optional[Exchange] = None  # whose body is being read
        self.queue: list[Exchange] = []  # queue[0] is active
        self.deadline = 0.0
        self.dl_kind = DL_IDLE
        self.closing = False
        self.pending = b""  # the start of a head cut across reads (already fed to llhttp)
        self.llhttp_done = False  # llhttp saw the end of the message being read
        self.buffered = 0
        self.writing_paused = False
        self.broken = False
        # Bytes for backends produced while parsing one read: written once the whole read parsed,
        # so a request refused within that read sends nothing upstream (its head included).
        self.held: Optional[list[tuple[Exchange, UpstreamConnection, bytes]]] = None
        self.dispatching = False  # finish() is running the queue: nested finishes leave it to it
        self.host_ok: Optional[bytes] = None  # the last Host value check_host accepted
        self.eof = False  # the client half-closed
        # After an upgrade handshake for a websocket route: what the client sent after it, not
        # read as HTTP, for the backend once it switches protocols (None: reading HTTP).
        self.early: Optional[bytearray] = None
        self.tunnel: Optional[tunnel.Tunnel] = None  # after the backend's 101 (server.tunnel)

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.flow = FlowControl(transport)
        w = self.w
        peer = transport.get_extra_info("peername")
        if peer:
            ip = peer[0]
            if ip.startswith("::ffff:") and "." in ip:
                ip = ip[7:]
            self.peer = ip
            self.peer_b = ip.encode()
        set_nodelay(transport)
        w.connection_opened(self)
        self.deadline = w.clock() + w.snap.protocol.idle_timeout
        self.dl_kind = DL_IDLE

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closing = True
        self.flow.stopped = True
        self.w.connection_closed(self)
        now = self.w.clock()
        for x in self.queue:
            x.abandon(now)  # cancelled by its client: neither a success nor a failure of the host
            x.phase = DONE
        self.queue = []

    def data_received(self, data: bytes) -> None:
        if self.closing or self.broken:
            return
        early = self.early
        if early is not None:  # waiting for the answer to an upgrade handshake
            early += data
            if len(early) > tunnel.EARLY_MAX:
                self.flow.pause(PIPELINE_BUFFER)
            return
        self.held = []
        self.read(data)
        held = self.held
        self.held = None
        if held:  # (None: a refusal dropped it)
            if len(held) == 1:  # the common case: one request head (and body) per read
                x, up, out = held[0]
                if x.up is up:
                    up.write(out)
            else:
                self.flush_held(None, held)

    def read(self, data: bytes) -> None:
        """Cut `data` at message ends, feed llhttp, and act on each head and body piece."""
        pending = self.pending
        if pending:
            self.pending = b""
            fed = len(pending)
            data = pending + data
        else:
            fed = 0
        pos = 0
        n = len(data)
        limits = self.w.snap.protocol
        while pos < n and not self.closing and not self.broken:
            x = self.cur
            if x is None:  # a head
                end = find_head_end(data, max(pos, fed - 3))
                if end < 0:
                    if not self.parse(data, fed, n):
                        return
                    self.pending = rest = data[pos:]
                    if len(rest) > limits.max_head_size + limits.max_request_line:
                        self.refuse(HTTPError(431, "request head too large"))
                    elif len(rest) > limits.max_request_line and find_crlf(rest, 0, len(rest)) < 0:
                        self.refuse(HTTPError(414, "request line too long"))
                    elif not self.queue and self.dl_kind != DL_HEAD:
                        self.deadline = self.w.clock() + limits.read_header_timeout
                        self.dl_kind = DL_HEAD
                    return
                end += 4
                self.llhttp_done = False
                if not self.parse(data, max(pos, fed), end):
                    return
                if self.head(data[pos:end] if pos or end < n else data, limits):
                    return
                if self.early is not None:  # an upgrade handshake: what follows is not HTTP
                    if not self.closing:
                        self.early += data[end:]
                    return
                pos = end
            else:  # a body
                chunks = x.chunks
                if chunks is not None:
                    try:
                        take = chunks.feed(data, pos)
                    except ValueError as exc:
                        self.flush_held(self.cur)
                        self.refuse(HTTPError(400, f"malformed chunked body: {exc}"))
                        return
                    ended = chunks.done
                    if chunks.trailer_bytes > limits.max_head_size:
                        self.flush_held(self.cur)
                        self.refuse(HTTPError(431, "request trailers too large"))
                        return
                else:
                    take = min(x.body_left, n - pos)
                    x.body_left -= take
                    ended = x.body_left == 0
                if not self.parse(data, pos, pos + take):
                    return
                pos += take
                if ended:
                    if not self.llhttp_done:
                        self.flush_held(self.cur)
                        self.refuse(HTTPError(400, "malformed request body"))
                        return
                    self.message_done(x)
            fed = pos

    def parse(self, data: bytes, start: int, end: int) -> bool:
        """Feed llhttp `data[start:end]`; False when the request was refused."""
        if start >= end:
            return True
        try:
            self.parser.feed_data(data if start == 0 and end == len(data) else data[start:end])
        except httptools.HttpParserUpgrade:
            # An `Upgrade` we do not honour: the request is handled as a plain one; llhttp stops
            # at its end, so the rest of the stream goes to a fresh parser.
            self.parser = httptools.HttpRequestParser(self)
            self.llhttp_done = True
        except httptools.HttpParserCallbackError as exc:
            self.flush_held(self.cur)
            err = exc.__context__
            if isinstance(err, HTTPError):
                self.refuse(err)
            else:
                self.w.log.exception("internal error while handling a request", exc_info=err)
                self.refuse(HTTPError(500, "internal error"))
            return False
        except httptools.HttpParserError as exc:
            self.flush_held(self.cur)
            self.refuse(HTTPError(400, f"malformed request: {exc}"))
            return False
        return True

    def flush_held(self, failed: Optional[Exchange],
                   held: Optional[list[tuple[Exchange, UpstreamConnection, bytes]]] = None) -> None:
        """Write what parsing the last read produced for backends, except `failed`'s: one write
        per backend connection (a head and the body that came with it leave in one syscall)."""
        if held is None:
            held = self.held
            self.held = None
        per_up: dict[UpstreamConnection, list[bytes]] = {}
        for x, up, data in held or ():
            if x is not failed and x.up is up:
                per_up.setdefault(up, []).append(data)
        for up, parts in per_up.items():
            up.writelines(parts)

    def send_up(self, x: Exchange, up: UpstreamConnection, data: bytes) -> None:
        held = self.held
        if held is None:
            up.write(data)
        else:
            held.append((x, up, data))

    def eof_received(self) -> Optional[bool]:
        # Half-close from the client: finish what was fully received, then close (without the
        # lingering wait: nothing more can come).
        self.eof = True
        x = self.cur
        if x is not None and not self.closing and x in self.queue:
            # inside a request body that can now never complete: its backend connection is
            # aborted (the backend never sees a whole request) and the client gets 400, in turn
            self.refuse(HTTPError(400, "client closed its side inside the request body"))
        if not self.queue:
            return False
        self.broken = True
        return True

    def pause_writing(self) -> None:
        # The client does not take what we send: stop reading its next requests (their answers
        # would pile up) and stop reading the backend; a backend attached later starts paused.
        self.writing_paused = True
        self.flow.pause(CLIENT_SLOW)
        for x in self.queue[:1]:
            if x.up is not None:
                x.up.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for x in self.queue[:1]:
            if x.up is not None:
                x.up.resume_reading()
        self.flow.resume(CLIENT_SLOW)

    # -- httptools callbacks: only the body and the end (heads are read in `head`) ----------
    def on_body(self, body: bytes) -> None:
        x = self.cur
        assert x is not None
        x.body_size += len(body)
        if x.body_size > self.w.snap.protocol.max_body_size:
            if x.phase == DONE:  # answered already: one answer per request, so just close
                self.broken = True
                self.linger_close()
                return
            if not x.head_sent:
                raise HTTPError(413, "request body too large")
            raise HTTPError(400, "request body too large")
        if x.phase == DONE:
            return  # answered already (refused early): the body is read and dropped
        up = x.up
        if up is not None and x.body_buf is None:
            self.send_up(x, up, chunk(body) if x.chunked else body)
        else:
            if x.body_buf is None:
                x.body_buf = []
            x.body_buf.append(body)
            self.buffered += len(body)
            if self.buffered > PIPELINE_BYTES:
                self.flow.pause(PIPELINE_BUFFER)

    def on_message_complete(self) -> None:
        self.llhttp_done = True

    # -- a request ------------------------------------------------------------------------------
    def head(self, raw: bytes, limits: Any) -> bool:
        """A complete head llhttp accepted: read it and queue its request. True when refused."""
        x = Exchange(self)
        try:
            scan_request(x, raw, limits.max_request_line, limits.max_header_size, limits.max_head_size,
                         limits.max_headers, limits.max_body_size)
            host = x.host
            if host is not None and host != self.host_ok:  # it becomes X-Forwarded-Host
                check_host(host)
                self.host_ok = host  # the next request of this connection names it again, mostly
        except HTTPError as err:
            self.flush_held(None)
            self.refuse(err)
            return True
        except Exception:  # a bug must cost this connection, never the worker
            self.w.log.exception("internal error while reading a request head")
            self.flush_held(None)
            self.refuse(HTTPError(500, "internal error"))
            return True
        if x.conn_opts is not None and self.w.snap.upgrades:
            route = tunnel.wants_tunnel(self.w.snap, x)
            if route is not None:
                assert route.websocket is not None
                try:
                    tunnel.check_handshake(x, route.websocket)
                except HTTPError as err:
                    self.flush_held(None)
                    self.refuse(err)
                    return True
                x.upgrade = True
                x.keep_alive = False  # unless it becomes a tunnel, the connection ends with its answer
                self.early = bytearray()
        if x.chunked:
            x.chunks = ChunkedEnd()
            self.cur = x
        elif x.cl > 0:
            x.body_left = x.cl
            self.cur = x
        else:
            x.body_done = True
            if not self.llhttp_done:
                self.flush_held(None)
                self.refuse(HTTPError(400, "malformed request"))
                return True
        q = self.queue
        q.append(x)
        if len(q) == 1:
            forward.dispatch(self, x)
        elif len(q) > PIPELINE_DEPTH:
            self.flow.pause(QUEUE_DEPTH)
        return False

    def message_done(self, x: Exchange) -> None:
        self.cur = None
        x.body_done = True
        if x.phase == DONE:
            return
        up = x.up
        if up is not None and x.body_buf is None:
            if x.chunked:
                self.send_up(x, up, LAST_CHUNK)
            x.body_sent = True

    def upstream_failed(self, x: Exchange, kind: FailureKind, detail: str = "") -> None:
        forward.upstream_failed(self, x, kind, detail)

    # -- endings ----------------------------------------------------------------------------
    def respond(self, x: Exchange, status: int, reason: str, body: bytes = b"",
                extra: tuple[tuple[bytes, bytes], ...] = (), close: bool = False,
                content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """Answer the active request ourselves."""
        w = self.w
        if close or w.draining or x.expect and not x.body_done:
            # a client told to wait for 100 may or may not send its body now: close
            x.keep_alive = False
        x.status = status
        x.reason = reason
        x.head_sent = True
        cors = w.snap.cors
        if cors is not None:  # security/cors: our own answers (401, 403, 429, a preflight) too
            extra = extra + cors.response_headers(x)
        self.record(x)
        self.transport.write(simple_response(status, w.date.header, body, not x.keep_alive, extra, content_type,
                                             head_only=x.method == b"HEAD"))
        self.finish(x)

    def record(self, x: Exchange) -> None:
        """Count and log an answered request. Done before its last bytes leave, so whoever sees
        the answer can already see its metrics and log line."""
        x.recorded = True
        w = self.w
        w.metrics.request(x)
        if w.access_log is not None:
            w.access_log(self, x)

    def finish(self, x: Exchange, now: float = -1.0) -> None:
        w = self.w
        x.phase = DONE
        buf = x.body_buf
        if buf is not None:  # answered before its buffered body went anywhere: drop it
            x.body_buf = None
            self.buffered -= body_size(buf)
            if self.buffered <= PIPELINE_BYTES:
                self.flow.resume(PIPELINE_BUFFER)
        if not x.recorded:
            self.record(x)
        q = self.queue
        if q and q[0] is x:
            q.pop(0)
            if len(q) <= PIPELINE_DEPTH:
                self.flow.resume(QUEUE_DEPTH)
        if not x.keep_alive or self.broken and not q:
            self.linger_close()
            return
        if q:
            # Iterate, never recurse: a long pipeline answered locally (404s, 429s) behind one
            # backend response would otherwise nest finish -> dispatch once per request.
            if self.dispatching:
                return
            self.dispatching = True
            try:
                while q and not self.closing:
                    nxt = q[0]
                    forward.dispatch(self, nxt)
                    if q and q[0] is nxt:
                        break  # waiting for its backend
            finally:
                self.dispatching = False
        elif self.pending:
            self.deadline = (now if now >= 0 else w.clock()) + w.snap.protocol.read_header_timeout
            self.dl_kind = DL_HEAD
        else:
            self.deadline = (now if now >= 0 else w.clock()) + w.snap.protocol.idle_timeout
            self.dl_kind = DL_IDLE
            if w.draining:
                self.closing = True
                self.transport.close()

    def linger_close(self) -> None:
        """Close after the last answer without losing it (nginx's lingering close): closing a
        socket that still has unread client bytes sends a reset, which can destroy the answer
        in flight. So: send FIN once the answer is written, keep reading and dropping what the
        client still sends, and close at its EOF or after `LINGER` seconds."""
        self.closing = True  # data_received drops everything from now on
        t = self.transport
        if t.is_closing():
            return
        if self.eof:  # the client has sent all it will: nothing to drain, close after the answer
            t.close()
            return
        try:
            t.write_eof()
        except (OSError, RuntimeError, NotImplementedError):
            t.close()
            return
        self.flow.clear()
        self.deadline = self.w.clock() + LINGER
        self.dl_kind = DL_LINGER

    def refuse(self, err: HTTPError) -> None:
        """The stream is broken at this point: answer what came before, then `err`, then close."""
        self.broken = True
        if not self.closing:
            self.transport.pause_reading()
        self.w.log.debug("refused request from %s: %s %s", self.peer, err.status, err.reason)
        x = self.cur
        self.cur = None
        q = self.queue
        if x is not None and x in q:
            if x.phase == QUEUED:
                x.error = err  # answered in turn
                return
            # the active request's own body is broken
            x.abandon(self.w.clock())
            if x.head_sent:
                x.phase = DONE
                self.closing = True
                self.transport.abort()
            else:
                self.respond(x, err.status, err.reason, close=True)
            return
        x = Exchange(self)
        x.method = b"GET"
        x.error = err
        x.keep_alive = False
        q.append(x)
        if len(q) == 1:
            forward.dispatch(self, x)

    def evict(self) -> None:
        """Closed by the worker at `max_connections` to admit a new connection: this one has no
        request in flight (its head is incomplete, or it is idle between requests)."""
        self.closing = True
        self.cur = None
        self.transport.close()

    def idle(self) -> bool:
        """Between requests: nothing queued, no head or body being read."""
        return not self.queue and self.cur is None and not self.pending

    def expire(self, now: float) -> None:
        kind = self.dl_kind
        if self.closing and kind != DL_LINGER and kind != DL_FLUSH:
            return
        if kind == DL_FLUSH:  # a client that never took its last answer: its place is not held for ever
            self.transport.abort()
        elif kind == DL_IDLE or kind == DL_LINGER:
            self.closing = True
            self.transport.close()
            if kind == DL_LINGER and self.transport.get_write_buffer_size():
                # close() waits for the answer to be taken: as long as an idle client may wait
                self.deadline = now + self.w.snap.protocol.idle_timeout
                self.dl_kind = DL_FLUSH
                return
        elif kind == DL_TUNNEL:
            t = self.tunnel
            if t is not None:
                t.expire(now)
            return
        elif kind == DL_HEAD:
            if self.queue:
                return
            self.refuse(HTTPError(408, "request head not received in time"))
        elif kind == DL_UPSTREAM and self.queue:
            x = self.queue[0]
            if x.phase == CHECKING:
                self.respond(x, 503, "policy decision timed out", close=True)
            elif x.phase == STREAMING and self.writing_paused:
                # the client stopped reading, not the backend's fault: neither a success nor
                # a failure of the host (SPEC §3.8)
                x.abandon(now)
                x.phase = DONE
                self.closing = True
                self.transport.abort()
            else:
                up = x.up
                if up is not None:
                    x.up = None
                    up.abort()
                if x.phase == WAITING or x.phase == STREAMING:
                    assert x.route is not None
                    forward.upstream_failed(self, x, FailureKind.TIMEOUT, f"no answer within {x.route.timeout:g}s")
        self.dl_kind = DL_NONE if self.dl_kind == kind else self.dl_kind

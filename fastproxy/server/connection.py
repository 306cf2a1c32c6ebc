"""The client-facing protocol: one object per TCP connection, one Exchange per request.

Phases of one request (SPEC §3 order; each phase's logic lives in its own module):
  accept → parse head (httptools + `http.request` rules) → route → client IP → policies
  (the route's live checks in the worker's State: ip filter, geofence, bot detector, rate
  limits) → pick upstream host
  (round robin; breakers skip open hosts) → backend policies → send head and stream the body →
  stream the response → log.

Rules this module keeps:
- Answers go out in request order. Pipelined requests queue behind the active one; their bodies
  are buffered up to `PIPELINE_BUFFER` bytes, and at most `PIPELINE_DEPTH` requests wait,
  beyond which reading pauses.
- Framing is never copied: hop-by-hop headers are dropped both ways; Content-Length is
  regenerated from the parsed value, chunked bodies are re-chunked. Header names with `_` are
  never forwarded by `input_headers: ["*"]`; trailers are dropped; values lose their OWS.
- Flow control both ways: a backend that cannot take the body pauses reading from the client; a
  client that cannot take the response pauses reading from the backend. Nothing is buffered
  whole.
- A refused request (4xx from the parser rules) gets its answer after those before it, then the
  connection closes. Timeouts use one deadline per connection, swept by the worker's clock.
- Nothing parsed changes once a head is complete (trailers are dropped); one User-Agent, a
  valid Host. A half-close inside a body refuses that request and resets its backend
  connection; at `max_connections` the worker may `evict` a connection with nothing in flight.
"""

import asyncio
from typing import Any, Optional

import httptools

from fastproxy.config.compile import QUERY_ALL
from fastproxy.http.request import (
    REQUEST_DROP,
    HTTPError,
    check_authority,
    check_host,
    check_transfer_encoding,
    filter_query,
    parse_content_length,
    split_target,
)
from fastproxy.http.response import ERROR_BODIES, simple_response
from fastproxy.limits.headers import retry_after_value, rl_pairs
from fastproxy.policies import Rejection
from fastproxy.routing import METHOD_NOT_ALLOWED, NOT_FOUND
from fastproxy.server.exchange import (
    CHECKING,
    DL_HEAD,
    DL_IDLE,
    DL_LINGER,
    DL_NONE,
    DL_UPSTREAM,
    DONE,
    QUEUED,
    STREAMING,
    WAITING,
    Exchange,
)
from fastproxy.upstream.connection import ConnectError, set_nodelay

PIPELINE_BUFFER = 64 * 1024
PIPELINE_DEPTH = 64  # queued requests per connection beyond which reading pauses
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"))
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
LINGER = 2.0  # seconds a closing connection keeps reading (and dropping) what the client sends
_FRAMING = frozenset((b"host", b"content-length", b"transfer-encoding", b"expect", b"user-agent", b"connection"))
# Connection values that name no header beyond the hop-by-hop ones dropped anyway.
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"Keep-Alive"))

class ClientConnection(asyncio.Protocol):
    __slots__ = ("w", "transport", "parser", "peer", "peer_b", "cur", "queue", "deadline", "dl_kind", "closing",
                 "paused", "head_fed", "url_len", "head_size", "buffered", "writing_paused",
                 "broken", "requests", "held", "dispatching", "trailing", "host_ok", "eof")

    def __init__(self, worker: Any) -> None:
        self.w = worker
        self.transport: Any = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.peer_b = b""
        self.cur: Optional[Exchange] = None  # being parsed
        self.queue: list = []  # queue[0] is active
        self.deadline = 0.0
        self.dl_kind = DL_IDLE
        self.closing = False
        self.paused = 0  # bit 1: pipeline buffer, bit 2: backend busy, bit 4: draining, bit 8: queue depth
        self.head_fed = 0
        self.url_len = 0
        self.head_size = 0
        self.buffered = 0
        self.writing_paused = False
        self.broken = False
        self.requests = 0
        # Bytes for backends produced while parsing one read: written once the whole read parsed,
        # so a request refused within that read sends nothing upstream (its head included).
        self.held: Optional[list] = None
        self.dispatching = False  # finish() is running the queue: nested finishes leave it to it
        self.trailing = False  # the head is complete: what on_header reports now is a trailer
        self.host_ok: Optional[bytes] = None  # the last Host value check_host accepted
        self.eof = False  # the client half-closed

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
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
        self.w.connection_closed(self)
        now = self.w.clock()
        for x in self.queue:
            x.abandon(now)  # cancelled by its client: neither a success nor a failure of the host
            x.phase = DONE
        self.queue = []

    def data_received(self, data: bytes) -> None:
        if self.closing or self.broken:
            return
        # Large reads are parsed in slices of `max_head_size`, so that a head cut across them is
        # measured (see `feed`) to within one slice whatever came before it in the read.
        step = self.w.snap.protocol.max_head_size
        self.held = []
        if len(data) <= step:
            self.feed(data)
        else:
            view = memoryview(data)
            for i in range(0, len(data), step):
                if self.closing or self.broken:
                    break
                self.feed(view[i:i + step])
        held = self.held
        if held:  # (None: a refusal wrote it already)
            if len(held) == 1:  # the common case, inlined: one request head (and body) per read
                self.held = None
                x, up, out = held[0]
                if x.up is up and not up.transport.is_closing():
                    up.transport.write(out)
            else:
                self.flush_held(None)
        else:
            self.held = None

    def feed(self, data: Any) -> None:
        """Parse `data`; what it produces for backends is held in `self.held` (see `send_up`)."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            self.flush_held(self.cur)
            err = exc.__context__
            if isinstance(err, HTTPError):
                self.refuse(err)
            else:
                self.w.log.exception("internal error while handling a request", exc_info=err)
                self.refuse(HTTPError(500, "internal error"))
            return
        except httptools.HttpParserUpgrade as exc:
            # An `Upgrade` we do not honour: the request was handled as a plain one; parse the
            # rest of the stream with a fresh parser.
            self.flush_held(None)
            self.held = []
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.parser = httptools.HttpRequestParser(self)
            if offset < len(data):
                self.feed(data[offset:])
            return
        except httptools.HttpParserError as exc:
            self.flush_held(self.cur)
            self.refuse(HTTPError(400, f"malformed request: {exc}"))
            return
        cur = self.cur
        if cur is not None and cur.method is None:
            # still inside a head: bound what llhttp may be holding for us (one huge header).
            # Count the slices after the one where this head began: that one may also have
            # carried the pipelined requests before it.
            if self.head_fed < 0:
                self.head_fed = 0
                if not self.queue:  # a head left incomplete by this read: it has until then
                    w = self.w
                    self.deadline = w.clock() + w.snap.protocol.read_header_timeout
                    self.dl_kind = DL_HEAD
            else:
                self.head_fed += len(data)
                limit = self.w.snap.protocol
                if self.head_fed > limit.max_head_size + limit.max_request_line:
                    self.refuse(HTTPError(431, "request head too large"))

    def send_up(self, x: Exchange, up: Any, data: bytes) -> None:
        held = self.held
        if held is None:
            up.transport.write(data)
        else:
            held.append((x, up, data))

    def flush_held(self, failed: Optional[Exchange]) -> None:
        """Write what parsing the last read produced for backends, except `failed`'s: one write
        per backend connection (a head and the body that came with it leave in one syscall)."""
        held = self.held
        self.held = None
        per_up: dict = {}
        for x, up, data in held or ():
            if x is not failed and x.up is up:
                per_up.setdefault(up, []).append(data)
        for up, parts in per_up.items():
            if not up.transport.is_closing():
                up.transport.writelines(parts)

    def eof_received(self) -> Optional[bool]:
        # Half-close from the client: finish what was fully received, then close (without the
        # lingering wait: nothing more can come).
        self.eof = True
        x = self.cur
        if x is not None and x.method is not None and not self.closing and x in self.queue:
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
        self.pause_reading(16)
        for x in self.queue[:1]:
            if x.up is not None and x.up.transport is not None:
                x.up.paused = True
                x.up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        for x in self.queue[:1]:
            up = x.up
            if up is not None and up.paused:
                up.paused = False
                up.transport.resume_reading()
        self.resume_reading(16)

    def pause_reading(self, bit: int) -> None:
        if not self.paused and not self.closing:
            self.transport.pause_reading()
        self.paused |= bit

    def resume_reading(self, bit: int) -> None:
        if self.paused & bit:
            self.paused &= ~bit
            if not self.paused and not self.closing:
                self.transport.resume_reading()

    # -- httptools callbacks: parse head ----------------------------------------------------
    def on_message_begin(self) -> None:
        x = Exchange(self)  # its `method` stays None until the head is complete
        self.cur = x
        self.url_len = 0
        self.head_size = 0
        self.head_fed = -1  # began in the read being parsed (its deadline is set in `feed`)
        self.trailing = False

    def on_url(self, url: bytes) -> None:
        x = self.cur
        self.url_len += len(url)
        if self.url_len > self.w.snap.protocol.max_request_line:
            raise HTTPError(414, "request line too long")
        x.url = x.url + url if x.url else url

    def on_header(self, name: bytes, value: bytes) -> None:
        x = self.cur
        headers = x.headers
        size = len(name) + len(value) + 4
        self.head_size = head_size = self.head_size + size
        limit = self.w.snap.protocol
        if size > limit.max_header_size or head_size > limit.max_head_size:
            raise HTTPError(431, "request header too large")
        if len(headers) >= limit.max_headers:
            raise HTTPError(431, "too many request headers")
        if self.trailing:
            # A trailer field of a chunked body (llhttp reports them through on_header after
            # the body): dropped, never merged into the header section (RFC 9110 §6.5.1). It
            # has counted toward the head size above.
            return
        lname = name.lower()
        # llhttp drops the OWS before a value, not the OWS after it (RFC 9110 §5.5: neither is
        # part of the value). Trimmed once here, so `abc ` keys, is judged and is forwarded as
        # `abc`. (rstrip returns the same object when there is nothing to trim.)
        value = value.rstrip(b" \t")
        if lname in _FRAMING:  # the few names with rules; most headers skip the chain below
            if lname == b"host":
                x.host_count += 1
                x.host = value
            elif lname == b"content-length":
                if x.cl >= 0:
                    raise HTTPError(400, "duplicate Content-Length")
                x.cl = parse_content_length(value)
            elif lname == b"transfer-encoding":
                if x.chunked:
                    raise HTTPError(400, "duplicate Transfer-Encoding")
                x.chunked = True
                x.reason = value  # checked once the version is known
            elif lname == b"expect":
                if value.strip().lower() == b"100-continue":
                    x.expect = True
                else:
                    raise HTTPError(417, "unsupported Expect")
            elif lname == b"connection":  # its options name more hop-by-hop headers (attach)
                x.conn_opts = value if x.conn_opts is None else x.conn_opts + b"," + value
            else:  # user-agent: the bot detector judges one value, so a second one is refused
                if x.ua is not None:  # (both would reach the backend, only one judged)
                    raise HTTPError(400, "duplicate User-Agent")
                x.ua = value
        headers.append((lname, name, value))

    def on_headers_complete(self) -> None:
        self.trailing = True
        x = self.cur
        parser = self.parser
        x.method = parser.get_method()
        version = parser.get_http_version()
        x.version = version
        x.keep_alive = parser.should_keep_alive()
        if x.chunked:
            check_transfer_encoding(x.reason, version)
            x.reason = ""
            if x.cl >= 0:
                raise HTTPError(400, "both Content-Length and Transfer-Encoding")
        if version == "1.1":
            if x.host_count != 1:
                raise HTTPError(400, "missing Host header" if not x.host_count else "duplicate Host header")
        elif version != "1.0":
            raise HTTPError(505, "HTTP version not supported")
        elif x.host_count > 1:
            raise HTTPError(400, "duplicate Host header")
        if x.cl > self.w.snap.protocol.max_body_size:
            raise HTTPError(413, "request body too large")
        url = x.url
        if url[:1] == b"/" and len(url.translate(None, b"#%.?")) == len(url):
            x.path = url  # split_target's common case, without the call
        else:
            x.path, x.query = split_target(url)
            if url[0] != 0x2F:  # absolute-form: its authority is the Host (RFC 9112 §3.2.2)
                x.host = check_authority(url, x.host)
        host = x.host
        if host is not None and host != self.host_ok:  # it becomes X-Forwarded-Host
            check_host(host)
            self.host_ok = host  # the next request of this connection names it again, mostly
        if not (x.chunked or x.cl > 0):
            x.body_done = True
        self.requests += 1
        q = self.queue
        q.append(x)
        if len(q) == 1:
            self.dispatch(x)
        elif len(q) > PIPELINE_DEPTH:
            self.pause_reading(8)

    def on_body(self, body: bytes) -> None:
        x = self.cur
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
            self.send_up(x, up, b"%x\r\n%b\r\n" % (len(body), body) if x.chunked else body)
        else:
            if x.body_buf is None:
                x.body_buf = []
            x.body_buf.append(body)
            self.buffered += len(body)
            if self.buffered > PIPELINE_BUFFER:
                self.pause_reading(1)

    def on_message_complete(self) -> None:
        x = self.cur
        self.cur = None
        x.body_done = True
        if x.phase == DONE:
            return
        up = x.up
        if up is not None and x.body_buf is None:
            if x.chunked:
                self.send_up(x, up, b"0\r\n\r\n")
            x.body_sent = True

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, x: Exchange) -> None:
        """Run the phases for the active request up to the backend."""
        w = self.w
        x.started = w.clock()
        err = x.error
        if err is not None:
            self.respond(x, err.status, err.reason, close=True)
            return
        snap = w.snap
        path = x.path
        if path == b"/__health":
            self.respond(x, 503 if w.draining else 200, "draining" if w.draining else "", body=w.health_body(),
                         content_type=b"application/json")
            return
        route, params, rest = snap.routes.match(x.method, path)
        if route is NOT_FOUND or route is METHOD_NOT_ALLOWED:
            if route is NOT_FOUND:
                self.respond(x, 404, "no route", body=ERROR_BODIES[404])
            else:
                allow = b", ".join(sorted(params))
                self.respond(x, 405, "method not allowed", body=ERROR_BODIES[405], extra=((b"Allow", allow),))
            return
        x.route = route
        x.params = params
        x.rest = rest
        x.rstate = rs = w.state.routes[route.index]  # this worker's live objects of the route
        resolver = snap.client_ip
        x.client_ip = resolver.resolve(self.peer, x.headers) if resolver is not None else self.peer
        if rs.checks:
            x.phase = CHECKING
            self.run_checks(x, 0)
        else:
            self.send_upstream(x, None, x.started)

    def run_checks(self, x: Exchange, i: int) -> None:
        """Policies in SPEC order from `i`. A policy that must wait (a Redis limit) returns a
        future; the chain resumes from the next policy when it resolves."""
        checks = x.rstate.checks
        n = len(checks)
        now = self.w.clock()
        try:
            while i < n:
                check = checks[i]
                i += 1
                pending = check.check(x, now)
                if pending is not None:
                    pending.add_done_callback(lambda f, c=check, i=i: self.checked(x, c, f, i))
                    self.deadline = now + x.route.timeout  # a safety net: decisions are bounded
                    self.dl_kind = DL_UPSTREAM
                    return
        except Rejection as rej:
            self.reject(x, rej)
            return
        self.w.metrics.policy_passed(x.route.name)
        self.send_upstream(x, None, now)

    def checked(self, x: Exchange, check: Any, fut: Any, i: int) -> None:
        if self.closing or x.phase != CHECKING:
            return
        try:
            check.complete(x, fut.result(), self.w.clock())
        except Rejection as rej:
            self.reject(x, rej)
            return
        except Exception:  # a bug must cost one request, not hang the connection
            self.w.log.exception("internal error in a policy of %s", x.route.name)
            self.respond(x, 500, "internal error", close=True)
            return
        self.run_checks(x, i)

    def reject(self, x: Exchange, rej: Rejection) -> None:
        extra = rej.headers
        if x.rl is not None and self.w.snap.protocol.ratelimit_headers:
            extra = extra + rl_pairs(x.rl)
        self.w.metrics.rejected(x.route.name, rej.reason)
        self.respond(x, rej.status, rej.reason, extra=extra)

    def send_upstream(self, x: Exchange, avoid: Any, now: float, fresh: bool = False) -> None:
        """Pick a host and a connection for `x` (`now`: the clock in this loop iteration)."""
        route = x.route
        rs = x.rstate
        w = self.w
        targets = route.targets
        breakers = rs.breakers
        n = len(targets)
        target = None
        if breakers is None:
            if n == 1:
                target = targets[0]
            else:
                i = rs.rr
                rs.rr = i + 1
                target = targets[i % n]
                if target is avoid:
                    target = targets[(i + 1) % n]
        else:
            i = rs.rr
            rs.rr = i + 1
            for k in range(n):
                t = targets[(i + k) % n]
                if t is avoid and n > 1:
                    continue
                b = breakers.for_target(t)
                ticket = b.before(now)
                if ticket is not None:
                    target = t
                    x.breaker = b
                    x.ticket = ticket
                    break
            if target is None:
                retry = min(breakers.for_target(t).retry_after(now) for t in targets)
                w.metrics.rejected(route.name, "circuit open")
                self.respond(x, 503, "circuit open", extra=((b"Retry-After", retry_after_value(retry)),))
                return
        x.target = target
        bchecks = rs.backend_checks
        if bchecks:
            try:
                for check in bchecks:
                    check.check(x, now)
            except Rejection as rej:
                x.abandon(now)  # a backend limit is not a failure of the host
                self.reject(x, rej)
                return
        x.phase = WAITING
        self.deadline = x.started + route.timeout
        self.dl_kind = DL_UPSTREAM
        pool = w.pool(target)
        up = None if fresh else pool.get(now)
        if up is not None:
            self.attach(x, up)
        else:
            w.loop.create_task(self.connect(x, pool))

    async def connect(self, x: Exchange, pool: Any) -> None:
        try:
            up = await pool.connect()
        except ConnectError as exc:
            if x.phase != WAITING or self.closing:
                return
            self.upstream_failed(x, "connect_timeout" if exc.kind == "timeout" else "connect", str(exc))
            return
        if x.phase != WAITING or self.closing or x is not (self.queue[0] if self.queue else None):
            up.release(self.w.clock())
            return
        self.attach(x, up)

    def attach(self, x: Exchange, up: Any) -> None:
        x.up = up
        route = x.route
        # request line and headers for the backend
        template = route.template
        if len(template) == 1 and not x.rest:
            target = template[0]
        else:
            params = x.params
            target = b"".join(p if p.__class__ is bytes else params[p] for p in template)
            if x.rest is not None:
                target = target.rstrip(b"/") + b"/" + x.rest
        qm = route.query_mode
        if qm and x.query:
            q = x.query if qm == QUERY_ALL else filter_query(x.query, route.query_names)
            if q:
                target = target + (b"&" if b"?" in target else b"?") + q
        # a client's HEAD stays HEAD (the backend's `method` applies to the other requests)
        method = x.method if x.method == b"HEAD" else (route.upstream_method or x.method)
        t = x.target
        resolver = self.w.snap.client_ip
        xff = resolver.forwarded_for(self.peer, x.headers) if resolver is not None else self.peer_b
        parts = [method, b" ", target, b" HTTP/1.1\r\nHost: ", t.host_header, b"\r\nX-Forwarded-For: ", xff]
        if x.host is not None:
            parts.append(b"\r\nX-Forwarded-Host: ")
            parts.append(x.host)
        parts.append(b"\r\nX-Forwarded-Proto: http\r\n")
        if x.up_extra is not None:
            parts.append(x.up_extra)
        if route.forward_headers:
            opts = x.conn_opts
            drop = REQUEST_DROP
            if opts is not None and opts not in _PLAIN_CONNECTION:  # names more headers to drop
                drop = drop | {v.strip().lower() for v in opts.split(b",")}
            for lname, name, value in x.headers:
                # `_` in a name: never with "*" (CGI/WSGI backends read Content_Length as
                # Content-Length; nginx's underscores_in_headers off)
                if lname not in drop and lname.find(b"_") < 0:  # (`in` would cost ~1,700 Ir)
                    parts += (name, b": ", value, b"\r\n")
        else:
            names = route.header_names
            if names:
                for lname, name, value in x.headers:
                    if lname in names and lname not in REQUEST_DROP:
                        parts += (name, b": ", value, b"\r\n")
        if x.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif x.cl > 0:
            parts.append(b"Content-Length: %d\r\n\r\n" % x.cl)
        elif x.method in (b"POST", b"PUT", b"PATCH"):
            parts.append(b"Content-Length: 0\r\n\r\n")
        else:
            parts.append(b"\r\n")
        buf = x.body_buf
        if buf is not None:
            x.body_buf = None
            self.buffered -= sum(len(b) for b in buf)
            if x.chunked:
                parts.extend(b"%x\r\n%b\r\n" % (len(b), b) for b in buf)
            else:
                parts.extend(buf)
            if self.buffered <= PIPELINE_BUFFER:
                self.resume_reading(1)
        if x.body_done:
            if x.chunked:
                parts.append(b"0\r\n\r\n")
            x.body_sent = True
        elif x.expect and not buf:
            self.transport.write(CONTINUE_100)
        is_head = method == b"HEAD"
        if self.held is None:
            up.start(x, b"".join(parts), is_head)
        else:
            up.start(x, b"", is_head)
            self.held.append((x, up, b"".join(parts)))
        if self.writing_paused:  # the client is not reading: do not read its answer yet
            up.paused = True
            up.transport.pause_reading()

    # -- endings ----------------------------------------------------------------------------
    def upstream_failed(self, x: Exchange, kind: str, detail: str = "") -> None:
        w = self.w
        if x.target is not None:
            w.metrics.upstream_error(x.target.key, kind)
        if x.breaker is not None:
            if kind == "stale":  # the pool's fault, not the host's
                x.breaker.cancel(x.ticket, w.clock())
            else:
                x.breaker.after(x.ticket, False, w.clock())
            x.breaker = None
        if not x.retried and not x.head_sent:
            if kind == "connect" and len(x.route.targets) > 1:
                # nothing of the request reached a backend (any method): one retry on another host
                x.retried = True
                w.log.warning("backend %s: %s; retrying on another host", x.target.key, detail or kind)
                self.send_upstream(x, x.target, w.clock())
                return
            if kind == "stale" and x.method in IDEMPOTENT and x.cl <= 0 and not x.chunked:
                # a pooled connection the backend had closed: one retry on a fresh connection
                x.retried = True
                self.send_upstream(x, None, w.clock(), fresh=True)
                return
            if kind == "stale":
                kind = "reset"
        if x.head_sent:
            # the response was cut: the client must see a broken stream, never a clean end
            x.phase = DONE
            x.reason = f"backend {kind} mid-response"
            self.record(x)  # counted with the status that was sent, logged with why it was cut
            w.log.warning("backend %s failed mid-response (%s) for %s", x.target.key, kind, x.route.name)
            self.transport.abort() if x.resp_mode != 2 else self.transport.close()
            return
        status = 504 if kind in ("timeout", "connect_timeout") else 502
        w.log.warning("backend %s: %s for %s %s", x.target.key, detail or kind, x.route.name, status)
        # KrakenD's router.return_error_msg: the error text as the body (empty by default)
        body = (detail or kind).encode() if w.snap.protocol.return_error_msg else b""
        self.respond(x, status, f"backend {kind}", body=body, close=not x.body_done)

    def respond(self, x: Exchange, status: int, reason: str, body: bytes = b"", extra: tuple = (),
                close: bool = False, content_type: bytes = b"text/plain; charset=utf-8") -> None:
        """Answer the active request ourselves."""
        w = self.w
        if close or w.draining or x.expect and not x.body_done:
            # a client told to wait for 100 may or may not send its body now: close
            x.keep_alive = False
        x.status = status
        x.reason = reason
        x.head_sent = True
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
            self.buffered -= sum(len(b) for b in buf)
            if self.buffered <= PIPELINE_BUFFER:
                self.resume_reading(1)
        if not x.recorded:
            self.record(x)
        q = self.queue
        if q and q[0] is x:
            q.pop(0)
            if self.paused & 8 and len(q) <= PIPELINE_DEPTH:
                self.resume_reading(8)
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
                    self.dispatch(nxt)
                    if q and q[0] is nxt:
                        break  # waiting for its backend
            finally:
                self.dispatching = False
        elif self.cur is not None and self.cur.method is None:
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
        self.paused = 0
        t.resume_reading()
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
        x.version = "1.1"
        x.path = b""
        x.route = None
        q.append(x)
        if len(q) == 1:
            self.dispatch(x)

    def evict(self) -> None:
        """Closed by the worker at `max_connections` to admit a new connection: this one has no
        request in flight (its head is incomplete, or it is idle between requests)."""
        self.closing = True
        self.cur = None
        self.transport.close()

    def expire(self, now: float) -> None:
        kind = self.dl_kind
        if self.closing and kind != DL_LINGER:
            return
        if kind in (DL_IDLE, DL_LINGER):
            self.closing = True
            self.transport.close()
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
                    self.upstream_failed(x, "timeout", f"no answer within {x.route.timeout:g}s")
        self.dl_kind = DL_NONE if self.dl_kind == kind else self.dl_kind

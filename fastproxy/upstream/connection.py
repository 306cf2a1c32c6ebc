"""The backend-facing protocol and the keep-alive pool.

Owns: parsing backend responses with httptools, removing hop-by-hop response headers, deciding
framing for the client (a Transfer-Encoding other than one final `chunked` is malformed: 502),
and the one rule of reuse: a connection goes back to the pool only when its response was
completely and correctly framed, the request was completely sent, the backend did not ask to
close, and nothing unexpected arrived. Anything else closes it.

An exchange (server side) is attached while a request uses the connection; the connection calls
`x.up_head`, `x.up_body`, `x.up_end`, `x.up_error` and the flow-control pair `x.up_pause` /
`x.up_resume`. Errors are mapped once here to kinds: "connect", "reset", "malformed", "timeout".
"""

import asyncio
import collections
import socket
import ssl as _ssl
import struct
import time
from typing import Any, Optional

import httptools

from fastproxy.upstream.dns import DNSError

HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
                        b"upgrade", b"trailer", b"content-length", b"proxy-authenticate"))

# Connection tokens that name no end-to-end header: nothing to filter for them.
_NOT_LISTED = HOP_BY_HOP | {b"close"}
# The Connection values nearly every backend sends: nothing to parse for them.
_PLAIN_CONNECTION = frozenset((b"keep-alive", b"Keep-Alive", b"close", b"Close"))

IDLE, BUSY, CLOSED = 0, 1, 2
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def set_nodelay(transport: Any) -> None:
    """No Nagle delay on a TCP transport (heads and small bodies go out at once); a no-op for
    others (Unix sockets, fakes in tests)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class UpstreamConnection(asyncio.Protocol):
    __slots__ = ("pool", "transport", "parser", "x", "state", "released_at", "headers",
                 "head_request", "reusable", "paused", "resp_started", "framed", "_skip_rest", "reused",
                 "feeding", "release_pending", "sent_at")

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.x: Any = None
        self.state = BUSY
        self.released_at = 0.0
        self.headers: list = []
        self.head_request = False
        self.reusable = True
        self.paused = False
        self.resp_started = False
        self.framed = False  # response length known (CL or chunked), so its end is detectable
        self._skip_rest = False
        self.reused = False
        # A response that ends inside a read is released only once the rest of that read is
        # parsed: stray bytes after it (a lying Content-Length, a body after a HEAD answer) must
        # close the connection, not reach the next exchange.
        self.feeding = False
        self.release_pending: Optional[float] = None
        # when the current request went to this connection, on the high-resolution clock: the
        # loop's clock (uvloop) counts whole milliseconds, ten times a loopback backend's answer
        self.sent_at = 0.0

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        if self.x is None:
            # Bytes from a backend while no request is outstanding: the stream is out of step.
            self.close()
            return
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.reusable = False
            x = self.x
            if x is not None:
                self.x = None
                x.up_error(self, "malformed")
            self.close()
            return
        finally:
            self.feeding = False
            x = self.x
            if x is not None and x.out:
                x.flush_out()
            pending = self.release_pending
            if pending is not None:
                self.release_pending = None
                self.release(pending)
        if self._skip_rest:
            # HEAD answered: llhttp cannot know the method, so start a fresh parser for the
            # next response; any body bytes that came with the head made the stream suspect.
            self._skip_rest = False
            self.parser = httptools.HttpResponseParser(self)

    def eof_received(self) -> Optional[bool]:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        prev = self.state
        self.state = CLOSED
        self.pool.forget(self)
        x = self.x
        if x is None or prev == CLOSED:
            return
        self.x = None
        if self.resp_started and not self.framed and exc is None:
            # close-delimited body: an orderly close is its end (a reset is not)
            x.up_end(self, False)
        else:
            x.up_error(self, "reset")

    def pause_writing(self) -> None:
        if self.x is not None:
            self.x.up_pause()

    def resume_writing(self) -> None:
        if self.x is not None:
            self.x.up_resume()

    # -- httptools callbacks (no on_status: the status line is regenerated with the standard
    # reason phrase, which RFC 9112 §4 says clients ignore; one callback less per response) ----
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise ValueError("upgrade not supported")
            self.headers = []
            return  # 100/102/103: interim, never relayed (we answer 100-continue ourselves)
        te: Optional[bytes] = None
        length = -1
        conn_tokens: Optional[set] = None
        kept = []  # header lines for the client, ready to join
        headers = self.headers
        self.headers = []
        for name, value in headers:
            lname = name.lower()
            if lname in HOP_BY_HOP:
                if lname == b"content-length":
                    length = int(value)
                elif lname == b"transfer-encoding":
                    te = value if te is None else te + b"," + value
                elif lname == b"connection" and value not in _PLAIN_CONNECTION:
                    tokens = {t.strip().lower() for t in value.split(b",")}
                    conn_tokens = tokens if conn_tokens is None else conn_tokens | tokens
                continue
            kept.append(name + b": " + value + b"\r\n")
        chunked = te is not None
        if chunked and te != b"chunked" and te.strip(b" \t").lower() != b"chunked":
            # RFC 9112 §6.1, §7: chunked exactly once, as the final coding. `chunked, chunked`
            # or a final coding other than chunked (a close-delimited body under a TE header)
            # is malformed: 502, as HAProxy answers, and the connection is closed. Any coding
            # besides chunked (`gzip, chunked`) is a 502 too: Transfer-Encoding is hop-by-hop
            # and only the chunking is undone, so the client would get gzip bytes it cannot tell.
            raise ValueError(f"unsupported Transfer-Encoding {te[:40]!r} from the backend: only chunked")
        if conn_tokens:
            conn_tokens -= _NOT_LISTED
        if conn_tokens:  # headers the backend named in Connection are hop-by-hop too
            kept = [line for line in kept if line.split(b":", 1)[0].lower() not in conn_tokens]
        no_body = self.head_request or status == 204 or status == 304
        if no_body:
            self.framed = True
            if self.head_request:
                self._skip_rest = True
        else:
            self.framed = chunked or length >= 0
        self.resp_started = True
        if not parser.should_keep_alive():
            self.reusable = False
        if no_body:
            # HEAD keeps the backend's Content-Length (it describes the GET); the exchange sends no body
            length = length if self.head_request and length >= 0 and status not in (204, 304) else -2
        elif chunked:
            length = -1
        self.x.up_head(self, status, kept, length)
        if no_body and self.x is not None:
            x = self.x
            self.x = None
            x.up_end(self, True)

    def on_body(self, body: bytes) -> None:
        x = self.x
        if x is not None:
            x.up_body(body)
        elif self.head_request:
            self.reusable = False

    def on_message_complete(self) -> None:
        x = self.x
        if x is None or not self.resp_started:
            return
        self.x = None
        x.up_end(self, True)

    # -- used by the exchange ---------------------------------------------------------------
    def start(self, x: Any, head: bytes, is_head: bool) -> None:
        self.x = x
        self.state = BUSY
        self.head_request = is_head
        self.resp_started = False
        self.framed = False
        self.sent_at = time.perf_counter()
        if head:  # (empty: the client connection writes it once the read is parsed)
            self.transport.write(head)

    def release(self, now: float) -> None:
        """Back to the pool if the exchange ended cleanly; otherwise close."""
        self.x = None
        if self.feeding:
            self.release_pending = now  # decided once the rest of this read is parsed
            return
        if self.reusable and self.state == BUSY and not self.transport.is_closing():
            self.state = IDLE
            self.released_at = now
            self.resp_started = False
            if self.paused:
                self.paused = False
                self.transport.resume_reading()
            self.pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        self.state = CLOSED
        self.x = None
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    def abort(self) -> None:
        """Drop the connection with a reset, not a FIN: a request cut short (a body over the
        limit, a client gone) must read as an error to the backend, never as a clean end of
        its input."""
        self.reusable = False
        self.state = CLOSED
        self.x = None
        t = self.transport
        if t is not None:
            sock = t.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            t.abort()
        self.pool.forget(self)


class Pool:
    """Idle keep-alive connections to one backend host, per worker: LIFO reuse, FIFO expiry."""

    __slots__ = ("target", "idle", "max_idle", "idle_timeout", "loop", "dns", "connect_timeout",
                 "ssl", "opened")

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop, dns: Any, max_idle: int,
                 idle_timeout: float, connect_timeout: float) -> None:
        self.target = target
        self.idle: collections.deque = collections.deque()
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.loop = loop
        self.dns = dns
        self.connect_timeout = connect_timeout
        self.ssl = _ssl.create_default_context() if target.scheme == "https" else None
        self.opened = 0

    def get(self, now: float) -> Optional[UpstreamConnection]:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.state == IDLE and now - conn.released_at < self.idle_timeout:
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: UpstreamConnection) -> None:
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn.state == CLOSED and conn.released_at and conn in self.idle:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass

    def expire(self, now: float) -> None:
        idle = self.idle
        while idle and now - idle[0].released_at >= self.idle_timeout:
            idle.popleft().close()

    async def connect(self) -> UpstreamConnection:
        """Open a new connection; raise ConnectError(kind)."""
        t = self.target
        deadline = self.loop.time() + self.connect_timeout
        try:
            addrs = await asyncio.wait_for(self.dns.resolve_all(t.host), self.connect_timeout)
        except TimeoutError:
            raise ConnectError("timeout", f"resolving {t.host} timed out") from None
        except DNSError as exc:
            raise ConnectError("connect", str(exc)) from None
        error: Optional[BaseException] = None
        for addr in addrs:  # a name with several addresses: the next one when one refuses
            left = deadline - self.loop.time()
            if left <= 0:
                break
            try:
                _, conn = await asyncio.wait_for(
                    self.loop.create_connection(lambda: UpstreamConnection(self), addr, t.port, ssl=self.ssl,
                                                server_hostname=t.host if self.ssl else None), left)
            except TimeoutError:
                raise ConnectError("timeout", f"connect to {t.key} timed out") from None
            except (OSError, _ssl.SSLError) as exc:
                error = exc
                continue
            self.opened += 1
            return conn
        if error is None:
            raise ConnectError("timeout", f"connect to {t.key} timed out")
        raise ConnectError("connect", f"connect to {t.key}: {getattr(error, 'strerror', None) or error}")

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()


class ConnectError(Exception):
    def __init__(self, kind: str, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind

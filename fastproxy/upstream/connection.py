"""The backend-facing protocol: one keep-alive connection to one backend host.

Owns: reading backend responses (llhttp validates the bytes; `http.head.scan_response` reads
the head once from its raw bytes: status, framing, the end-to-end header lines), and the one
rule of reuse: a connection goes back to its pool only when its response was completely and
correctly framed, the request was completely sent, the backend did not ask to close, and
nothing unexpected arrived. Anything else closes it. Only this class decides `reusable`.

While a request uses the connection a `ResponseSink` (the client side's exchange) is attached;
the connection hands it the response (`up_head`, `up_body`, `up_end`), a failure (`up_error`,
with a `FailureKind`), the end of each read (`up_flush`: what one backend read produced leaves
in one client write), and its own write pressure (`up_pause`/`up_resume`: the backend cannot
take more of the request body). The client side slows this connection down only through
`pause_reading`/`resume_reading`: each side owns its own transport.
"""

import socket
import struct
import time
from typing import TYPE_CHECKING, Any, Optional, Protocol

import httptools

from fastproxy.http.head import ResponseHead, find_head_end, scan_response
from fastproxy.http.wire import NO_BODY
from fastproxy.upstream.errors import FailureKind

if TYPE_CHECKING:
    from fastproxy.upstream.pool import Pool

IDLE, BUSY, CLOSED = 0, 1, 2
MAX_RESPONSE_HEAD = 64 * 1024  # a backend head larger than this is malformed
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


class ResponseSink(Protocol):
    """What a backend connection talks to while a request uses it."""

    def up_head(self, head: ResponseHead) -> None: ...
    def up_body(self, data: bytes) -> None: ...
    def up_end(self, framed: bool) -> bool:
        """The response ended (`framed`: by its own framing, not by the close); returns
        whether the whole request had been sent (else the connection cannot be reused)."""
        ...
    def up_upgrade(self, up: "UpstreamConnection", raw: bytes, rest: bytes) -> None:
        """The backend switched protocols (101): its transport is the sink's from now on."""
        ...
    def up_error(self, kind: FailureKind) -> None: ...
    def up_flush(self) -> None: ...
    def up_pause(self) -> None: ...
    def up_resume(self) -> None: ...


def set_nodelay(transport: Any) -> None:
    """No Nagle delay on a TCP transport (heads and small bodies go out at once); a no-op for
    others (Unix sockets, fakes in tests)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class UpstreamConnection:
    """An asyncio protocol, like server.connection.ClientConnection (no asyncio.Protocol base)."""

    __slots__ = ("pool", "transport", "parser", "sink", "state", "released_at", "pending", "head_request",
                 "reusable", "reading_paused", "resp_started", "framed", "reused", "ended", "sent_at", "upgrade")

    def __init__(self, pool: "Pool") -> None:
        self.pool = pool
        self.transport: Any = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: Optional[ResponseSink] = None
        self.state = BUSY
        self.released_at = 0.0
        self.pending = b""  # the start of a response head cut across reads
        self.head_request = False
        self.reusable = True
        self.reading_paused = False  # by the client side: it cannot take the response as fast
        self.resp_started = False
        self.framed = False  # response length known (CL or chunked), so its end is detectable
        self.reused = False
        # The response ended inside the read being parsed: the connection is released only once
        # the rest of that read is parsed (stray bytes after it close the connection instead).
        self.ended = False
        # when the current request went to this connection, on the high-resolution clock: the
        # loop's clock (uvloop) counts whole milliseconds, ten times a loopback backend's answer
        self.sent_at = 0.0
        self.upgrade = False  # the request in flight asks to switch protocols: a 101 may answer it

    # -- asyncio callbacks ------------------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        set_nodelay(transport)

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:  # bytes while no request is outstanding: the stream is out of step
            self.close()
            return
        if not self.resp_started:
            data = self._read_head(sink, data)
            if not data:
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.fail(FailureKind.MALFORMED)
            return
        if self.ended:
            self.ended = False
            self.release()
        elif self.sink is not None:
            self.sink.up_flush()

    def _read_head(self, sink: ResponseSink, data: bytes) -> bytes:
        """Find and read the response head; return what is left to feed the parser (the head
        and what followed it), or b"" when that is nothing or the connection failed."""
        if self.pending:
            data = self.pending + data
            self.pending = b""
        while True:
            end = find_head_end(data, 0)
            if end < 0:
                if len(data) > MAX_RESPONSE_HEAD:
                    self.fail(FailureKind.MALFORMED)
                else:
                    self.pending = data
                return b""
            end += 4
            try:
                head = scan_response(data[:end], self.head_request)
                if head.status < 200:
                    if head.status == 101:
                        if not self.upgrade:
                            raise ValueError("101 Switching Protocols to a request that asked for no upgrade")
                        break
                    # 100/102/103: interim, never relayed (we answer 100-continue ourselves)
                    self.parser.feed_data(data[:end])
                    data = data[end:]
                    if not data:
                        return b""
                    continue
            except (ValueError, httptools.HttpParserError):
                self.fail(FailureKind.MALFORMED)
                return b""
            break
        self.resp_started = True
        if head.status == 101:  # the connection leaves HTTP and the pool: the sink takes its transport
            self.sink = None
            self.state = CLOSED
            self.reusable = False
            sink.up_upgrade(self, data[:end], data[end:])
            return b""
        length = head.length
        self.framed = head.chunked or length >= 0 or length == NO_BODY
        if not head.keep_alive:
            self.reusable = False
        sink.up_head(head)
        if self.head_request:
            # llhttp cannot know the request was HEAD: the head is validated alone and a fresh
            # parser reads the next response; bytes after it made the stream suspect.
            try:
                self.parser.feed_data(data[:end])
            except httptools.HttpParserError:
                self.fail(FailureKind.MALFORMED)
                return b""
            self.parser = httptools.HttpResponseParser(self)
            if len(data) > end:
                self.reusable = False
            self.sink = None
            if not sink.up_end(True):
                self.reusable = False
            self.release()
            return b""
        return data

    def eof_received(self) -> Optional[bool]:
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        prev = self.state
        self.state = CLOSED
        self.pool.forget(self)
        sink = self.sink
        if sink is None or prev == CLOSED:
            return
        self.sink = None
        if self.resp_started and not self.framed and exc is None:
            # close-delimited body: an orderly close is its end (a reset is not)
            sink.up_end(False)
        else:
            sink.up_error(FailureKind.STALE if self.reused and not self.resp_started else FailureKind.RESET)

    def pause_writing(self) -> None:
        if self.sink is not None:
            self.sink.up_pause()

    def resume_writing(self) -> None:
        if self.sink is not None:
            self.sink.up_resume()

    # -- httptools callbacks: the body and the end (no per-header callback: see http.head) --
    def on_message_begin(self) -> None:
        if self.ended:  # a second response in the read that ended one: the stream is out of step
            self.reusable = False

    def on_body(self, body: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink.up_body(body)

    def on_message_complete(self) -> None:
        sink = self.sink
        if sink is None or not self.resp_started:
            return  # an interim response's end
        self.sink = None
        self.ended = True
        if not sink.up_end(True):
            self.reusable = False  # the backend answered before the whole request went out

    # -- used by the client side ------------------------------------------------------------
    def start(self, sink: ResponseSink, head: bytes, is_head: bool) -> None:
        self.sink = sink
        self.state = BUSY
        self.head_request = is_head
        self.resp_started = False
        self.framed = False
        self.ended = False
        self.sent_at = time.perf_counter()
        if head:  # (empty: the client connection writes it once the read is parsed)
            self.transport.write(head)

    def write(self, data: bytes) -> None:
        """Request bytes (body) for the backend."""
        if not self.transport.is_closing():
            self.transport.write(data)

    def writelines(self, parts: list[bytes]) -> None:
        if not self.transport.is_closing():
            self.transport.writelines(parts)

    def pause_reading(self) -> None:
        """The client cannot take the response as fast: stop reading it."""
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def fail(self, kind: FailureKind) -> None:
        """The backend broke the exchange: tell the sink and close the connection."""
        self.reusable = False
        sink = self.sink
        if sink is not None:
            self.sink = None
            sink.up_error(kind)
        self.close()

    def release(self) -> None:
        """Back to the pool if the exchange ended cleanly; otherwise close."""
        self.sink = None
        if self.reusable and self.state == BUSY and not self.transport.is_closing():
            self.state = IDLE
            self.released_at = self.pool.clock()
            self.resp_started = False
            self.resume_reading()
            self.pool.put(self)
        else:
            self.close()

    def detach(self) -> None:
        """The client side gave up on the response in flight (no failure of the host): the
        connection's state is unknown, so it is reset, never reused."""
        self.abort()

    def close(self) -> None:
        self.state = CLOSED
        self.sink = None
        if self.transport is not None:
            self.transport.close()
        self.pool.forget(self)

    def abort(self) -> None:
        """Drop the connection with a reset, not a FIN: a request cut short (a body over the
        limit, a client gone) must read as an error to the backend, never as a clean end of
        its input."""
        self.reusable = False
        self.state = CLOSED
        self.sink = None
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

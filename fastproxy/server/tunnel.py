"""Upgrade tunnels: a WebSocket (or any `Upgrade`) handshake passed to the backend, and after
its `101` a byte tunnel between the client connection and that backend connection.

The phases, and who acts:
- `wants_tunnel` (called by the client connection when a head's Connection names `upgrade`):
  the route has the `websocket` namespace. From then on the client's bytes after that head are
  not read as HTTP: they wait (`ClientConnection.early`, bounded) for the backend's answer.
- the handshake runs every phase of a request (policies count it; a refused one spends
  nothing later) and goes to the backend with `handshake_lines` added to its head;
- the backend's answer: anything but 101 is relayed as a normal response and the connection
  closes after it (what the client sent after its handshake cannot be read as HTTP); a 101
  makes `UpstreamConnection` hand its transport to `Exchange.up_upgrade`, which calls `open`:
  the 101 goes to the client and both transports get a side of a `Tunnel` as their protocol.
- `Tunnel` copies bytes both ways. Each side owns its flow control: a side whose peer does not
  take its writes stops reading the other side (`pause_writing` → the other transport's
  `pause_reading`), so a slow reader holds at most a transport buffer on each side. The worker's
  clock sweeps its idle timeout; a half-close passes through; either side closing closes the
  other once its writes are flushed; the drain deadline closes it with the connection.
- With `max_message_size`, `FrameLimit` follows the WebSocket frame headers of each direction
  and closes the tunnel (1009 to the client) at the first message over the size.
"""

import struct
import time
from typing import TYPE_CHECKING, Any, Final, Optional

from fastproxy.http.request import HTTPError
from fastproxy.http.wire import HOP_BY_HOP, REQUEST_DROP, connection_options
from fastproxy.upstream.errors import FailureKind

if TYPE_CHECKING:
    from fastproxy.config.compile import Route, Snapshot
    from fastproxy.config.websocket import WebSocket
    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.exchange import Exchange
    from fastproxy.upstream.connection import UpstreamConnection

CLOSE_GRACE: Final = 2.0  # s a closed tunnel may take to flush its writes before both sides are reset
EARLY_MAX: Final = 64 * 1024  # client bytes held while the handshake is answered, before reading pauses
_SEC_WEBSOCKET: Final = b"sec-websocket-"
CLOSE_TOO_BIG: Final = b"\x88\x02\x03\xf1"  # a close frame (server to client: unmasked), code 1009
CLOSE_GOING_AWAY: Final = b"\x88\x02\x03\xe9"  # 1001


def wants_tunnel(snap: "Snapshot", x: "Exchange") -> Optional["Route"]:
    """The websocket route an upgrade request goes to, or None (then `Upgrade` is dropped and
    the request is a plain one, as without the namespace)."""
    opts = x.conn_opts
    if opts is None or b"upgrade" not in connection_options(opts):
        return None
    if not any(lname == b"upgrade" for lname, _, _ in x.headers):
        return None
    found, _, _ = snap.routes.match(x.method, x.path)
    ws = getattr(found, "websocket", None)
    return found if ws is not None else None


def check_handshake(x: "Exchange", ws: "WebSocket") -> None:
    """Refuse what cannot be tunnelled; narrow the offered subprotocols to the allowed ones."""
    if x.cl > 0 or x.chunked:
        raise HTTPError(400, "an upgrade request carries no body")
    if x.version != "1.1":
        raise HTTPError(400, "upgrade needs HTTP/1.1")
    allowed = ws.subprotocols
    if not allowed:
        return
    headers = x.headers
    offered = [v.strip() for lname, _, value in headers if lname == b"sec-websocket-protocol"
               for v in value.split(b",") if v.strip()]
    if not offered:
        return
    kept = [p for p in offered if p in allowed]
    if not kept:
        raise HTTPError(400, "none of the offered WebSocket subprotocols is allowed")
    if len(kept) != len(offered):
        rest = [h for h in headers if h[0] != b"sec-websocket-protocol"]
        rest.append((b"sec-websocket-protocol", b"Sec-WebSocket-Protocol", b", ".join(kept)))
        x.headers = rest  # forwarded from the edited list


def handshake_lines(x: "Exchange", route: "Route") -> bytes:
    """The upgrade header lines for the backend: `Connection: Upgrade`, the client's `Upgrade`,
    and the handshake headers (`Sec-WebSocket-*`, the namespace's `input_headers`) the route's
    own header forwarding does not already carry."""
    ws = route.websocket
    assert ws is not None
    out = [b"Connection: Upgrade\r\n"]
    for lname, name, value in x.headers:
        if lname == b"upgrade":
            out += (b"Upgrade: ", value, b"\r\n")
        elif route.forward_headers or lname in route.header_names or b"_" in lname:
            continue  # forwarded with the route's headers, or never
        elif (lname.startswith(_SEC_WEBSOCKET) or lname in ws.input_headers
              or ws.forward_all and lname not in REQUEST_DROP):
            out += (name, b": ", value, b"\r\n")
    return b"".join(out)


def _switching_head(raw: bytes, asked: bytes) -> bytes:
    """The 101 for the client from the backend's: its end-to-end headers, `Connection: Upgrade`
    and its `Upgrade`, which must be one the client asked for (else ValueError)."""
    lines = raw[:-4].split(b"\r\n")
    kept: list[bytes] = [b"HTTP/1.1 101 Switching Protocols\r\n"]
    upgrade: Optional[bytes] = None
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError("malformed header in the backend's 101")
        lname = name.strip(b" \t").lower()
        if lname == b"upgrade":
            upgrade = value.strip(b" \t")
        elif lname not in HOP_BY_HOP:
            kept.append(line + b"\r\n")
    if upgrade is None:
        raise ValueError("the backend's 101 names no Upgrade protocol")
    offered = {p.strip(b" \t").lower() for p in asked.split(b",")}
    if upgrade.lower() not in offered:
        raise ValueError(f"the backend switched to {upgrade[:40]!r}, which the client did not ask for")
    kept += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n")
    return b"".join(kept)


def open_tunnel(conn: "ClientConnection", x: "Exchange", up: "UpstreamConnection", raw: bytes, rest: bytes) -> None:
    """The backend answered the handshake with 101 (`raw`, and `rest`: its bytes after it)."""
    from fastproxy.server.exchange import DL_TUNNEL, TUNNEL

    w = conn.w
    route = x.route
    assert route is not None and route.websocket is not None
    asked = b", ".join(value for lname, _, value in x.headers if lname == b"upgrade")
    try:
        head = _switching_head(raw, asked)
    except ValueError as exc:
        up.close()
        x.up = None
        conn.upstream_failed(x, FailureKind.MALFORMED, str(exc))
        return
    now = w.clock()
    w.metrics.upstream(route.name, time.perf_counter() - up.sent_at)
    b = x.breaker
    if b is not None:
        x.breaker = None
        b.after(x.ticket, True, now)
    x.up = None
    x.status = 101
    x.phase = TUNNEL
    x.head_sent = True
    t = Tunnel(conn, x, up.transport, route.websocket.idle_timeout, route.websocket.max_message_size, now)
    conn.tunnel = t
    early = conn.early
    conn.early = None
    conn.transport.set_protocol(t.client_side)
    up.transport.set_protocol(t.backend_side)
    conn.transport.write(head)
    conn.deadline = now + t.idle_timeout
    conn.dl_kind = DL_TUNNEL
    w.metrics.tunnel_opened()
    if rest:
        t.relay(rest, from_backend=True)
    if early:
        t.relay(bytes(early), from_backend=False)
    conn.flow.reasons = 0  # the HTTP reasons to pause no longer hold; the tunnel's own do
    if not t.closed:
        conn.transport.resume_reading()
        if not t.write_paused[False]:  # (the 101 and `rest` may have filled the client's buffer)
            up.transport.resume_reading()
        if conn.eof:  # the client half-closed after its handshake
            t.half_close(from_backend=False)


class FrameLimit:
    """Follows the WebSocket frames of one direction (RFC 6455 §5.2) to find a message larger
    than `limit` (the payloads of a data frame and its continuations; control frames apart)."""

    __slots__ = ("limit", "head", "left", "message", "boundary")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = b""  # a frame header cut across reads
        self.left = 0  # payload bytes of the current frame still to pass
        self.message = 0  # payload of the current message so far
        self.boundary = True  # between frames: a frame of ours may be written here

    def feed(self, data: bytes) -> int:
        """-1 when `data` is within the limit, else the offset of the frame that breaks it."""
        pos = 0
        n = len(data)
        while pos < n:
            left = self.left
            if left:
                take = min(left, n - pos)
                self.left = left - take
                pos += take
                self.boundary = self.left == 0
                continue
            start = pos - len(self.head)
            buf = self.head + data[pos:pos + 14]
            if len(buf) < 2:
                self.head, self.boundary = buf, False
                return -1
            b0, b1 = buf[0], buf[1]
            size = b1 & 0x7F
            need = 2 + (4 if b1 & 0x80 else 0) + (2 if size == 126 else 8 if size == 127 else 0)
            if len(buf) < need:
                self.head, self.boundary = buf, False
                return -1
            if size == 126:
                size = struct.unpack_from("!H", buf, 2)[0]
            elif size == 127:
                size = struct.unpack_from("!Q", buf, 2)[0]
            opcode = b0 & 0x0F
            if opcode < 8:  # a data frame (0 continues a message)
                total = (self.message if opcode == 0 else 0) + size
                if total > self.limit:
                    return max(start, 0)
                self.message = 0 if b0 & 0x80 else total
            pos += need - len(self.head)
            self.head = b""
            self.left = size
            self.boundary = size == 0
        return -1


class _Side:
    """The protocol of one transport of a tunnel; what it reads goes to the other transport."""

    __slots__ = ("tunnel", "from_backend")

    def __init__(self, tunnel: "Tunnel", from_backend: bool) -> None:
        self.tunnel = tunnel
        self.from_backend = from_backend

    def connection_made(self, transport: Any) -> None:  # (set_protocol: never called)
        pass

    def data_received(self, data: bytes) -> None:
        self.tunnel.relay(data, self.from_backend)

    def eof_received(self) -> bool:
        return self.tunnel.half_close(self.from_backend)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.tunnel.lost(self.from_backend, exc)

    def pause_writing(self) -> None:  # this side's peer does not take what we write: stop the other
        t = self.tunnel
        t.write_paused[self.from_backend] = True
        t.other(self.from_backend).pause_reading()

    def resume_writing(self) -> None:
        t = self.tunnel
        t.write_paused[self.from_backend] = False
        if not t.closed:
            t.other(self.from_backend).resume_reading()


class Tunnel:
    """One client connection and one backend connection after a 101."""

    __slots__ = ("conn", "x", "client", "backend", "client_side", "backend_side", "idle_timeout", "last", "closed",
                 "up_bytes", "down_bytes", "eofs", "limits", "clock", "metrics", "ended_by", "write_paused")

    def __init__(self, conn: "ClientConnection", x: "Exchange", backend: Any, idle_timeout: float, max_message: int,
                 now: float) -> None:
        self.conn = conn
        self.x = x
        self.client: Any = conn.transport
        self.backend: Any = backend
        self.client_side = _Side(self, False)
        self.backend_side = _Side(self, True)
        self.idle_timeout = idle_timeout
        self.clock = conn.w.clock
        self.metrics = conn.w.metrics
        self.last = now  # the last byte either way
        self.closed = False
        self.up_bytes = 0  # client to backend
        self.down_bytes = 0
        self.eofs = 0  # sides that half-closed
        # (client to backend, backend to client) frame followers when messages are limited
        self.limits: Optional[tuple[FrameLimit, FrameLimit]] = (
            (FrameLimit(max_message), FrameLimit(max_message)) if max_message else None)
        self.ended_by = ""
        # [the client's transport, the backend's] does not take our writes (index: from_backend
        # of the side whose transport it is)
        self.write_paused = [conn.writing_paused, False]

    def other(self, from_backend: bool) -> Any:
        return self.client if from_backend else self.backend

    def relay(self, data: bytes, from_backend: bool) -> None:
        """Bytes one side read, written to the other (what a message limit lets through)."""
        if self.closed:
            return
        self.last = self.clock()
        limits = self.limits
        if limits is not None:
            cut = limits[1 if from_backend else 0].feed(data)
            if cut >= 0:
                self.too_big(data[:cut], from_backend)
                return
        self._pass(data, from_backend)

    def _pass(self, data: bytes, from_backend: bool) -> None:
        n = len(data)
        if from_backend:
            self.down_bytes += n
            self.metrics.tunnel_down += n
            self.client.write(data)
        else:
            self.up_bytes += n
            self.metrics.tunnel_up += n
            self.backend.write(data)

    def too_big(self, before: bytes, from_backend: bool) -> None:
        """A message over `max_message_size`: what came before it passes, then the tunnel closes
        (the client is told 1009 when its stream is between frames)."""
        if before:
            self._pass(before, from_backend)
        limits = self.limits
        assert limits is not None
        if limits[1].boundary:
            self.client.write(CLOSE_TOO_BIG)
        self.close("message too big")

    def half_close(self, from_backend: bool) -> bool:
        """One side sent FIN: pass it on; both did: close."""
        self.eofs += 1
        peer = self.other(from_backend)
        if self.eofs >= 2 or not peer.can_write_eof():
            self.close("closed by the backend" if from_backend else "closed by the client")
            return False
        try:
            peer.write_eof()
        except (OSError, RuntimeError):
            self.close("closed by the backend" if from_backend else "closed by the client")
            return False
        return True  # keep this transport open to write what the other side still sends

    def lost(self, from_backend: bool, exc: Optional[Exception]) -> None:
        if not self.closed:
            why = "backend" if from_backend else "client"
            self.close(f"{why} reset" if exc is not None else f"closed by the {why}")
        if not from_backend:
            self.conn.connection_lost(exc)  # the client connection's own ending (worker count, queue)

    def expire(self, now: float) -> None:
        """The worker's sweep: closed after `idle_timeout` without a byte either way."""
        from fastproxy.server.exchange import DL_TUNNEL

        if self.closed:
            return
        due = self.last + self.idle_timeout
        if now >= due:
            self.close("idle timeout")
        else:
            self.conn.deadline = due
            self.conn.dl_kind = DL_TUNNEL

    def close(self, why: str) -> None:
        """End the tunnel: both transports close once their writes are flushed; the exchange is
        counted and logged now (status 101, its duration, the bytes each way)."""
        if self.closed:
            return
        self.closed = True
        self.ended_by = why
        conn = self.conn
        conn.closing = True
        self.metrics.tunnel_closed()
        conn.record(self.x)
        self.backend.close()
        self.client.close()
        # close() waits for the writes to flush: a peer that reads nothing would hold the
        # connection (and its place under max_connections) for ever
        conn.w.loop.call_later(CLOSE_GRACE, self._reset)

    def _reset(self) -> None:
        for t in (self.backend, self.client):
            if not t.is_closing() or t.get_write_buffer_size():
                t.abort()

    def drain(self) -> None:
        """The worker drains: a WebSocket client is told 1001 when its stream is between frames."""
        limits = self.limits
        if not self.closed and limits is not None and limits[1].boundary:
            self.client.write(CLOSE_GOING_AWAY)
        self.close("drain deadline")

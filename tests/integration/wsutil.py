"""WebSocket backends for the tunnel tests: a real WebSocket server (the `websockets` package)
and a raw one that answers the handshake itself and then echoes bytes, each on its own loop in
a thread, on 127.0.0.1."""

import asyncio
import base64
import hashlib
import os
import socket
import threading
from typing import Any, Optional

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class _Threaded:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("backend did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"


class WSBackend(_Threaded):
    """Paths: /echo echoes every message; /flood/N sends N messages of 1 MiB (counting them in
    `sent`); /refuse answers the handshake 403; anything else echoes too. Records the handshake
    headers of each connection (`handshakes`)."""

    def __init__(self) -> None:
        self.handshakes: list[Headers] = []
        self.sent = 0
        self.connections = 0
        self.closed = 0
        super().__init__()

    async def _serve(self) -> None:
        self._stop: asyncio.Future[None] = self.loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0, max_size=None, process_request=self._process,
                         compression=None, ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.ready.set()
            await self._stop

    def _process(self, conn: Any, request: Any) -> Optional[Response]:
        self.handshakes.append(request.headers)
        if request.path == "/refuse":
            return conn.respond(403, "no websocket for you\n")
        return None

    async def _handle(self, ws: Any) -> None:
        self.connections += 1
        try:
            path = ws.request.path
            if path.startswith("/flood/"):
                block = os.urandom(1 << 20)
                for _ in range(int(path.rsplit("/", 1)[1])):
                    await ws.send(block)
                    self.sent += 1
                await ws.wait_closed()
                return
            async for message in ws:
                await ws.send(message)
        finally:
            self.closed += 1


class RawUpgradeBackend(_Threaded):
    """Reads one request head, answers it with `answer` (default: a 101 to `websocket` with the
    right accept key) and then echoes every byte. `received` holds all it read, per connection."""

    def __init__(self, answer: Optional[bytes] = None) -> None:
        self.answer = answer
        self.received: list[bytearray] = []
        super().__init__()

    async def _serve(self) -> None:
        self._stop = self.loop.create_future()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        await self._stop
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.received.append(got)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            got += head
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            writer.write(self.answer if self.answer is not None else
                         b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                got += data
                writer.write(data)
                await writer.drain()
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def handshake(path: str = "/ws", host: str = "x", extra: bytes = b"") -> tuple[bytes, bytes]:
    """A client handshake request and the accept key its 101 must carry."""
    key = base64.b64encode(os.urandom(16))
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
           + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + extra + b"\r\n")
    return req, accept_key(key)


def read_head(s: socket.socket) -> tuple[bytes, bytes]:
    """Read a response head from a raw socket: (head, what came after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(65536)
        if not data:
            break
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def frame(payload: bytes, opcode: int = 2, fin: bool = True, mask: bool = True) -> bytes:
    """One WebSocket frame (client frames are masked)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((b0, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((b0, (0x80 if mask else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, (0x80 if mask else 0) | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))

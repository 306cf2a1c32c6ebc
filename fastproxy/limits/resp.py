"""One pipelined connection to a Redis server: commands out as RESP, replies parsed by hiredis.

The shared limits send a batch of script calls per event-loop tick. Through redis-py's
pipeline each batch cost about 240 µs of Python (pool checkout and release, per-command
packing, per-reply parsing calls, observability hooks): more than the rest of the request.
Here a batch is one write of commands packed in one pass, and its replies come back through
one hiredis reader on the protocol's data; batches are pipelined on the one connection, in
order (Redis answers each connection in order, so a batch's replies are the next n replies).

A batch whose caller gave up (timeout) keeps its place: its replies are read and dropped. A
lost connection fails every batch waiting on it (`ConnectionError`); the next call connects
again. Error replies are `hiredis.ReplyError` values in the reply list, never raised.
"""

import asyncio
import collections
from typing import Any, Optional

import hiredis

Command = tuple[bytes | str | int | float, ...]


def pack(commands: list[Command]) -> bytes:
    """RESP arrays of bulk strings, all commands in one bytes object."""
    out: list[bytes] = []
    for cmd in commands:
        out.append(b"*%d\r\n" % len(cmd))
        for arg in cmd:
            if isinstance(arg, bytes):
                b = arg
            elif isinstance(arg, str):
                b = arg.encode()
            else:
                b = repr(arg).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Only the connection's current transport speaks to it: a replaced one is ignored."""

    def __init__(self, conn: "RespConnection") -> None:
        self.conn = conn
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.conn.transport is self.transport:
            self.conn.received(data)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.conn.transport is self.transport:
            self.conn.lost(exc)


class RespConnection:
    """A lazily (re)connected pipelined connection; `call(commands)` returns their replies."""

    def __init__(self, host: str, port: int, connect_timeout: float, db: int = 0, username: Optional[str] = None,
                 password: Optional[str] = None) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.db = db
        self.username = username
        self.password = password
        self.transport: Optional[asyncio.Transport] = None
        self.reader = hiredis.Reader()
        # batches in flight, in order: (replies expected, replies so far, future of the list)
        self.waiting: collections.deque[tuple[int, list[Any], asyncio.Future[list[Any]]]] = collections.deque()
        self._connecting: Optional[asyncio.Future[None]] = None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), self.host, self.port), self.connect_timeout)
        self.reader = hiredis.Reader()
        self.transport = transport
        setup: list[Command] = []
        if self.password is not None:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            for r in await self.send(setup):
                if isinstance(r, hiredis.ReplyError):
                    transport.close()
                    raise ConnectionError(f"redis refused the connection setup: {r}")

    async def call(self, commands: list[Command]) -> list[Any]:
        """The replies to `commands`, in order (error replies as ReplyError values)."""
        if self.transport is None or self.transport.is_closing():
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            connecting = self._connecting
            try:
                await asyncio.shield(connecting)
            finally:
                if connecting.done():
                    self._connecting = None
        return await self.send(commands)

    def ready(self) -> bool:
        """Connected: `send` can be used without awaiting a connection."""
        return self.transport is not None and not self.transport.is_closing()

    def send(self, commands: list[Command]) -> "asyncio.Future[list[Any]]":
        """Write `commands` now; the future of their replies (ConnectionError when not connected)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            raise ConnectionError(f"connection to redis {self.host}:{self.port} lost")
        fut: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.waiting.append((len(commands), [], fut))
        transport.write(pack(commands))
        return fut

    def received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while waiting:
            reply = reader.gets()
            if reply is False:
                return
            n, replies, fut = waiting[0]
            replies.append(reply)
            if len(replies) == n:
                waiting.popleft()
                if not fut.done():  # (a caller that gave up: its replies are dropped)
                    fut.set_result(replies)
        if reader.gets() is not False:  # a reply nobody asked for: the stream is out of step
            self.close()

    def lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        waiting, self.waiting = self.waiting, collections.deque()
        err = ConnectionError(f"connection to redis {self.host}:{self.port} lost" + (f": {exc}" if exc else ""))
        for _, _, fut in waiting:
            if not fut.done():
                fut.set_exception(err)

    def close(self) -> None:
        """Drop the connection (what waits on it fails); the next call connects again."""
        t = self.transport
        if t is not None:
            t.close()
            self.lost(None)

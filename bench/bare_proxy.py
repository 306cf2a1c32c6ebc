"""The floor of this design: the least a uvloop + httptools proxy can do per request.

Not a product: no routing, limits, header rewriting or error handling. Each client connection
gets its own backend connection; request bytes are forwarded as received and response bytes
as received (httptools only finds where each response ends). The benchmark runs it beside
fastproxy to show how much of fastproxy's cost is the event loop, the parser and the syscalls
that any Python proxy of this design pays.

    python bench/bare_proxy.py LISTEN_PORT BACKEND_PORT [WORK_US]

WORK_US (the ceiling experiment, `harness.py --ceiling`): burn that many microseconds of Python
on each client read (one request per read under wrk), to measure what each microsecond of
per-request Python costs in throughput on this machine, everything else equal.
"""

import asyncio
import socket
import sys
from time import perf_counter

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, client: "Client") -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)
        self.parser.feed_data(data)

    def connection_lost(self, exc: object) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.up: "Upstream | None" = None
        self.pending: list = []

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = httptools.HttpRequestParser(self)
        loop = asyncio.get_running_loop()
        loop.create_task(self.connect(loop))

    async def connect(self, loop: asyncio.AbstractEventLoop) -> None:
        _, self.up = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.backend_port)
        for data in self.pending:
            self.up.transport.write(data)
        self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        if WORK:
            until = perf_counter() + WORK
            while perf_counter() < until:
                pass
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.transport.write(data)

    def connection_lost(self, exc: object) -> None:
        if self.up is not None:
            self.up.transport.close()


WORK = 0.0  # seconds of Python burnt per client read


def main() -> None:
    global WORK
    listen, backend = int(sys.argv[1]), int(sys.argv[2])
    WORK = float(sys.argv[3]) / 1e6 if len(sys.argv) > 3 else 0.0
    uvloop.install()
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: Client(backend), "127.0.0.1", listen,
                                                        reuse_address=True, backlog=4096))
    print(f"bare proxy ready on 127.0.0.1:{listen}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()

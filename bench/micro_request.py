"""Python cost of one proxied request, without sockets: the client protocol parses a request,
runs its phases and writes the backend request into a fake transport; the backend protocol
parses a canned response and the client gets it. What is left out is exactly what any Python
proxy of this design pays (event loop, syscalls), so this number is fastproxy's own overhead.

    python bench/micro_request.py [CONFIG] [N]

CONFIG may be one of the benchmark's templates (`configs/fastproxy-full.json`): `@BACKEND_PORT@`
is filled in (the backend is never contacted). The route measured is the config's first one.
"""

import asyncio
import os
import sys
import tempfile
import time

import uvloop

from fastproxy.config.compile import load
from fastproxy.server.connection import ClientConnection
from fastproxy.server.worker import Worker
from fastproxy.upstream.connection import UpstreamConnection

REQUEST = (b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:19083\r\n"
           b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) fastproxy-bench/1.0\r\n\r\n")
RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Sun, 22 Nov 2026 16:00:00 GMT\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, World!\n")


class FakeSocket:
    family = 0


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, data: list) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else FakeSocket()

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        raise AssertionError("closed")


def load_template(path: str) -> object:
    with open(path) as f:
        text = f.read()
    if "@BACKEND_PORT@" not in text:
        return load(path)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text.replace("@BACKEND_PORT@", "19080"))
        return load(tmp)
    finally:
        os.unlink(tmp)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/configs/fastproxy-micro.json"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    snap = load_template(path)
    w = Worker(snap, loop)
    route = snap.route_list[0]
    pool = w.pool(route.targets[0])
    up = UpstreamConnection(pool)
    up.connection_made(FakeTransport())
    pool.adopt(up)
    client = ClientConnection(w)
    client_t = FakeTransport()
    client.connection_made(client_t)
    per = time_requests(client, up, client_t, n)
    print(f"{path}: {per * 1e6:.2f} us of Python per proxied request ({n} requests)")


def time_requests(client: object, backend: object, client_transport: FakeTransport, n: int) -> float:
    """Seconds per request: `n` requests through the two protocols, after 1000 to warm up."""
    for _ in range(1000):
        client.data_received(REQUEST)
        backend.data_received(RESPONSE)
    t0 = time.perf_counter()
    for _ in range(n):
        client.data_received(REQUEST)
        backend.data_received(RESPONSE)
    dt = time.perf_counter() - t0
    assert client_transport.written >= n, "the client got no answers"
    return dt / n


if __name__ == "__main__":
    main()

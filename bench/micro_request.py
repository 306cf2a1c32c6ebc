"""Python cost of one proxied request, without sockets: the client protocol parses a request,
runs its phases and writes the backend request into a fake transport; the backend protocol
parses a canned response and the client gets it. What is left out is exactly what any Python
proxy of this design pays (event loop, syscalls), so this number is fastproxy's own overhead.

    python bench/micro_request.py [CONFIG] [N]

CONFIG may be one of the benchmark's templates (`configs/fastproxy-full.json`): `@BACKEND_PORT@`
is filled in (the backend is never contacted) and `@DIR@` is a temporary directory holding the
benchmark's JWK Set (`bench/identity.py`). The route measured is the config's first one; every
request carries the benchmark's token (`Authorization: Bearer ...`), as under `bench/run.sh`.
"""

import asyncio
import os
import sys
import tempfile
import time

import uvloop

import identity  # bench/identity.py (this directory is on sys.path, as for skeleton.py)
from fastproxy.config.compile import load
from fastproxy.server.connection import ClientConnection
from fastproxy.server.worker import Worker
from fastproxy.upstream.connection import UpstreamConnection

def request(token: str, path: bytes = b"/hello", extra: bytes = b"") -> bytes:
    return (b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1:19083\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) fastproxy-bench/1.0\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\n" + extra + b"\r\n")
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


def load_template(path: str, directory: str) -> object:
    """The config at `path` with its placeholders filled; `directory` holds the JWK Set."""
    with open(path) as f:
        text = f.read()
    if "@BACKEND_PORT@" not in text and "@DIR@" not in text:
        return load(path)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=directory)
    with os.fdopen(fd, "w") as f:
        f.write(text.replace("@BACKEND_PORT@", "19080").replace("@DIR@", directory))
    return load(tmp)


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/configs/fastproxy-micro.json"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    with tempfile.TemporaryDirectory() as directory:
        token = identity.make(directory)
        per = measure(load_template(path, directory), [request(token)], n)
    print(f"{path}: {per * 1e6:.2f} us of Python per proxied request ({n} requests)")


def measure(snap: object, requests: list, n: int, warm: "bytes | None" = None) -> float:
    """Seconds per request through the config's first route; `requests` are sent in turn
    (after 1000 `warm` ones, by default the first of `requests`)."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    w = Worker(snap, loop)
    route = snap.route_list[0]
    pool = w.pool(route.targets[0])
    up = UpstreamConnection(pool)
    up.connection_made(FakeTransport())
    pool.adopt(up)
    client = ClientConnection(w)
    client_t = FakeTransport()
    client.connection_made(client_t)
    try:
        return time_requests(client, up, client_t, n, requests, warm)
    finally:
        loop.close()


def time_requests(client: object, backend: object, client_transport: FakeTransport, n: int,
                  requests: list, warm: "bytes | None" = None) -> float:
    """Seconds per request: `n` requests through the two protocols (request i is
    `requests[i % len(requests)]`), after 1000 to warm up (`warm`, or the first request)."""
    first = warm if warm is not None else requests[0]
    for _ in range(1000):
        client.data_received(first)
        backend.data_received(RESPONSE)
    k = len(requests)
    t0 = time.perf_counter()
    for i in range(n):
        client.data_received(requests[i % k])
        backend.data_received(RESPONSE)
    dt = time.perf_counter() - t0
    assert client_transport.written >= n, "the client got no answers"
    return dt / n


if __name__ == "__main__":
    main()

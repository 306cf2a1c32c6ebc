"""The least Python any proxy of fastproxy's design runs per request: a lower bound, not a product.

Same input as `micro_request.py` (the request and response bytes, fake transports, no sockets),
but only the skeleton of the work: httptools callbacks for both heads, a dict lookup for the
route, hop-by-hop names dropped, the backend's request and the client's response built as bytes,
the backend connection taken from and returned to a list. Nothing else: no limits or timeouts, no
pipelining or flow control, no metrics, no error handling, no policies.

    python bench/skeleton.py [N]

Compared with `micro_request.py` it says how much of fastproxy's own Python is the work itself
and how much is what a real proxy adds to it; with `harness.py --ceiling` it says what even the
skeleton would cost in throughput (bench/README.md, "The ceiling").
"""

import sys
import tempfile

import httptools
import identity  # bench/identity.py

from micro_request import FakeTransport, request, time_requests

DROP = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade",
                  b"trailer", b"content-length", b"proxy-authenticate", b"host", b"expect"))
ROUTES = {b"/hello": (b"/hello", b"Host: 127.0.0.1:19080\r\n")}
STATUS = {200: b"HTTP/1.1 200 OK\r\n"}


class Backend:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport = FakeTransport()
        self.client: "Client | None" = None
        self.lines: list = []
        self.out: list = []
        self.length = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        lname = name.lower()
        if lname not in DROP:
            self.lines.append(name + b": " + value + b"\r\n")
        elif lname == b"content-length":
            self.length = int(value)

    def on_headers_complete(self) -> None:
        lines = self.lines
        self.lines = []
        lines.insert(0, STATUS[self.parser.get_status_code()])
        lines.append(b"Content-Length: %d\r\n\r\n" % self.length)
        self.out = [b"".join(lines)]

    def on_body(self, body: bytes) -> None:
        self.out.append(body)

    def on_message_complete(self) -> None:
        client = self.client
        client.transport.writelines(self.out)
        client.pool.append(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)


class Client:
    def __init__(self, pool: list) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport = FakeTransport()
        self.pool = pool
        self.url = b""
        self.headers: list = []

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in DROP:
            self.headers.append(name + b": " + value + b"\r\n")

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = parser.get_method()
        parser.get_http_version()
        parser.should_keep_alive()
        path, host = ROUTES[self.url]
        backend = self.pool.pop()
        backend.client = self
        parts = [method, b" ", path, b" HTTP/1.1\r\n", host, b"X-Forwarded-For: 127.0.0.1\r\n"]
        parts += self.headers
        parts.append(b"\r\n")
        backend.transport.write(b"".join(parts))

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    pool = [Backend()]
    client = Client(pool)
    with tempfile.TemporaryDirectory() as directory:
        token = identity.make(directory)  # the same request bytes as micro_request.py
    per = time_requests(client, pool[0], client.transport, n, [request(token)])
    print(f"skeleton: {per * 1e6:.2f} us of Python per proxied request ({n} requests)")


if __name__ == "__main__":
    main()

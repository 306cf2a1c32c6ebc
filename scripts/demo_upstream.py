"""A small demo backend for the shipped configuration: answers JSON describing the request.

    python scripts/demo_upstream.py [--port 8081]

GET /hello            {"message": "hello from the demo backend", ...}
GET /echo/...         the method, path, query and headers it received, as JSON
anything else         the same echo
"""

import argparse
import asyncio
import errno
import json
import os
import sys

import httptools


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.headers = {}
        self.url = b""
        self.body = 0

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self):
        self.headers, self.url, self.body = {}, b"", 0

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.decode("latin-1")] = value.decode("latin-1")

    def on_body(self, body):
        self.body += len(body)

    def on_message_complete(self):
        u = httptools.parse_url(self.url)
        doc = {
            "message": "hello from the demo backend",
            "method": self.parser.get_method().decode(),
            "path": u.path.decode(),
            "query": (u.query or b"").decode(),
            "headers": self.headers,
            "body_bytes": self.body,
        }
        body = json.dumps(doc, indent=2).encode() + b"\n"
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
        if not self.parser.should_keep_alive():
            self.transport.close()


async def main(host: str, port: int) -> None:
    try:
        server = await asyncio.get_running_loop().create_server(Echo, host, port, reuse_address=True)
    except OSError as exc:
        why = "the port is already in use by another process" if exc.errno == errno.EADDRINUSE else (
            os.strerror(exc.errno) if exc.errno else str(exc))
        print(f"demo backend: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        raise SystemExit(1)
    print(f"demo backend listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    a = ap.parse_args()
    try:
        asyncio.run(main(a.host, a.port))
    except KeyboardInterrupt:
        pass

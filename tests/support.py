"""Test support: real upstream servers (well-behaved and misbehaving), a fastproxy process
started through the real CLI, and raw-socket clients. Everything listens on 127.0.0.1 and
signals readiness; nothing sleeps for a fixed time to wait for a server.
"""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Optional

import httptools

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _UpstreamProtocol(asyncio.Protocol):
    """Answers by path. Records every raw byte received, per connection."""

    def __init__(self, server: "Upstream") -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.raw = bytearray()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.append(self.raw)
        if self.server.ssl is not None:
            self.server.peercerts.append(transport.get_extra_info("peercert"))
        self.server.opened += 1

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.server.closed += 1
        if exc is not None:
            self.server.resets += 1

    def data_received(self, data: bytes) -> None:
        self.raw += data
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers: list = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        req = {
            "method": self.parser.get_method().decode(),
            "url": self.url.decode("latin-1"),
            "headers": self.headers,
            "body": bytes(self.body).decode("latin-1"),
        }
        self.server.requests.append(req)
        asyncio.get_running_loop().create_task(self.server.answer(self, req))


class Upstream:
    """A backend in a background thread. Behaviour by path prefix:

    /echo...          200, JSON of the request (method, url, headers, body)
    /status/N         status N, body "status N"
    /big/N            N bytes, Content-Length
    /chunked/N        N bytes in 1 KiB chunks, chunked
    /closedelim/N     N bytes, no length, close-delimited
    /slow/MS          waits MS milliseconds, then 200 "slow"
    /drip/N/MS        N chunks of 1 KiB, MS ms apart (chunked)
    /hang             never answers
    /reset            closes with RST before answering
    /truncate         Content-Length 100, sends 10 bytes, closes
    /lie              Content-Length 5, sends 10 bytes
    /garbage          sends bytes that are not HTTP
    /headers          200 with hop-by-hop headers that must not reach the client
    /head             200 with Content-Length 42 (for HEAD tests)
    anything else     200 "ok"
    """

    def __init__(self, port: int = 0, ssl: Any = None) -> None:
        self.ssl = ssl  # an ssl.SSLContext: the backend speaks TLS (an https:// host)
        self.peercerts: list = []  # per TLS connection: the client certificate it presented, or None
        self.requests: list = []
        self.connections: list = []
        self.opened = 0
        self.closed = 0  # connections that ended (FIN or RST from the proxy)
        self.resets = 0  # of which with a reset
        self.port = port
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.server = await self.loop.create_server(lambda: _UpstreamProtocol(self), "127.0.0.1", self.port,
                                                        reuse_address=True, ssl=self.ssl)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl is not None else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        def _stop() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(_stop)
        self._thread.join(5)

    async def answer(self, proto: _UpstreamProtocol, req: dict) -> None:
        t = proto.transport
        path = req["url"].split("?")[0]
        parts = path.strip("/").split("/")
        head = parts[0]
        keep = proto.parser.should_keep_alive()

        def send(status: int, body: bytes, extra: str = "") -> None:
            t.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)
            if not keep:
                t.close()

        if head == "echo":
            send(200, json.dumps(req).encode(), "Content-Type: application/json\r\n")
        elif head == "status":
            code = int(parts[1])
            if code in (204, 304):
                t.write(f"HTTP/1.1 {code} X\r\n\r\n".encode())
            else:
                send(code, f"status {code}".encode())
        elif head == "big":
            send(200, b"x" * int(parts[1]))
        elif head == "chunked":
            n = int(parts[1])
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while n > 0:
                c = min(n, 1024)
                t.write(b"%x\r\n%s\r\n" % (c, b"c" * c))
                n -= c
            t.write(b"0\r\n\r\n")
        elif head == "closedelim":
            t.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"d" * int(parts[1]))
            t.close()
        elif head == "slow":
            await asyncio.sleep(int(parts[1]) / 1000)
            send(200, b"slow")
        elif head == "drip":
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(int(parts[1])):
                await asyncio.sleep(int(parts[2]) / 1000)
                if t.is_closing():
                    return
                t.write(b"400\r\n" + b"r" * 1024 + b"\r\n")
            t.write(b"0\r\n\r\n")
        elif head == "hang":
            return
        elif head == "reset":
            sock = t.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            t.abort()
        elif head == "truncate":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            t.close()
        elif head == "lie":
            t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n0123456789")
        elif head == "garbage":
            t.write(b"\x00\x01garbage that is not http\r\n\r\n")
        elif head == "headers":
            send(200, b"h", "Connection: X-Secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
                           "Proxy-Connection: keep-alive\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: yes\r\n"
                           "Set-Cookie: a=1\r\nSet-Cookie: b=2\r\n")
        elif head == "head":
            if req["method"] == "HEAD":
                t.write(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")
            else:
                send(200, b"h" * 42)
        else:
            send(200, b"ok")


class Proxy:
    """fastproxy started through its CLI with a config dict; waits for the ready line."""

    def __init__(self, config: dict, tmp_path: Any, workers: Optional[int] = None, port: int = 0,
                 args: tuple = (), name: str = "fastproxy.json") -> None:
        self.config_path = os.path.join(str(tmp_path), name)
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        cmd = [sys.executable, "-m", "fastproxy", "run", "-c", self.config_path, "-p", str(port), "--log-level", "info"]
        if workers:
            cmd += ["-w", str(workers)]
        cmd += list(args)
        self.stderr_path = os.path.join(str(tmp_path), f"{name}.stderr")
        self._err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": ROOT})
        line = self.proc.stdout.readline().decode()
        if "ready" not in line:
            self.proc.kill()
            raise RuntimeError(f"fastproxy did not start: {line!r}\n{self.stderr()}")
        self.ready_line = line
        self.port = int(line.split("://")[1].split(" ")[0].rsplit(":", 1)[1])

    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def write_config(self, config: dict) -> None:
        with open(self.config_path, "w") as f:
            json.dump(config, f)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._err.close()
        return self.proc.returncode


def config(upstream: Any, endpoints: list, **root: Any) -> dict:
    """A KrakenD config whose backends default to `upstream` (an Upstream or a list of URLs)."""
    hosts = [upstream.url] if hasattr(upstream, "url") else list(upstream)
    # no-op: what fastproxy does, so `check` has no encoding summary to log (a test may say otherwise)
    return {"version": 3, "output_encoding": "no-op", "host": hosts, "endpoints": endpoints, **root}


def ep(path: str, url_pattern: Optional[str] = None, method: str = "GET", **kw: Any) -> dict:
    backend = {"url_pattern": url_pattern or path}
    backend.update(kw.pop("backend", {}))
    return {"endpoint": path, "method": method, "backend": [backend], **kw}


def raw(port: int, data: bytes, timeout: float = 3.0, half_close: bool = False) -> bytes:
    """Send raw bytes, read until the server closes (or timeout); return everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)


def parse_responses(data: bytes) -> list:
    """Split raw bytes into [(status, headers dict lower-case -> list, body)] with httptools."""
    out: list = []

    class P:
        def on_message_begin(self) -> None:
            self.h: dict = {}
            self.b = bytearray()

        def on_header(self, n: bytes, v: bytes) -> None:
            self.h.setdefault(n.decode().lower(), []).append(v.decode("latin-1"))

        def on_body(self, b: bytes) -> None:
            self.b += b

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.h, bytes(self.b)))

    p = P()
    parser = httptools.HttpResponseParser(p)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        pass
    return out


def status_of(data: bytes) -> int:
    if not data.startswith(b"HTTP/1.1 "):
        return 0
    return int(data[9:12])


def get(port: int, path: str, headers: Optional[dict] = None, method: str = "GET", body: Optional[bytes] = None,
        timeout: float = 5.0) -> tuple:
    """One request on a fresh connection with http.client: (status, headers, body)."""
    import http.client

    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()

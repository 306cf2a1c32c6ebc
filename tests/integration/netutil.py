"""Raw-socket HTTP/1.1 client helpers for the integration battery.

The client keeps one byte buffer per socket so pipelined answers are read back one at a time,
decodes Content-Length, chunked and close-delimited bodies itself (so tests can see the framing
the proxy chose), and reports a body cut short as `BrokenStream` rather than a clean end.
Everything is bounded by socket timeouts: nothing here sleeps to wait for readiness.
"""

import socket
import time
from typing import Callable, Optional

from tests.support import Upstream


class BrokenStream(Exception):
    """The connection ended (FIN or RST) before the response's framing said it was complete."""

    def __init__(self, msg: str, partial: Optional["Response"] = None) -> None:
        super().__init__(msg)
        self.partial = partial


class Response:
    def __init__(self, status: int, reason: str, headers: list, head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received, in order
        self.head = head  # raw status line and headers
        self.body = b""
        self.framing = "none"  # "length" | "chunked" | "close" | "none"
        self.chunk_sizes: list = []

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return None

    def all(self, name: str) -> list:
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def names(self) -> set:
        return {n.lower() for n, _ in self.headers}

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} body={self.body[:80]!r}>"


class _Reader:
    """Response parsing over a buffer that `fill()` extends (False at EOF)."""

    def __init__(self, fill: Callable[[], bool]) -> None:
        self.buf = bytearray()
        self.fill = fill
        self.eof = False

    def _more(self) -> bool:
        if self.eof:
            return False
        if not self.fill():
            self.eof = True
            return False
        return True

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if not self._more():
                raise BrokenStream(f"connection ended inside a line: {bytes(self.buf[:80])!r}")

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._more():
                got = bytes(self.buf)
                del self.buf[:]
                raise BrokenStream(f"connection ended after {len(got)} of {n} bytes", None)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def response(self, method: str = "GET") -> Response:
        if not self.buf and not self._more():
            raise EOFError("connection closed before a response")
        status_line = self._line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
        headers = []
        raw = [status_line]
        while True:
            line = self._line()
            if not line:
                break
            raw.append(line)
            name, _, value = line.partition(b":")
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        r = Response(int(parts[1]), parts[2].decode("latin-1") if len(parts) > 2 else "", headers,
                     b"\r\n".join(raw) + b"\r\n\r\n")
        if method == "HEAD" or r.status < 200 or r.status in (204, 304):
            return r
        te = r.header("transfer-encoding")
        cl = r.header("content-length")
        try:
            if te is not None:
                assert te.lower() == "chunked", te
                r.framing = "chunked"
                body = bytearray()
                while True:
                    size_line = self._line()
                    size = int(size_line.split(b";")[0], 16)
                    r.chunk_sizes.append(size)
                    if size == 0:
                        while self._line():
                            pass  # trailers
                        break
                    body += self._exact(size)
                    if self._exact(2) != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
                r.body = bytes(body)
            elif cl is not None:
                r.framing = "length"
                r.body = self._exact(int(cl))
            else:
                r.framing = "close"
                while self._more():
                    pass
                r.body = bytes(self.buf)
                del self.buf[:]
        except BrokenStream as exc:
            exc.partial = r
            raise
        return r


class Client:
    """One raw TCP connection to the proxy."""

    def __init__(self, port: int, timeout: float = 5.0, rcvbuf: Optional[int] = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.reset = False
        self.received = bytearray()
        self.reader = _Reader(self._fill)

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            return False
        if not data:
            return False
        self.received += data
        self.reader.buf += data
        return True

    def send(self, data: bytes) -> "Client":
        self.sock.sendall(data)
        return self

    def request(self, method: str, path: str, headers: Optional[dict] = None, body: Optional[bytes] = None,
                version: str = "1.1") -> Response:
        self.send(build(method, path, headers, body, version))
        return self.response(method)

    def response(self, method: str = "GET") -> Response:
        return self.reader.response(method)

    def closed(self, timeout: float = 3.0) -> bool:
        """True once the peer has closed (FIN or RST) with no further bytes; False on timeout.

        Any bytes arriving meanwhile are kept in `extra` and also mean "not cleanly closed".
        """
        self.sock.settimeout(timeout)
        self.extra = bytes(self.reader.buf)
        if self.reader.eof:
            return not self.extra
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return not self.extra
                self.extra += data
        except ConnectionResetError:
            return not self.extra
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build(method: str, path: str, headers: Optional[dict] = None, body: Optional[bytes] = None,
          version: str = "1.1") -> bytes:
    h = {"Host": "proxy.test"} if version == "1.1" else {}
    h.update(headers or {})
    if body is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in h):
        h["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/{version}"] + [f"{k}: {v}" for k, v in h.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def parse_stream(data: bytes, methods: tuple = ()) -> tuple:
    """Split bytes read until close into ([Response...], leftover bytes, broken: bool)."""
    pending = [bytearray(data)]

    def fill() -> bool:
        if pending:
            reader.buf += pending.pop()
            return True
        return False

    reader = _Reader(fill)
    out = []
    i = 0
    while True:
        try:
            out.append(reader.response(methods[i] if i < len(methods) else "GET"))
        except EOFError:
            return out, b"", False
        except BrokenStream:
            return out, bytes(reader.buf), True
        except ValueError:
            return out, bytes(reader.buf), True
        i += 1


def exchange(port: int, data: bytes, timeout: float = 3.0) -> tuple:
    """Send raw bytes; read until the proxy closes. Returns (responses, closed, elapsed).

    `closed` is True when the proxy closed the connection (FIN or RST) within `timeout`.
    """
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = bytearray()
        closed = False
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            out += chunk
    responses, leftover, broken = parse_stream(bytes(out))
    assert not leftover, f"unparsed bytes after the responses: {leftover[:200]!r}"
    return responses, closed, time.monotonic() - t0


def wait_for(cond: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> object:
    """Poll `cond` until it returns a truthy value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def upstream_bytes(u: Upstream) -> bytes:
    """Everything every connection to `u` has received so far, in connection order."""
    return b"".join(bytes(c) for c in list(u.connections))


class RecordingUpstream(Upstream):
    """`Upstream` plus a few misbehaviours the shared one lacks:

    /cut-chunked     chunked answer: one 1 KiB chunk, then close (no final chunk)
    /interim         sends `100 Continue` and `103 Early Hints` before a 200 "final"
    """

    async def answer(self, proto, req):  # type: ignore[override]
        t = proto.transport
        path = req["url"].split("?")[0]
        if path.startswith("/cut-chunked"):
            t.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"k" * 1024 + b"\r\n")
            t.close()
        elif path.startswith("/interim"):
            t.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        else:
            await super().answer(proto, req)

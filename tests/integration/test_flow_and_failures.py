"""Flow control and failure accounting over real sockets: regressions of a code review.

Each test starts its own fastproxy (through the real CLI, one worker unless it says otherwise)
in front of its own backends on 127.0.0.1: an `Upstream` (tests/support.py) or a small raw-socket
backend written here for a misbehaviour the shared ones lack. Readiness is signalled (the ready
line, a backend seeing a request, an event set by the test); waits poll against a deadline.
Measurement windows (memory under a pipelined flood) are bounded observation periods, not
readiness sleeps.
"""

import json
import os
import select
import signal
import socket
import struct
import threading
import time

import httptools
import pytest

from tests.integration.netutil import BrokenStream, Client, build, exchange, parse_stream, rss_kib, wait_for
from tests.support import Proxy, Upstream, config, ep, free_port, get

BREAKER = {"qos/circuit-breaker": {"interval": 60, "timeout": 30, "max_errors": 0, "name": "b"}}
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


@pytest.fixture
def env(tmp_path):
    """`env.proxy(cfg)` / `env.upstream()` / `env.backend(handler)`: all stopped at the end."""

    class Env:
        def __init__(self) -> None:
            self.things: list = []
            self.n = 0

        def proxy(self, cfg: dict, **kw) -> Proxy:
            self.n += 1
            p = Proxy(cfg, tmp_path, name=f"fastproxy{self.n}.json", **kw)
            self.things.append(p)
            return p

        def upstream(self, cls=Upstream) -> Upstream:
            u = cls()
            self.things.append(u)
            return u

        def backend(self, handler) -> "RawBackend":
            b = RawBackend(handler)
            self.things.append(b)
            return b

    e = Env()
    yield e
    for t in reversed(e.things):
        t.stop()


class RawBackend:
    """A blocking socket server: `handler(conn_socket, backend)` runs in a thread per connection."""

    def __init__(self, handler) -> None:
        self.handler = handler
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list = []
        self.log: list = []  # events the handler records
        self.event = threading.Event()
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c: socket.socket) -> None:
        try:
            self.handler(c, self)
        except OSError:
            pass

    def stop(self) -> None:
        self.stopped = True
        self.event.set()
        self.ls.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def read_head(c: socket.socket, buf: bytearray) -> bytes:
    """Read until the end of a request head; return it (removed from `buf`), b"" at EOF."""
    while b"\r\n\r\n" not in buf:
        data = c.recv(65536)
        if not data:
            return b""
        buf += data
    i = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:i])
    del buf[:i]
    return head


def fast_proxy(env, hosts, endpoints, **root):
    fp = root.pop("fastproxy", {})
    return env.proxy(config(hosts, endpoints, listen_ip="127.0.0.1",
                            extra_config={"fastproxy": {"read_header_timeout": "3s", **fp}, **root.pop("extra", {})},
                            **root))


# 1 -------------------------------------------------------------------------------------------

class TrackingUpstream(Upstream):
    """`Upstream` that keeps the protocol of every request it answers (to see its connection end)."""

    def __init__(self) -> None:
        self.protos: list = []
        super().__init__()

    async def answer(self, proto, req):  # type: ignore[override]
        self.protos.append(proto)
        await super().answer(proto, req)


def test_client_that_stops_reading_a_large_response_is_not_a_backend_failure(env):
    up = env.upstream(TrackingUpstream)
    p = fast_proxy(env, up, [ep("/big/{n}", backend={"extra_config": BREAKER})], timeout="1s")
    assert get(p.port, "/big/10")[0] == 200
    with Client(p.port, rcvbuf=4096) as stalled:
        t0 = time.monotonic()
        stalled.send(build("GET", "/big/50000000"))  # and never read
        proto = wait_for(lambda: up.protos[1] if len(up.protos) > 1 else None)
        # the endpoint timeout (1 s) cuts the stalled exchange: the proxy drops the backend connection
        wait_for(lambda: proto.transport.is_closing(), timeout=5)
        assert time.monotonic() - t0 >= 0.9
        status, _, body = get(p.port, "/big/10")
    # a breaker with max_errors 0 would be open (503) had the stalled client counted as a failure
    assert (status, body) == (200, b"x" * 10)


# 2 -------------------------------------------------------------------------------------------

def test_pipelined_large_requests_from_a_client_that_reads_nothing_are_not_all_buffered(env):
    up = env.upstream()
    p = fast_proxy(env, up, [ep("/big/{n}")], timeout="30s")
    pid = p.proc.pid
    assert get(p.port, "/big/10")[0] == 200
    base = rss_kib(pid)
    # a few small answers complete first (they fit the socket buffers), then 80 MB of large ones
    pipeline = build("GET", "/big/100000") * 40 + build("GET", "/big/2000000") * 40
    peak = base
    with Client(p.port, rcvbuf=4096) as c:
        c.send(pipeline)  # ~3 KB: fits the socket buffers; nothing is ever read
        wait_for(lambda: len(up.requests) >= 2)
        # observation window: a proxy that buffers the answers takes well under a second for 80 MB
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            peak = max(peak, rss_kib(pid))
            if peak - base > 30 * 1024:
                break
            time.sleep(0.05)
        asked = len(up.requests)
    grown = peak - base
    assert grown < 30 * 1024, f"proxy RSS grew by {grown} KiB for 84 MB of answers nobody reads"
    assert asked < 80, f"the proxy sent all {asked} pipelined requests upstream for a client reading nothing"


# 3 -------------------------------------------------------------------------------------------

def test_malformed_chunked_body_while_a_redis_decision_is_pending_gets_400_and_spares_the_breaker(env,
                                                                                                   redis_server):
    if not redis_server.alive:
        redis_server.start()
    redis_server.resume()
    up = env.upstream()
    p = fast_proxy(env, up, [ep("/echo", method="POST", backend={"extra_config": BREAKER},
                                extra_config={"qos/ratelimit/router/redis": {"connection_name": "m",
                                                                              "max_rate": 100000}})],
                   timeout="2s",
                   extra={"redis": {"connection_pools": [{"name": "m",
                                                          "address": f"127.0.0.1:{redis_server.port}"}]}})
    t0 = time.monotonic()
    with Client(p.port, timeout=5) as c:
        # the head starts the Redis decision; the body, broken, arrives in the same segment
        c.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n")
        r = c.response("POST")
        elapsed = time.monotonic() - t0
        assert r.status == 400, r
        assert elapsed < 1.0, f"400 took {elapsed:.2f}s (endpoint timeout 2s)"
        assert c.closed(2)
    assert up.requests == [], "a broken request reached the backend"
    status, _, body = get(p.port, "/echo", method="POST", body=b"hi")
    assert status == 200, (status, body)  # not 503: the backend's breaker did not open


# 4 -------------------------------------------------------------------------------------------

def test_large_body_of_a_pipelined_404_does_not_stall_the_requests_behind_it(env):
    up = env.upstream()
    p = fast_proxy(env, up, [ep("/slow/{ms}"), ep("/echo")], timeout="5s")
    body = b"b" * 70000  # more than the proxy buffers for a queued request: reading pauses
    with Client(p.port, timeout=3) as c:
        c.send(build("GET", "/slow/300") + build("POST", "/missing", {}, body))
        wait_for(lambda: up.requests)  # /slow is upstream; the POST and its body are queued behind it
        c.send(build("GET", "/echo"))  # read only once the 404 released the POST's buffered body
        statuses = [c.response().status for _ in range(3)]
    assert statuses == [200, 404, 200]


# 5 -------------------------------------------------------------------------------------------

def answer_before_the_body(c: socket.socket, b: RawBackend) -> None:
    """Answer 200 "ok" as soon as a head is in; never read a request body (the socket is held)."""
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    buf = bytearray()
    while True:
        head = read_head(c, buf)
        if not head:
            return
        b.log.append(head.split(b"\r\n", 1)[0])
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if b"content-length" in head.lower() and b"content-length: 0\r\n" not in head.lower():
            b.event.wait(30)  # hold the connection without reading until the test ends
            return


def test_backend_answering_before_a_large_body_gives_200_with_close_and_the_proxy_serves_on(env):
    b = env.backend(answer_before_the_body)
    p = fast_proxy(env, b, [ep("/up", method="POST"), ep("/ok")], timeout="10s",
                   fastproxy={"max_body_size": 100_000_000})
    n = 40_000_000  # far more than the socket buffers between client, proxy and backend
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    try:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % n)
        s.setblocking(False)
        chunk = b"z" * 65536
        sent, got, closed, sending = 0, bytearray(), False, True
        deadline = time.monotonic() + 10
        while not closed and time.monotonic() < deadline:
            r, w, _ = select.select([s], [s] if sending and sent < n else [], [], 0.2)
            if w:
                try:
                    sent += s.send(chunk[: n - sent])
                except (BrokenPipeError, ConnectionResetError):
                    sending = False
                except BlockingIOError:
                    pass
            if r:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    data = b""
                except BlockingIOError:
                    continue
                if not data:
                    closed = True
                got += data
    finally:
        s.close()
    responses, leftover, _ = parse_stream(bytes(got))
    assert [(x.status, x.body) for x in responses] == [(200, b"ok")], (bytes(got[:300]), leftover[:100])
    assert (responses[0].header("connection") or "").lower() == "close"
    assert closed, f"the proxy kept the connection open ({sent} of {n} body bytes accepted)"
    assert sent < n
    t0 = time.monotonic()
    assert get(p.port, "/ok", timeout=3)[0] == 200
    assert time.monotonic() - t0 < 1.0


# 6 -------------------------------------------------------------------------------------------

def reset_second_request(c: socket.socket, b: RawBackend) -> None:
    """Per connection: answer the first complete request, reset on the second. Logs heads/ends."""
    state = {"n": 0, "done": False}

    class P:
        def on_headers_complete(self) -> None:
            b.log.append("head")

        def on_message_complete(self) -> None:
            b.log.append("complete")
            state["n"] += 1
            state["done"] = True

    parser = httptools.HttpRequestParser(P())
    while True:
        data = c.recv(65536)
        if not data:
            return
        parser.feed_data(data)
        if state["done"]:
            state["done"] = False
            if state["n"] == 1:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
                c.close()
                return


def test_put_on_a_stale_pooled_connection_gets_a_quick_502_and_is_not_resent_without_its_body(env):
    b = env.backend(reset_second_request)
    p = fast_proxy(env, b, [ep("/r", method="PUT")], timeout="3s")
    with Client(p.port) as c:
        assert c.request("PUT", "/r", body=b"hello").status == 200
    t0 = time.monotonic()
    with Client(p.port, timeout=5) as c:
        r = c.request("PUT", "/r", body=b"hello")  # goes out on the pooled connection, which resets
        elapsed = time.monotonic() - t0
    assert r.status == 502, r
    assert elapsed < 1.5, f"{r.status} after {elapsed:.2f}s (endpoint timeout 3s)"
    assert len(b.conns) == 1, "the PUT was sent again on a new backend connection"
    assert b.log == ["head", "complete", "head", "complete"]


# 8 -------------------------------------------------------------------------------------------

def partial_then_reset(c: socket.socket, b: RawBackend) -> None:
    """Close-delimited 200: 1000 bytes of body, then (once the test says so) a reset."""
    if not read_head(c, bytearray()):
        return
    b.log.append("request")
    c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"d" * 1000)
    b.event.wait(10)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    c.close()


def test_reset_inside_a_close_delimited_body_is_a_broken_stream_and_a_backend_failure(env):
    b = env.backend(partial_then_reset)
    p = fast_proxy(env, b, [ep("/x", backend={"extra_config": BREAKER})], timeout="5s")
    with Client(p.port, timeout=3) as c:
        c.send(build("GET", "/x"))
        while c.received.count(b"d") < 1000:  # the head and the first 1000 bytes, relayed
            assert c._fill(), f"connection ended early: {bytes(c.received[:200])!r}"
        b.event.set()  # now the backend resets
        with pytest.raises(BrokenStream) as broken:
            c.response()
        assert broken.value.partial.status == 200 and broken.value.partial.framing == "chunked"
        assert not c.received.endswith(b"0\r\n\r\n"), "the cut body was given a clean end"
    status, _, _ = get(p.port, "/x", timeout=3)
    assert status == 503, f"breaker (max_errors 0) not open after a reset mid-body: {status}"
    assert b.log == ["request"]


# 11 ------------------------------------------------------------------------------------------

def test_404_whose_discarded_chunked_body_exceeds_the_limit_is_the_only_answer_and_closes(env):
    up = env.upstream()
    p = fast_proxy(env, up, [ep("/echo")], fastproxy={"max_body_size": 1000})
    body = b"7d0\r\n" + b"a" * 2000 + b"\r\n0\r\n\r\n"
    responses, closed, _ = exchange(
        p.port, b"POST /missing HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + body, timeout=3)
    assert [r.status for r in responses] == [404]
    assert closed
    assert up.requests == []


# 12 ------------------------------------------------------------------------------------------

def test_head_reaches_a_get_backend_as_head_and_its_connection_is_reused(env):
    up = env.upstream()
    p = fast_proxy(env, up, [ep("/head", backend={"method": "GET"}), ep("/g", "/head", method="POST",
                                                                           backend={"method": "GET"})])
    with Client(p.port) as c:
        for _ in range(4):
            r = c.request("HEAD", "/head")
            assert r.status == 200 and r.header("content-length") == "42" and r.body == b""
        r = c.request("POST", "/g", body=b"")  # the backend's method still applies to other requests
        assert r.status == 200 and r.body == b"h" * 42
    assert [q["method"] for q in up.requests] == ["HEAD"] * 4 + ["GET"]
    assert up.opened == 1


# 7 -------------------------------------------------------------------------------------------

def child_pids(pid: int) -> set:
    found = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return found


def health_pid(port: int) -> int:
    return json.loads(get(port, "/__health", timeout=3)[2])["pid"]


def test_worker_replaced_after_a_reload_serves_the_reloaded_routes(env, tmp_path):
    up = env.upstream()
    port = free_port()
    before = config(up, [ep("/a", "/echo")], listen_ip="127.0.0.1")
    p = env.proxy(before, workers=2, port=port)
    workers = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(child_pids(p.proc.pid)))
    p.write_config(config(up, [ep("/a", "/echo"), ep("/b", "/echo")], listen_ip="127.0.0.1"))
    p.signal(signal.SIGHUP)
    # both workers reloaded: every fresh connection (spread over both by SO_REUSEPORT) finds /b
    wait_for(lambda: all(get(port, "/b")[0] == 200 for _ in range(20)), timeout=10)

    victim = sorted(workers)[0]
    os.kill(victim, signal.SIGKILL)
    now = wait_for(lambda: (lambda c: c if len(c) == 2 and victim not in c else None)(child_pids(p.proc.pid)),
                   timeout=10)
    (new,) = now - workers
    wait_for(lambda: health_pid(port) == new, timeout=10)  # the replacement accepts connections
    statuses = [get(port, "/b")[0] for _ in range(20)]
    assert statuses == [200] * 20


def test_a_refused_upload_still_gets_its_answer_while_the_client_keeps_sending(upstream, tmp_path):
    """Lingering close: the proxy answers 413 at once and closes, but keeps reading what the
    client still sends, so the answer is not destroyed by a reset (unread data at close)."""
    import socket as _socket

    from tests.support import Proxy, config, ep, parse_responses

    px = Proxy(config(upstream, [ep("/up", "/echo", method="POST")],
                      extra_config={"fastproxy": {"max_body_size": 1000}}), tmp_path, name="linger.json")
    try:
        with _socket.create_connection(("127.0.0.1", px.port), timeout=5) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n")
            chunk = b"z" * 65536
            for _ in range(32):  # 2 MiB the proxy does not want, sent before reading anything
                s.sendall(chunk)
            s.shutdown(_socket.SHUT_WR)
            data = b""
            while True:
                got = s.recv(65536)
                if not got:
                    break
                data += got
        [(status, headers, _)] = parse_responses(data)
        assert status == 413 and headers["connection"] == ["close"]
    finally:
        px.stop()

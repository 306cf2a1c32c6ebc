"""WebSocket and Upgrade tunnels (SPEC §5) over real sockets: a real WebSocket server (the
`websockets` package) and a raw upgrade backend behind a fastproxy started through its CLI.

What is proven: messages of every size pass both ways on one tunnel; a slow reader pauses the
other side (the proxy's memory stays flat); the handshake passes the route's policies (a client
limit counts it; a refused one never reaches the backend); a refusal by the backend is relayed
and the connection closes; bytes after the handshake are never read as HTTP; the idle timeout,
the drain deadline, `max_message_size`, metrics and the access log line at close; and an
endpoint without the namespace drops `Upgrade` as before.
"""

import json
import re
import signal
import socket
import time
import urllib.request

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.integration.netutil import rss_kib, wait_for
from tests.integration.wsutil import RawUpgradeBackend, WSBackend, frame, handshake, read_head
from tests.support import Proxy, Upstream, free_port, get

WS = {"websocket": {"enable_direct_communication": True}}


@pytest.fixture(scope="module")
def wsb():
    b = WSBackend()
    yield b
    b.stop()


def ws_config(host: str, endpoints: list, **fastproxy) -> dict:
    return {"version": 3, "output_encoding": "no-op", "host": [host], "endpoints": endpoints,
            "extra_config": {"fastproxy": {"admin": {"port": fastproxy.pop("admin_port", 0)}, **fastproxy}}}


def ws_ep(path: str, url_pattern: str = "/echo", ws: dict = None, **kw) -> dict:
    return {"endpoint": path, "backend": [{"url_pattern": url_pattern}],
            "extra_config": {"websocket": {"enable_direct_communication": True, **(ws or {})}, **kw.pop("extra", {})},
            **kw}


@pytest.fixture(scope="module")
def proxy(wsb, tmp_path_factory):
    admin = free_port()
    p = Proxy(ws_config(wsb.url, [ws_ep("/ws"), ws_ep("/flood/{n}", "/flood/{n}"), ws_ep("/refuse", "/refuse")],
                        admin_port=admin, access_log=True), tmp_path_factory.mktemp("ws"))
    p.admin = admin
    yield p
    p.stop()


def metrics(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_text_and_a_1_mib_binary_message_pass_both_ways(proxy, wsb):
    with connect(f"ws://127.0.0.1:{proxy.port}/ws", max_size=None, compression=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        big = bytes(range(256)) * 4096
        ws.send(big)
        assert ws.recv(timeout=5) == big
    assert wsb.handshakes[-1]["Upgrade"].lower() == "websocket"


def test_many_messages_on_one_tunnel_in_order(proxy):
    with connect(f"ws://127.0.0.1:{proxy.port}/ws", compression=None) as ws:
        for i in range(2000):
            ws.send(f"message {i}")
        for i in range(2000):
            assert ws.recv(timeout=5) == f"message {i}"


def test_the_handshake_reaches_the_backend_with_its_websocket_headers(proxy, wsb):
    with connect(f"ws://127.0.0.1:{proxy.port}/ws", subprotocols=["chat"], compression=None,
                 additional_headers={"X-Secret": "no"}) as ws:
        ws.send("x")
        ws.recv(timeout=5)
    h = wsb.handshakes[-1]
    assert h["Sec-WebSocket-Version"] == "13" and h["Sec-WebSocket-Key"]
    assert h["Sec-WebSocket-Protocol"] == "chat"
    assert h["Connection"].lower() == "upgrade"
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert "X-Secret" not in h  # not in input_headers: not forwarded, as any other route


def test_a_slow_reader_pauses_the_backend_and_memory_stays_flat(proxy, wsb):
    pid = proxy.proc.pid
    base = rss_kib(pid)
    sent_before = wsb.sent
    with connect(f"ws://127.0.0.1:{proxy.port}/flood/200", max_size=None, compression=None) as ws:
        time.sleep(1.0)  # the client reads nothing: the backend must stall far short of 200 MiB
        stalled = wsb.sent - sent_before
        assert stalled < 60, stalled
        assert rss_kib(pid) - base < 24 * 1024
        got = 0
        while got < 200:
            assert len(ws.recv(timeout=10)) == 1 << 20
            got += 1
    assert wsb.sent - sent_before == 200
    assert rss_kib(pid) - base < 24 * 1024


def test_a_refused_upgrade_is_relayed_as_a_normal_response_and_the_connection_closes(proxy):
    req, _ = handshake("/refuse")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(req + b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")  # never read as a request
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    assert b"connection: close" in head.lower()
    assert body == b"no websocket for you\n"
    assert data.count(b"HTTP/1.1") == 1


def test_bytes_after_the_handshake_go_through_the_tunnel_not_the_http_parser(tmp_path):
    raw_b = RawUpgradeBackend()
    p = Proxy(ws_config(raw_b.url, [ws_ep("/ws", "/")]), tmp_path)
    try:
        req, accept = handshake()
        early = b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(req + early)
            head, rest = read_head(s)
            assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
            assert b"Sec-WebSocket-Accept: " + accept in head
            assert b"upgrade: websocket" in head.lower() and b"connection: upgrade" in head.lower()
            while len(rest) < len(early):
                rest += s.recv(65536)
            assert rest == early  # echoed by the backend: it went through as bytes
            s.sendall(b"\x00\xffnot http at all\r\n\r\n")
            back = b""
            while len(back) < 19:
                back += s.recv(65536)
            assert back == b"\x00\xffnot http at all\r\n\r\n"
        assert bytes(raw_b.received[0]).endswith(early + b"\x00\xffnot http at all\r\n\r\n")
    finally:
        p.stop()
        raw_b.stop()


def test_a_101_naming_a_protocol_the_client_did_not_ask_for_is_a_502(tmp_path):
    raw_b = RawUpgradeBackend(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
    p = Proxy(ws_config(raw_b.url, [ws_ep("/ws", "/")]), tmp_path)
    try:
        req, _ = handshake()
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(req)
            head, _ = read_head(s)
        assert head.startswith(b"HTTP/1.1 502")
    finally:
        p.stop()
        raw_b.stop()


def test_the_handshake_is_counted_by_a_client_rate_limit_and_a_refused_one_spends_nothing(wsb, tmp_path):
    limit = {"qos/ratelimit/router": {"client_max_rate": 1, "every": "1h", "strategy": "ip"}}
    p = Proxy(ws_config(wsb.url, [ws_ep("/ws", extra=limit)]), tmp_path)
    try:
        before = wsb.connections
        with connect(f"ws://127.0.0.1:{p.port}/ws", compression=None) as ws:
            ws.send("one")
            assert ws.recv(timeout=5) == "one"
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{p.port}/ws", compression=None)
        assert info.value.response.status_code == 429
        assert wsb.connections - before == 1  # the refused handshake never reached the backend
    finally:
        p.stop()


def test_idle_tunnel_closes_after_the_namespace_timeout(wsb, tmp_path):
    p = Proxy(ws_config(wsb.url, [ws_ep("/ws", ws={"timeout": "1s"})]), tmp_path)
    try:
        with connect(f"ws://127.0.0.1:{p.port}/ws", compression=None, close_timeout=1) as ws:
            ws.send("a")
            assert ws.recv(timeout=5) == "a"
            t0 = time.monotonic()
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=5)
            waited = time.monotonic() - t0
        assert 0.8 < waited < 3.0, waited
    finally:
        p.stop()


def test_sigterm_closes_open_tunnels_by_the_drain_deadline(wsb, tmp_path):
    p = Proxy(ws_config(wsb.url, [ws_ep("/ws")], drain_timeout="1s"), tmp_path)
    try:
        with connect(f"ws://127.0.0.1:{p.port}/ws", compression=None, close_timeout=1) as ws:
            ws.send("a")
            assert ws.recv(timeout=5) == "a"
            t0 = time.monotonic()
            p.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=5)
            closed_after = time.monotonic() - t0
        assert p.proc.wait(5) == 0
        assert 0.7 < closed_after < 3.0, closed_after  # held until the deadline, not beyond
    finally:
        p.stop()


def test_metrics_count_the_open_tunnel_and_its_bytes_and_the_access_log_line_comes_at_close(proxy):
    before = metrics(proxy.admin)
    with connect(f"ws://127.0.0.1:{proxy.port}/ws", compression=None) as ws:
        ws.send(b"z" * 5000)
        assert ws.recv(timeout=5) == b"z" * 5000
        during = metrics(proxy.admin)
        assert metric(during, "fastproxy_tunnels_open") == metric(before, "fastproxy_tunnels_open") + 1
    wait_for(lambda: metric(metrics(proxy.admin), "fastproxy_tunnels_open") == metric(before, "fastproxy_tunnels_open"))
    after = metrics(proxy.admin)
    up = 'fastproxy_tunnel_bytes_total{direction="up"}'
    down = 'fastproxy_tunnel_bytes_total{direction="down"}'
    assert metric(after, up) - metric(before, up) >= 5000
    assert metric(after, down) - metric(before, down) >= 5000
    assert metric(after, 'fastproxy_requests_total{route="/ws",status="101"}') >= 1

    def logged():
        lines = [json.loads(line) for line in proxy.stderr().splitlines() if line.startswith("{")]
        return [r for r in lines if r.get("status") == 101 and r.get("bytes_up", 0) >= 5000]
    rec = wait_for(logged)[-1]
    assert rec["route"] == "/ws" and rec["bytes_down"] >= 5000 and rec["closed"]


def test_a_message_over_max_message_size_closes_the_tunnel_with_1009(tmp_path):
    raw_b = RawUpgradeBackend()
    p = Proxy(ws_config(raw_b.url, [ws_ep("/ws", "/", ws={"max_message_size": 1024})]), tmp_path)
    try:
        req, _ = handshake()
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(req)
            head, rest = read_head(s)
            assert head.startswith(b"HTTP/1.1 101")
            small = frame(b"a" * 1000)
            s.sendall(small)  # within the limit: echoed (the raw backend echoes the masked frame)
            while len(rest) < len(small):
                rest += s.recv(65536)
            assert rest == small
            # a message of two fragments, 600 + 600 bytes: over 1024 only as a whole
            s.sendall(frame(b"b" * 600, opcode=2, fin=False) + frame(b"c" * 600, opcode=0))
            got = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        assert got.endswith(b"\x88\x02\x03\xf1")  # close, 1009 (message too big)
        assert b"c" * 600 not in bytes(raw_b.received[0])  # the breaking fragment never reached it
    finally:
        p.stop()
        raw_b.stop()


def test_without_the_namespace_upgrade_is_dropped_and_the_request_is_a_plain_one(tmp_path):
    u = Upstream()
    p = Proxy({"version": 3, "output_encoding": "no-op", "host": [u.url],
               "endpoints": [{"endpoint": "/plain", "backend": [{"url_pattern": "/x"}]}]}, tmp_path)
    try:
        status, headers, _ = get(p.port, "/plain", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        assert status == 200
        sent = bytes(u.connections[-1]).lower()
        assert b"upgrade" not in sent
    finally:
        p.stop()
        u.stop()


def test_a_plain_request_on_a_websocket_endpoint_is_proxied_as_http(tmp_path):
    u = Upstream()
    p = Proxy(ws_config(u.url, [ws_ep("/ws", "/x")]), tmp_path)
    try:
        assert get(p.port, "/ws")[0] == 200
        assert get(p.port, "/ws")[0] == 200
    finally:
        p.stop()
        u.stop()


def test_a_closed_tunnel_whose_client_reads_nothing_gives_its_connection_back(wsb, tmp_path):
    """The backend floods, the client reads nothing: flow control stops the bytes, the idle
    timeout closes the tunnel, and the connection (its place under max_connections) is gone
    within the close grace, not held while the unread writes wait."""
    admin = free_port()
    p = Proxy(ws_config(wsb.url, [ws_ep("/flood/{n}", "/flood/{n}", ws={"timeout": "1s"})], admin_port=admin),
              tmp_path)
    try:
        req, _ = handshake("/flood/100")
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(req)
        wait_for(lambda: metric(metrics(admin), "fastproxy_tunnels_open") == 1, 5)
        t0 = time.monotonic()
        wait_for(lambda: metric(metrics(admin), "fastproxy_tunnels_open") == 0, 5)
        wait_for(lambda: metric(metrics(admin), "fastproxy_connections_open") == 0, 6)
        assert time.monotonic() - t0 < 6
        s.close()
    finally:
        p.stop()

"""Defects found by adversarial testing, each over real sockets on 127.0.0.1: what a client can
slip past the head rules (trailers merged into the head, optional whitespace, underscores in
header names, a repeated User-Agent), and how the proxy ends a request the client or the backend
leaves broken. The proxy's backends record every byte they receive.
"""

import itertools
import json
import socket
import time

import pytest

from tests.integration.netutil import Client, RecordingUpstream, exchange, upstream_bytes, wait_for
from tests.support import Proxy, config, ep


SEQ = itertools.count()  # markers unique within the module's backend


class Env:
    pass


class MisbehavingUpstream(RecordingUpstream):
    """/te/<codings>: a chunked answer under `Transfer-Encoding: <codings>` (`+` for `, `)."""

    async def answer(self, proto, req):  # type: ignore[override]
        path = req["url"].split("?")[0]
        if path.startswith("/te/"):
            codings = path[4:].replace("+", ", ").encode()
            proto.transport.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + codings + b"\r\n\r\n"
                                  b"5\r\nhello\r\n0\r\n\r\n")
        else:
            await super().answer(proto, req)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    e.u = MisbehavingUpstream()
    e.fresh = RecordingUpstream()  # one request only: its pool is empty, so that one waits to connect
    star = {"input_headers": ["*"]}
    endpoints = [
        ep("/echo", "/echo", **star), ep("/echo", "/echo", method="POST", **star),
        ep("/echo/{x}", "/echo/{x}", method="POST", **star),
        ep("/fresh", "/echo/fresh", method="POST", backend={"host": [e.fresh.url]}, **star),
        ep("/keyed", "/echo/keyed", extra_config={"qos/ratelimit/router": {
            "client_max_rate": 1, "client_capacity": 1, "every": "1h", "strategy": "header", "key": "X-Api-Key"}}),
        ep("/te/{codings}", "/te/{codings}"),
        ep("/legacy", "/echo/legacy", input_headers=["X_Legacy", "Content_Length", "transfer_encoding"]),
        ep("/guarded", "/echo/guarded", input_headers=["User-Agent", "X-Padded"],
           extra_config={"security/bot-detector": {"deny": ["BadBot/1.0"]}}),
    ]
    cfg = config(e.u, endpoints, listen_ip="127.0.0.1", timeout="2s",
                 extra_config={"fastproxy": {"read_header_timeout": "1s", "idle_timeout": "2s",
                                             "max_body_size": 64 * 1024}})
    e.proxy = Proxy(cfg, tmp_path_factory.mktemp("hardening"))
    e.port = e.proxy.port
    yield e
    e.proxy.stop()
    e.u.stop()
    e.fresh.stop()


def echoed(r) -> dict:
    assert r.status == 200, r
    return json.loads(r.body)


def header_names(req: dict) -> set:
    return {n.lower() for n, _ in req["headers"]}


# (a Content-Length trailer is refused by llhttp itself: 400)
TRAILERS = b"0\r\nX-Injected: 1\r\nHost: evil.example\r\nX-Geoip: XX\r\n\r\n"


def chunked_post(path: bytes, trailers: bytes = TRAILERS) -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n" + trailers)


# -- trailers (RFC 9110 §6.5.1: a recipient MUST NOT merge them into the header section) -------

def test_trailers_of_a_pipelined_chunked_request_never_become_headers(env):
    before = len(env.u.requests)
    with Client(env.port) as c:
        # the first request takes the backend connection; the chunked one waits in the queue
        # while its trailers are parsed
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n" + chunked_post(b"/echo/trailers") +
               b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
        first, second, third = (echoed(c.response()) for _ in range(3))
    assert second["url"] == "/echo/trailers" and second["body"] == "hello"
    for req in (first, second, third):
        assert not header_names(req) & {"x-injected", "x-geoip"}, req
        assert dict((n.lower(), v) for n, v in req["headers"]).get("x-forwarded-host") == "a", req
    raw = b"".join(bytes(c) for c in list(env.u.connections))
    assert b"X-Injected" not in raw and b"evil.example" not in raw and b"X-Geoip" not in raw
    assert len(env.u.requests) == before + 3


def test_trailers_of_a_request_waiting_for_a_backend_connection_never_become_headers(env):
    assert not env.fresh.requests  # nothing pooled: the request waits for the connect
    r = exchange(env.port, chunked_post(b"/fresh").replace(b"Host: a\r\n", b"Host: a\r\nConnection: close\r\n"))
    responses, closed, _ = r
    assert [x.status for x in responses] == [200] and closed
    req = json.loads(responses[0].body)
    assert req["body"] == "hello"
    assert not header_names(req) & {"x-injected", "x-geoip"}, req
    raw = upstream_bytes(env.fresh)
    assert b"X-Injected" not in raw and b"evil.example" not in raw and b"X-Geoip" not in raw, raw


# -- optional whitespace (RFC 9110 §5.5: OWS around a field value is not part of it) ----------

def test_trailing_whitespace_does_not_make_a_new_client_of_a_header_keyed_limit(env):
    statuses = []
    for value in ("abc", "abc ", "abc\t", "abc \t ", " abc", "\tabc  "):
        with Client(env.port) as c:
            c.send(b"GET /keyed HTTP/1.1\r\nHost: a\r\nX-Api-Key: " + value.encode() + b"\r\n\r\n")
            statuses.append(c.response().status)
    assert statuses == [200] + [429] * 5


@pytest.mark.parametrize("ua", [b"BadBot/1.0", b"BadBot/1.0 ", b"BadBot/1.0\t", b"  BadBot/1.0 \t"])
def test_denied_user_agent_is_refused_whatever_whitespace_surrounds_it(env, ua):
    with Client(env.port) as c:
        c.send(b"GET /guarded HTTP/1.1\r\nHost: a\r\nUser-Agent: " + ua + b"\r\n\r\n")
        assert c.response().status == 403


def test_header_values_are_forwarded_without_surrounding_whitespace(env):
    with Client(env.port) as c:
        c.send(b"GET /guarded HTTP/1.1\r\nHost: a \t\r\nUser-Agent: Good/1 \r\nX-Padded:  in  side \t\r\n\r\n")
        req = echoed(c.response())
    headers = {n.lower(): v for n, v in req["headers"]}
    assert headers["x-padded"] == "in  side"
    assert headers["user-agent"] == "Good/1"
    assert headers["x-forwarded-host"] == "a"


# -- slowloris at the connection cap --------------------------------------------------------------

def test_slow_heads_at_the_connection_cap_do_not_starve_a_new_client(tmp_path):
    u = RecordingUpstream()
    cap = 20
    p = Proxy(config(u, [ep("/echo")], listen_ip="127.0.0.1",
                     extra_config={"fastproxy": {"max_connections": cap, "read_header_timeout": "10s",
                                                 "idle_timeout": "10s"}}), tmp_path)
    slow = []
    try:
        for _ in range(cap):  # each one served once (so it is counted), then dripping a head
            c = Client(p.port, timeout=3)
            slow.append(c)
            assert c.request("GET", "/echo").status == 200
            c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Drip: ")
        t0 = time.monotonic()
        with Client(p.port, timeout=3) as c:
            assert c.request("GET", "/echo").status == 200
        assert time.monotonic() - t0 < 1.0
        assert slow[0].closed(timeout=1.0)  # the oldest slow head made room
        for c in slow[1:]:  # the others are still waiting for their heads to end
            c.sock.settimeout(0)
            try:
                assert c.sock.recv(1) != b""
            except BlockingIOError:
                pass
    finally:
        for c in slow:
            c.close()
        p.stop()
        u.stop()


# -- one User-Agent: the value judged is the value forwarded --------------------------------------

@pytest.mark.parametrize("first,second", [(b"Good/1", b"BadBot/1.0"), (b"BadBot/1.0", b"Good/1")])
def test_two_user_agents_are_refused_before_any_policy(env, first, second):
    before = len(env.u.requests)
    responses, closed, _ = exchange(env.port, b"GET /guarded HTTP/1.1\r\nHost: a\r\nUser-Agent: " + first +
                                    b"\r\nUser-Agent: " + second + b"\r\n\r\n")
    assert [r.status for r in responses] == [400] and closed
    assert len(env.u.requests) == before


# -- underscores in header names (CGI/WSGI backends read `_` as `-`) -----------------------------

def test_header_names_with_underscores_are_never_forwarded_by_star(env):
    with Client(env.port) as c:
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\nContent_Length: 5\r\n"
               b"X_Custom: 1\r\nX-Dashed: 1\r\n\r\n")
        req = echoed(c.response())
    names = header_names(req)
    assert "x-dashed" in names
    assert not {n for n in names if "_" in n}, names


def test_an_explicit_input_header_with_an_underscore_passes_unless_it_spells_a_framing_header(env):
    with Client(env.port) as c:
        c.send(b"GET /legacy HTTP/1.1\r\nHost: a\r\nX_Legacy: 1\r\nContent_Length: 5\r\n"
               b"Transfer_Encoding: chunked\r\n\r\n")
        req = echoed(c.response())
    names = header_names(req)
    assert "x_legacy" in names
    assert "content_length" not in names and "transfer_encoding" not in names, names


# -- framing of backend responses ----------------------------------------------------------------

@pytest.mark.parametrize("codings", ["chunked+chunked", "gzip", "chunked+gzip", "gzip+chunked"])
def test_backend_transfer_encoding_other_than_one_final_chunked_is_502(env, codings):
    # gzip+chunked: only the chunking would be undone, the client would get gzip bytes unlabelled
    with Client(env.port) as c:
        r = c.request("GET", f"/te/{codings}")
        assert r.status == 502 and r.body == b""


@pytest.mark.parametrize("codings", ["chunked"])
def test_backend_chunked_answer_is_relayed(env, codings):
    with Client(env.port) as c:
        r = c.request("GET", f"/te/{codings}")
        assert r.status == 200 and r.body == b"hello"


# -- a client that half-closes inside a request body -----------------------------------------------

@pytest.mark.parametrize("framing,body", [
    (b"Content-Length: 40", b"half-closed-body"),  # 16 of 40 bytes
    (b"Transfer-Encoding: chunked", b"28\r\nhalf-closed-body"),  # inside a 40-byte chunk
    (b"Transfer-Encoding: chunked", b"10\r\nhalf-closed-body\r\n"),  # between chunks
])
def test_half_close_inside_a_body_closes_both_connections_and_never_completes_upstream(env, framing, body):
    u = env.u
    requests_before = len(u.requests)
    closed_before = u.closed
    marker = b"half-closed-%04d" % next(SEQ)  # 16 bytes, unique to this case
    body = body.replace(b"half-closed-body", marker)
    with socket.create_connection(("127.0.0.1", env.port), timeout=3) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\n" + framing + b"\r\n\r\n" + body)
        wait_for(lambda: marker in upstream_bytes(u), timeout=3)  # head and half the body went up
        busy = u.closed
        t0 = time.monotonic()
        s.shutdown(socket.SHUT_WR)
        out = bytearray()
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        elapsed = time.monotonic() - t0
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert elapsed < 1.0, elapsed
    wait_for(lambda: u.closed > busy, timeout=1.0)  # the backend connection was dropped too
    assert u.closed > closed_before
    assert len(u.requests) == requests_before  # the backend never parsed a complete request


# -- a chunked body that outgrows max_body_size after its head went upstream -----------------------

def test_chunked_body_over_the_limit_after_the_head_went_up_aborts_the_backend_connection(env):
    u = env.u
    requests_before = len(u.requests)
    marker = b"over-limit-%05d" % next(SEQ)
    with Client(env.port) as c:
        c.send(b"POST /echo/" + marker + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nfirst\r\n")
        wait_for(lambda: b"first" in upstream_bytes(u) and marker in upstream_bytes(u), timeout=3)
        busy, resets = u.closed, u.resets
        big = 64 * 1024  # with the first 5 bytes: over max_body_size
        try:
            c.send(b"%x\r\n%s\r\n" % (big, b"z" * big))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        assert r.status == 413
        assert c.closed()
    wait_for(lambda: u.closed > busy, timeout=1.0)  # the backend connection was aborted
    assert u.resets > resets  # with a reset: the backend discards the request
    assert len(u.requests) == requests_before  # never a complete request upstream
    conn = next(bytes(raw) for raw in list(u.connections) if marker in raw)
    assert not conn.endswith(b"0\r\n\r\n")

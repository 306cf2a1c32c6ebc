"""The core proxy over real sockets (SPEC §2, §4): keep-alive, pipelining, bodies both ways,
framing regenerated, hop-by-hop headers, forwarding rules, backend failures, limits, timeouts.

One proxy (real CLI, 127.0.0.1) in front of recording backends for the module; a few tests that
need other limits start their own. Timeouts are configured short so nothing waits long.
"""

import json
import re
import socket
import threading
import time

import pytest

from tests.integration.netutil import BrokenStream, Client, RecordingUpstream, build, rss_kib, upstream_bytes, wait_for
from tests.support import Proxy, config, ep, free_port, get

MAX_BODY = 1024 * 1024


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env()
    e.u = RecordingUpstream()  # the default backend
    e.ua = RecordingUpstream()  # two hosts of one balanced backend
    e.ub = RecordingUpstream()
    e.upool = RecordingUpstream()  # only the pool-reuse test talks to it
    e.dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    endpoints = [
        ep("/echo"), ep("/echo", method="POST"),
        ep("/h/star", "/echo", input_headers=["*"]),
        ep("/h/star", "/echo", method="POST", input_headers=["*"]),
        ep("/h/named", "/echo", input_headers=["X-Alpha", "authorization"]),
        ep("/q/list", "/echo", input_query_strings=["a", "b"]),
        ep("/q/star", "/echo", input_query_strings=["*"]),
        ep("/", "/echo", input_query_strings=["*"]),
        ep("/users/{id}/posts/{post}", "/echo/user/{id}/post/{post}"),
        ep("/files/*", "/echo/static"),
        ep("/big/{n}"), ep("/chunked/{n}"), ep("/closedelim/{n}"), ep("/status/{n}"), ep("/slow/{ms}"),
        ep("/head"), ep("/headers"), ep("/interim"),
        ep("/hang", timeout="300ms"),
        ep("/reset"), ep("/truncate"), ep("/cut-chunked"), ep("/lie"), ep("/garbage"),
        ep("/refused", "/echo", backend={"host": [e.dead]}),
        ep("/rr/{n}", "/echo/{n}", backend={"host": [e.ua.url, e.ub.url]}),
        ep("/failover", "/echo/failover", backend={"host": [e.dead, e.ua.url]}),
        ep("/twice/reset", "/reset", method="POST", backend={"host": [e.ua.url, e.ub.url]}),
        ep("/pooled", "/echo", backend={"host": [e.upool.url]}),
    ]
    cfg = config(e.u, endpoints, listen_ip="127.0.0.1", timeout="2s",
                 extra_config={"fastproxy": {"read_header_timeout": "300ms", "idle_timeout": "500ms",
                                             "max_body_size": MAX_BODY}})
    e.proxy = Proxy(cfg, tmp_path_factory.mktemp("proxy"))
    e.port = e.proxy.port
    yield e
    e.proxy.stop()
    for u in (e.u, e.ua, e.ub, e.upool):
        u.stop()


def echoed(r) -> dict:
    assert r.status == 200, r
    return json.loads(r.body)


def hdrs(req: dict) -> dict:
    out: dict = {}
    for n, v in req["headers"]:
        out.setdefault(n.lower(), []).append(v)
    return out


def upstream_head(u, marker: bytes) -> bytes:
    """The raw request head the backend received for the request carrying `marker`."""
    heads = [m.group(0) for m in HEAD_RE.finditer(upstream_bytes(u)) if marker in m.group(0)]
    assert len(heads) == 1, f"{marker!r} reached the backend {len(heads)} times"
    return heads[0]


HEAD_RE = re.compile(rb"(?:GET|POST|HEAD|PUT|DELETE) /\S* HTTP/1\.1\r\n(?:[^\r\n]+\r\n)*\r\n")


# -- connections ------------------------------------------------------------------------------

def test_keep_alive_serves_several_requests_on_one_connection(env):
    with Client(env.port) as c:
        for i in range(5):
            r = c.request("GET", f"/status/20{i}")
            assert r.status == 200 + i
            assert r.header("connection") is None
        assert c.request("GET", "/echo").status == 200
        assert not c.closed(0.05)


def test_http10_client_keeps_the_connection_only_when_asked(env):
    with Client(env.port) as c:
        r = c.request("GET", "/echo", {"Connection": "keep-alive"}, version="1.0")
        assert r.status == 200 and r.header("connection").lower() == "keep-alive"
        r = c.request("GET", "/echo", version="1.0")
        assert r.status == 200 and r.header("connection").lower() == "close"
        assert c.closed()


def test_connection_close_from_client_closes_after_the_answer_and_ignores_what_follows(env):
    before = len(env.u.requests)
    with Client(env.port) as c:
        c.send(build("GET", "/echo", {"Connection": "close"}) + build("GET", "/users/after/posts/close"))
        assert c.response().status == 200
        assert c.closed()
    assert len(env.u.requests) == before + 1
    assert b"/echo/user/after" not in upstream_bytes(env.u)


def test_request_then_half_close_is_still_answered(env):
    with Client(env.port) as c:
        c.send(build("GET", "/echo"))
        c.sock.shutdown(socket.SHUT_WR)
        assert c.response().status == 200
        assert c.closed()


def test_pipelined_requests_are_answered_in_order(env):
    with Client(env.port) as c:
        c.send(build("GET", "/slow/150")
               + build("GET", "/status/201")
               + build("POST", "/echo", {"Content-Type": "text/plain"}, b"first body")
               + build("POST", "/echo", {"Transfer-Encoding": "chunked"}, b"6\r\nsecond\r\n5\r\n body\r\n0\r\n\r\n")
               + build("GET", "/status/202"))
        r = c.response()
        assert (r.status, r.body) == (200, b"slow")
        assert c.response().status == 201
        assert echoed(c.response())["body"] == "first body"
        assert echoed(c.response())["body"] == "second body"
        assert c.response().status == 202
        assert not c.closed(0.05)


def test_long_pipeline_queued_behind_a_backend_request_is_answered_in_full(env):
    n = 1000
    with Client(env.port) as c:
        c.send(build("GET", "/slow/100") + build("GET", "/nowhere") * n + build("GET", "/status/201"))
        assert c.response().body == b"slow"
        for _ in range(n):
            assert c.response().status == 404
        assert c.response().status == 201


def test_pipelined_burst_spanning_many_reads_is_answered_in_full(env):
    # heads cut across read boundaries must not be mistaken for one oversized head
    n = 5000
    burst = b"GET /nowhere HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"p" * 70 + b"\r\n\r\n"
    with Client(env.port) as c:
        sender = threading.Thread(target=c.send, args=(burst * n,), daemon=True)
        sender.start()
        for _ in range(n):
            assert c.response().status == 404
        sender.join(5)


def test_pipelined_flood_behind_a_slow_request_keeps_memory_bounded(env):
    pid = env.proxy.proc.pid
    base = rss_kib(pid)
    flood = b"GET /nowhere HTTP/1.1\r\nHost: a\r\n\r\n" * 300_000  # 9 MB of tiny requests
    with Client(env.port) as c:
        c.send(build("GET", "/slow/1500"))
        c.sock.settimeout(1.0)
        try:
            c.sock.sendall(flood)  # a proxy that reads it all queues 300k requests
        except (TimeoutError, OSError):
            pass  # the proxy stopped reading: the queue is bounded
        grown = rss_kib(pid) - base
    assert grown < 40 * 1024, f"proxy RSS grew by {grown} KiB with a pipelined flood queued"


def test_pipelined_requests_with_large_bodies_stay_in_step(env):
    bodies = [bytes([65 + i]) * (100_000 + i) for i in range(3)]
    with Client(env.port) as c:
        c.send(b"".join(build("POST", "/echo", {}, b) for b in bodies))
        for b in bodies:
            assert echoed(c.response())["body"].encode() == b


# -- request bodies -----------------------------------------------------------------------------

def test_content_length_body_is_streamed_up_with_regenerated_length(env):
    body = bytes(range(256)) * 1200  # 300 KiB
    with Client(env.port) as c:
        c.send(build("POST", "/echo", {"content-length": str(len(body)), "Content-Type": "x/cl-stream"}))
        for i in range(0, len(body), 50_000):
            c.send(body[i:i + 50_000])
        req = echoed(c.response())
    assert req["body"].encode("latin-1") == body
    head = upstream_head(env.u, b"x/cl-stream")
    assert b"Content-Length: %d\r\n" % len(body) in head
    assert b"content-length" not in head and b"Transfer-Encoding" not in head


def test_chunked_body_is_rechunked_without_extensions_or_trailers(env):
    chunks = (b"5;name=value\r\nhello\r\n" b"1\r\n \r\n" b"A\r\nworld-0123\r\n"
              b"0\r\nX-Trailer: smuggled\r\n\r\n")
    with Client(env.port) as c:
        c.send(build("POST", "/echo", {"Transfer-Encoding": "chunked", "Content-Type": "x/rechunk"}))
        c.send(chunks[:9])
        c.send(chunks[9:])
        req = echoed(c.response())
    assert req["body"] == "hello world-0123"
    head = upstream_head(env.u, b"x/rechunk")
    assert b"Transfer-Encoding: chunked\r\n" in head and b"Content-Length" not in head
    data = upstream_bytes(env.u)
    rest = data[data.find(head) + len(head):]
    assert b"name=value" not in rest and b"X-Trailer" not in rest and b"smuggled" not in data
    assert rest.find(b"0\r\n\r\n") >= 0


def test_post_without_body_gets_content_length_zero_upstream(env):
    with Client(env.port) as c:
        req = echoed(c.request("POST", "/echo", {"Content-Type": "x/empty-post"}))
    assert req["body"] == ""
    assert b"Content-Length: 0\r\n" in upstream_head(env.u, b"x/empty-post")


def test_expect_100_continue_gets_100_then_the_final_answer(env):
    with Client(env.port) as c:
        c.send(build("POST", "/echo", {"Expect": "100-continue", "Content-Length": "11",
                                       "Content-Type": "x/expect"}))
        interim = c.response()
        assert interim.status == 100
        c.send(b"hello there")
        req = echoed(c.response())
    assert req["body"] == "hello there"
    assert b"Expect" not in upstream_head(env.u, b"x/expect")


def test_expect_100_continue_with_a_body_too_large_gets_413_without_100(env):
    with Client(env.port) as c:
        c.send(build("POST", "/echo", {"Expect": "100-continue", "Content-Length": str(MAX_BODY + 1)}))
        r = c.response()
        assert r.status == 413
        assert c.closed()


# -- response bodies ----------------------------------------------------------------------------

def test_content_length_response_keeps_its_length(env):
    with Client(env.port) as c:
        r = c.request("GET", "/big/5000")
        assert (r.framing, r.header("content-length"), r.body) == ("length", "5000", b"x" * 5000)


def test_chunked_response_is_relayed_chunked(env):
    with Client(env.port) as c:
        r = c.request("GET", "/chunked/5000")
        assert r.framing == "chunked" and r.body == b"c" * 5000
        assert c.request("GET", "/status/200").status == 200


def test_close_delimited_response_is_chunked_to_an_http11_client_and_the_connection_kept(env):
    with Client(env.port) as c:
        r = c.request("GET", "/closedelim/3000")
        assert r.framing == "chunked" and r.body == b"d" * 3000
        assert r.header("connection") is None
        assert c.request("GET", "/status/200").status == 200


def test_close_delimited_response_is_close_delimited_to_an_http10_client(env):
    with Client(env.port) as c:
        r = c.request("GET", "/closedelim/3000", {"Connection": "keep-alive"}, version="1.0")
        assert r.framing == "close" and r.body == b"d" * 3000
        assert r.header("connection").lower() == "close"


def test_chunked_response_to_an_http10_client_is_close_delimited(env):
    with Client(env.port) as c:
        r = c.request("GET", "/chunked/3000", version="1.0")
        assert r.framing == "close" and r.body == b"c" * 3000
        assert r.header("transfer-encoding") is None


def test_large_response_to_a_slow_reader_is_flow_controlled(env):
    size = 20 * 1024 * 1024
    pid = env.proxy.proc.pid
    base = rss_kib(pid)
    peak = base
    with Client(env.port, timeout=10, rcvbuf=65536) as c:
        c.send(build("GET", f"/big/{size}"))
        got = 0
        reads = 0
        while got < size + 100:
            data = c.sock.recv(32768)
            if not data:
                break
            got += len(data)
            reads += 1
            if reads % 20 == 0:
                peak = max(peak, rss_kib(pid))
            time.sleep(0.002)  # a slow reader
            if got > size:
                break
        assert got >= size
    # The proxy held a small window of the 20 MiB body, never the body itself.
    assert peak - base < 8 * 1024, f"proxy RSS grew by {peak - base} KiB while relaying 20 MiB"


def test_head_has_no_body_and_keeps_content_length(env):
    with Client(env.port) as c:
        r = c.request("HEAD", "/head")
        assert r.status == 200 and r.header("content-length") == "42"
        # the backend wrongly sends a body to HEAD here: none of it may reach the client
        r = c.request("HEAD", "/big/64")
        assert r.status == 200 and r.header("content-length") == "64"
        r = c.request("GET", "/head")
        assert r.body == b"h" * 42
        assert c.request("GET", "/status/203").status == 203


def test_204_and_304_carry_no_body(env):
    with Client(env.port) as c:
        r = c.request("GET", "/status/204")
        assert r.status == 204 and r.header("transfer-encoding") is None and r.body == b""
        r = c.request("GET", "/status/304")
        assert r.status == 304 and r.header("transfer-encoding") is None and r.body == b""
        assert c.request("GET", "/status/200").status == 200


def test_backend_interim_responses_are_not_relayed(env):
    with Client(env.port) as c:
        r = c.request("GET", "/interim")
        assert (r.status, r.body) == (200, b"final")
        assert c.request("GET", "/status/200").status == 200


# -- headers ------------------------------------------------------------------------------------

def test_hop_by_hop_response_headers_are_removed_and_set_cookies_kept(env):
    with Client(env.port) as c:
        r = c.request("GET", "/headers")
        assert r.status == 200 and r.body == b"h"
        names = r.names()
        for gone in ("x-secret", "keep-alive", "proxy-connection", "trailer", "upgrade", "connection"):
            assert gone not in names, r.headers
        assert r.header("x-kept") == "yes"
        assert r.all("set-cookie") == ["a=1", "b=2"]
        assert c.request("GET", "/status/200").status == 200


def test_hop_by_hop_request_headers_are_removed(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/h/star", {
            "Connection": "X-Foo, keep-alive, Upgrade, HTTP2-Settings", "X-Foo": "1", "Keep-Alive": "300",
            "Proxy-Connection": "keep-alive", "TE": "trailers", "Trailer": "X-T", "Upgrade": "h2c",
            "HTTP2-Settings": "AAMAAABkAAQAAP__", "Proxy-Authorization": "Basic eDp5", "X-Kept": "yes"}))
    h = hdrs(req)
    for gone in ("connection", "x-foo", "keep-alive", "proxy-connection", "te", "trailer", "upgrade",
                 "http2-settings", "proxy-authorization", "transfer-encoding"):
        assert gone not in h, h
    assert h["x-kept"] == ["yes"]


def test_forwarded_headers_and_host_are_set_by_the_proxy(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/h/star", {"Host": "api.example.com", "X-Forwarded-For": "6.6.6.6",
                                                  "X-Forwarded-Host": "evil", "X-Forwarded-Proto": "https"}))
    h = hdrs(req)
    assert h["host"] == [f"127.0.0.1:{env.u.port}"]
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-host"] == ["api.example.com"]
    assert h["x-forwarded-proto"] == ["http"]


def test_url_pattern_parameters_are_substituted_as_received(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/users/42/posts/a%20b"))
    assert req["url"] == "/echo/user/42/post/a%20b"


def test_trailing_wildcard_appends_the_rest_of_the_path_and_keeps_the_query(env):
    with Client(env.port) as c:
        assert echoed(c.request("GET", "/files/css/site.css?v=3&x=y"))["url"] == "/echo/static/css/site.css?v=3&x=y"
        assert echoed(c.request("GET", "/files/a%2Fb/c"))["url"] == "/echo/static/a%2Fb/c"


def test_input_headers_default_forwards_only_content_type(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/echo", {"Content-Type": "x/only", "X-Alpha": "a", "Cookie": "c=1",
                                                 "Authorization": "Bearer t", "User-Agent": "ua"}))
    h = hdrs(req)
    assert h["content-type"] == ["x/only"]
    assert set(h) == {"host", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "content-type"}


def test_input_headers_star_forwards_every_end_to_end_header(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/h/star", {"X-Alpha": "a", "Cookie": "c=1", "X-Multi": "1"}))
    h = hdrs(req)
    assert h["x-alpha"] == ["a"] and h["cookie"] == ["c=1"] and h["x-multi"] == ["1"]


def test_input_headers_named_list_forwards_only_those_names(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "/h/named", {"x-alpha": "a", "Authorization": "Bearer t", "Cookie": "c=1",
                                                    "Content-Type": "x/none"}))
    h = hdrs(req)
    assert h["x-alpha"] == ["a"] and h["authorization"] == ["Bearer t"]
    assert "cookie" not in h and "content-type" not in h


def test_input_query_strings_default_forwards_none(env):
    with Client(env.port) as c:
        assert echoed(c.request("GET", "/echo?a=1&b=2"))["url"] == "/echo"


def test_input_query_strings_list_forwards_only_those_names(env):
    with Client(env.port) as c:
        assert echoed(c.request("GET", "/q/list?a=1&c=3&b=2&a=4&ab=5"))["url"] == "/echo?a=1&b=2&a=4"


def test_input_query_strings_star_forwards_all(env):
    with Client(env.port) as c:
        assert echoed(c.request("GET", "/q/star?z=1&a=%20"))["url"] == "/echo?z=1&a=%20"


def test_absolute_form_target_matching_host_is_routed_by_its_path(env):
    with Client(env.port) as c:
        req = echoed(c.request("GET", "http://api.example.com/users/1/posts/2", {"Host": "api.example.com"}))
    assert req["url"] == "/echo/user/1/post/2"
    assert hdrs(req)["x-forwarded-host"] == ["api.example.com"]
    with Client(env.port) as c:
        req = echoed(c.request("GET", "http://API.example.com?a=1&z=2", {"Host": "api.example.com"}))
    assert req["url"] == "/echo?a=1&z=2"


# -- routing answers ---------------------------------------------------------------------------

def test_unknown_path_is_404_with_krakend_body(env):
    with Client(env.port) as c:
        r = c.request("GET", "/nowhere")
        assert (r.status, r.body) == (404, b"404 page not found")
        assert c.request("GET", "/status/200").status == 200


def test_wrong_method_is_405_with_krakend_body(env):
    with Client(env.port) as c:
        r = c.request("DELETE", "/echo")
        assert (r.status, r.body) == (405, b"405 method not allowed")
        assert set(r.header("allow").replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


def test_health_endpoint_answers_200_json(env):
    status, headers, body = get(env.port, "/__health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["status"] == "ok"


# -- backends -----------------------------------------------------------------------------------

def test_round_robin_spreads_requests_over_the_backend_hosts(env):
    a0, b0 = len(env.ua.requests), len(env.ub.requests)
    with Client(env.port) as c:
        for i in range(6):
            assert c.request("GET", f"/rr/{i}").status == 200
    assert len(env.ua.requests) - a0 == 3 and len(env.ub.requests) - b0 == 3


def test_idempotent_request_moves_to_another_host_when_connect_is_refused(env):
    with Client(env.port) as c:
        for _ in range(2):
            assert echoed(c.request("GET", "/failover"))["url"] == "/echo/failover"


def test_idle_backend_connections_are_reused(env):
    for _ in range(20):
        with Client(env.port) as c:
            assert c.request("GET", "/pooled").status == 200
    with Client(env.port) as c:
        for _ in range(20):
            assert c.request("GET", "/pooled").status == 200
    assert len(env.upool.requests) == 40
    assert env.upool.opened == 1


def test_endpoint_timeout_is_504(env):
    t0 = time.monotonic()
    with Client(env.port) as c:
        r = c.request("GET", "/hang")
        assert r.status == 504
        assert time.monotonic() - t0 < 1.5
        assert c.request("GET", "/status/200").status == 200


def test_refused_backend_is_502(env):
    with Client(env.port) as c:
        assert c.request("GET", "/refused").status == 502
        assert c.request("GET", "/status/200").status == 200


def test_backend_reset_is_502(env):
    with Client(env.port) as c:
        assert c.request("GET", "/reset").status == 502


def test_backend_garbage_is_502(env):
    with Client(env.port) as c:
        assert c.request("GET", "/garbage").status == 502
        assert c.request("GET", "/status/200").status == 200


def test_truncated_content_length_body_breaks_the_client_stream(env):
    with Client(env.port) as c:
        c.send(build("GET", "/truncate"))
        with pytest.raises(BrokenStream) as exc:
            c.response()
        assert exc.value.partial.status == 200 and exc.value.partial.header("content-length") == "100"


def test_truncated_chunked_body_never_gets_a_final_chunk(env):
    with Client(env.port) as c:
        c.send(build("GET", "/cut-chunked"))
        with pytest.raises(BrokenStream):
            c.response()
        assert b"0\r\n\r\n" not in bytes(c.received)


def test_lying_content_length_extra_bytes_are_never_relayed_nor_the_connection_reused(env):
    with Client(env.port) as c:
        r = c.request("GET", "/lie")
        assert r.body == b"01234"
        r = c.request("GET", "/users/after/posts/lie")
        assert echoed(r)["url"] == "/echo/user/after/post/lie"
        assert b"56789" not in bytes(c.received)
    # the connection that carried /lie carried nothing after it
    lied = [bytes(raw) for raw in env.u.connections if b"GET /lie " in raw]
    assert lied
    for raw in lied:
        assert raw[raw.find(b"GET /lie "):].count(b" HTTP/1.1\r\n") == 1


def test_lying_content_length_does_not_corrupt_the_next_pipelined_answer(env):
    with Client(env.port) as c:
        c.send(build("GET", "/lie") + build("GET", "/users/next/posts/lie"))
        assert c.response().body == b"01234"
        assert echoed(c.response())["url"] == "/echo/user/next/post/lie"
        assert b"56789" not in bytes(c.received)


def test_stray_body_after_a_head_answer_does_not_corrupt_the_next_pipelined_answer(env):
    # the backend wrongly sends a body with its HEAD answer
    with Client(env.port) as c:
        c.send(build("HEAD", "/big/64") + build("GET", "/status/201"))
        r = c.response("HEAD")
        assert r.status == 200 and r.header("content-length") == "64"
        r = c.response()
        assert r.status == 201 and r.body == b"status 201"
        assert not c.closed(0.05)


def test_post_is_not_retried_once_bytes_went_upstream(env):
    a0 = sum(r["url"] == "/reset" for r in env.ua.requests)
    b0 = sum(r["url"] == "/reset" for r in env.ub.requests)
    with Client(env.port) as c:
        r = c.request("POST", "/twice/reset", {}, b"payment=1")
        assert r.status == 502
    a1 = sum(r["url"] == "/reset" for r in env.ua.requests)
    b1 = sum(r["url"] == "/reset" for r in env.ub.requests)
    assert (a1 - a0) + (b1 - b0) == 1


# -- client-side limits and timeouts -----------------------------------------------------------

def test_read_header_timeout_is_408(env):
    with Client(env.port) as c:
        t0 = time.monotonic()
        c.send(b"GET /echo HTTP/1.1\r\nHost: a\r\n")
        r = c.response()
        assert r.status == 408
        assert 0.2 < time.monotonic() - t0 < 1.5
        assert c.closed()


def test_idle_keep_alive_connection_closes_silently(env):
    with Client(env.port) as c:
        assert c.request("GET", "/status/200").status == 200
        t0 = time.monotonic()
        assert c.closed(3.0)  # no 408, no bytes: just the close
        assert 0.3 < time.monotonic() - t0 < 2.0


def test_body_over_max_body_size_is_413_by_content_length(env):
    with Client(env.port) as c:
        r = c.request("POST", "/echo", {"Content-Length": str(MAX_BODY + 1)})
        assert r.status == 413
        assert c.closed()


def test_body_over_max_body_size_is_413_by_chunked_stream(env):
    with Client(env.port) as c:
        c.send(build("POST", "/echo", {"Transfer-Encoding": "chunked"}))
        piece = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
        try:
            for _ in range(MAX_BODY // 65536 + 2):
                c.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        assert r.status == 413
        assert c.closed()


def test_max_connections_caps_served_connections(tmp_path, upstream):
    # Four connections with a request in flight fill the cap: a fifth waits in the backlog (no
    # connection can be closed to admit it), and is served once one of the four is idle again.
    p = Proxy(config(upstream, [ep("/x"), ep("/slow/{ms}")], listen_ip="127.0.0.1",
                     extra_config={"fastproxy": {"max_connections": 4, "idle_timeout": "10s"}}), tmp_path)
    try:
        busy = [Client(p.port, timeout=3) for _ in range(4)]
        try:
            for c in busy:
                c.send(build("GET", "/slow/1000"))
            wait_for(lambda: len(upstream.requests) >= 4 and all(
                r["url"] == "/slow/1000" for r in upstream.requests[-4:]), timeout=3)
            with Client(p.port, timeout=3) as waiting:
                waiting.send(build("GET", "/x"))
                waiting.sock.settimeout(0.4)
                with pytest.raises((socket.timeout, TimeoutError)):
                    waiting.response()
                assert [c.response().status for c in busy] == [200] * 4
                waiting.sock.settimeout(3)
                assert waiting.response().status == 200
        finally:
            for c in busy:
                c.close()
    finally:
        assert p.stop() == 0

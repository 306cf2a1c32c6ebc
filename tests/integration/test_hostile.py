"""Hostile requests (request smuggling, malformed framing, oversize heads, slowloris).

Each row of the table is raw bytes sent on a fresh connection to a proxy whose backend records
every byte it receives. For every row: the statuses are the expected ones (in order, when valid
requests precede the hostile one), the proxy closes the connection after the refusal, and nothing
of the hostile request reaches the backend: only the valid requests before it do.

Cases follow /work/shared/reference/proxy-hardening.md §1.2-1.4 (RFC 9112 rules, what llhttp
accepts that a proxy must refuse) plus payload shapes from public smuggling corpora
(http-garden trophies, aws http-desync-guardian): facts only, written here from scratch.
"""

import time

import pytest

from tests.integration.netutil import Client, RecordingUpstream, exchange
from tests.support import Proxy, config, ep

MAX_BODY = 64 * 1024
HEADER_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    u = RecordingUpstream()
    endpoints = [ep(path, "/echo", method=m, input_headers=["*"], input_query_strings=["*"])
                 for path in ("/echo", "/echo/{x}") for m in ("GET", "POST")]
    endpoints += [ep("/users/{id}", "/echo/user/{id}"), ep("/files/*", "/echo/static")]
    cfg = config(u, endpoints, listen_ip="127.0.0.1",
                 extra_config={"fastproxy": {"read_header_timeout": f"{int(HEADER_TIMEOUT * 1000)}ms",
                                             "idle_timeout": "2s", "max_body_size": MAX_BODY}})
    p = Proxy(cfg, tmp_path_factory.mktemp("hostile"))
    yield p, u
    p.stop()
    u.stop()


M = b"{M}"  # replaced by a per-case marker, so any byte that leaks to the backend is attributable
OK_GET = b"GET /echo/ok HTTP/1.1\r\nHost: a\r\n\r\n"
OK_POST = b"POST /echo/ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"


def post(*headers: bytes, body: bytes = b"", version: bytes = b"1.1", host: bool = True) -> bytes:
    lines = [b"POST /echo/" + M + b" HTTP/" + version]
    if host:
        lines.append(b"Host: a")
    lines.extend(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def get(*headers: bytes, target: bytes = b"/echo/" + M, version: bytes = b"1.1", method: bytes = b"GET",
        host: bool = True) -> bytes:
    lines = [method + b" " + target + b" HTTP/" + version]
    if host:
        lines.append(b"Host: a")
    lines.extend(headers)
    return b"\r\n".join(lines) + b"\r\n\r\n"


CHUNKED = b"Transfer-Encoding: chunked"
TAG = b"X-Case: " + M
ZERO = b"0\r\n\r\n"

# (id, raw bytes, expected statuses in order, number of valid requests that may reach the backend)
CASES = [
    # -- Content-Length / Transfer-Encoding ambiguity (RFC 9112 §6.1, §6.3) --
    ("cl-and-te", post(b"Content-Length: 5", CHUNKED, body=ZERO), [400], 0),
    ("te-and-cl", post(CHUNKED, b"Content-Length: 5", body=ZERO), [400], 0),
    ("cl-te-classic-smuggle", post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG"), [400], 0),
    ("cl-duplicate-same", post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"), [400], 0),
    ("cl-duplicate-different", post(b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"), [400], 0),
    ("cl-list-in-one-header", post(b"Content-Length: 5, 5", body=b"hello"), [400], 0),
    ("cl-leading-zero", post(b"Content-Length: 05", body=b"hello"), [400], 0),
    ("cl-plus-sign", post(b"Content-Length: +5", body=b"hello"), [400], 0),
    ("cl-negative", post(b"Content-Length: -5", body=b"hello"), [400], 0),
    ("cl-hex", post(b"Content-Length: 0x5", body=b"hello"), [400], 0),
    ("cl-space-inside", post(b"Content-Length: 1 5", body=b"hello"), [400], 0),
    ("cl-empty", post(b"Content-Length: ", body=b"hello"), [400], 0),
    ("cl-overflow", post(b"Content-Length: 99999999999999999999999", body=b"hello"), [400], 0),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked", body=ZERO), [400], 0),
    ("te-leading-comma", post(b"Transfer-Encoding: ,chunked", body=ZERO), [400], 0),
    ("te-chunked-identity", post(b"Transfer-Encoding: chunked, identity", body=ZERO), [400], 0),
    ("te-identity", post(b"Transfer-Encoding: identity", body=b"hello"), [400], 0),
    ("te-chunked-twice-in-one-header", post(b"Transfer-Encoding: chunked, chunked", body=ZERO), [400], 0),
    ("te-xchunked", post(b"Transfer-Encoding: xchunked", body=ZERO), [400], 0),
    ("te-vertical-tab", post(b"Transfer-Encoding:\x0bchunked", body=ZERO), [400], 0),
    ("te-duplicate-headers", post(CHUNKED, CHUNKED, body=ZERO), [400], 0),
    ("te-in-http10", post(CHUNKED, body=ZERO, version=b"1.0", host=False), [400], 0),
    # -- Host (RFC 9112 §3.2) --
    ("host-missing", get(TAG, host=False), [400], 0),
    ("host-duplicate", get(b"Host: b", TAG), [400], 0),
    ("host-duplicate-http10", get(b"Host: a", b"Host: b", TAG, version=b"1.0", host=False), [400], 0),
    ("host-with-space", get(b"Host: a b", TAG, host=False), [400], 0),
    ("host-list", get(b"Host: h, evil", TAG, host=False), [400], 0),
    ("host-markup", get(b"Host: <script>alert(1)</script>", TAG, host=False), [400], 0),
    ("host-unclosed-ipv6", get(b"Host: [::1", TAG, host=False), [400], 0),
    ("host-two-colons", get(b"Host: a:b:c", TAG, host=False), [400], 0),
    ("host-port-not-digits", get(b"Host: a:http", TAG, host=False), [400], 0),
    ("host-with-slash", get(b"Host: a/evil", TAG, host=False), [400], 0),
    ("host-too-long", get(b"Host: " + b"h" * 4000, TAG, host=False), [400], 0),
    ("host-invalid-http10", get(b"Host: a b", TAG, version=b"1.0", host=False), [400], 0),
    ("absolute-form-invalid-authority-http10", get(TAG, target=b"http://a,b/echo/x", version=b"1.0", host=False),
     [400], 0),
    # -- chunked body syntax (RFC 9112 §7.1) --
    ("chunk-size-0x-prefix", post(CHUNKED, body=b"0x5\r\nhello\r\n" + ZERO), [400], 0),
    ("chunk-size-negative", post(CHUNKED, body=b"-5\r\nhello\r\n" + ZERO), [400], 0),
    ("chunk-size-space-before-semicolon", post(CHUNKED, body=b"5 ;x\r\nhello\r\n" + ZERO), [400], 0),
    ("chunk-size-overflow", post(CHUNKED, body=b"fffffffffffffffff1\r\nhello\r\n" + ZERO), [400], 0),
    ("chunk-data-longer-than-size", post(CHUNKED, body=b"3\r\nhello\r\n" + ZERO), [400], 0),
    ("chunk-size-bare-lf", post(CHUNKED, body=b"5\nhello\r\n" + ZERO), [400], 0),
    ("chunk-extension-with-nul", post(CHUNKED, body=b"5;a=\x00\r\nhello\r\n" + ZERO), [400], 0),
    ("trailer-with-space-in-name", post(CHUNKED, body=b"5\r\nhello\r\n0\r\nX Y: 1\r\n\r\n"), [400], 0),
    # -- header syntax (RFC 9112 §5, RFC 9110 §5.5) --
    ("whitespace-before-colon", get(b"X-Case : " + M), [400], 0),
    ("obs-fold", get(TAG, b"X-Folded: a", b" b"), [400], 0),
    ("bare-lf-line-ends", get(TAG).replace(b"\r\n", b"\n"), [400], 0),
    ("bare-cr-in-value", get(TAG, b"X-V: a\rb"), [400], 0),
    ("nul-in-value", get(TAG, b"X-V: a\x00b"), [400], 0),
    ("ctl-in-value", get(TAG, b"X-V: a\x01b"), [400], 0),
    ("del-in-value", get(TAG, b"X-V: a\x7fb"), [400], 0),
    ("quote-in-name", get(TAG, b'X"V: a'), [400], 0),
    ("non-ascii-in-name", get(TAG, b"X\x85V: a"), [400], 0),
    ("empty-header-name", get(TAG, b": a"), [400], 0),
    ("header-without-colon", get(TAG, b"X-V"), [400], 0),
    ("expect-unknown", get(TAG, b"Expect: 200-ok"), [417], 0),
    ("user-agent-twice", get(TAG, b"User-Agent: Good/1", b"User-Agent: BadBot/1.0"), [400], 0),
    ("user-agent-twice-same", get(TAG, b"User-Agent: a", b"User-Agent: a"), [400], 0),
    # -- size limits (414, 431, 413) --
    ("request-line-too-long", get(TAG, target=b"/echo/" + M + b"?" + b"a" * 9000), [414], 0),
    ("one-header-too-long", get(TAG, b"X-Big: " + b"b" * 9000), [431], 0),
    ("too-many-headers", get(TAG, *[b"X-H%d: v" % i for i in range(101)]), [431], 0),
    ("head-too-large", get(TAG, *[b"X-H%d: " % i + b"v" * 7000 for i in range(5)]), [431], 0),
    ("body-too-large-by-content-length", post(b"Content-Length: %d" % (MAX_BODY + 1)), [413], 0),
    # -- request line (RFC 9112 §3) --
    ("http-2.0", get(TAG, version=b"2.0"), [505], 0),
    ("http-0.9", get(TAG, version=b"0.9"), [505], 0),
    ("http-0.9-simple-request", b"GET /echo/" + M + b"\r\n\r\n", [505], 0),
    ("http-malformed-version", get(TAG, version=b"1.x"), [400], 0),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + M, [400], 0),
    ("garbage-tls-hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + M + b"\r\n\r\n", [400], 0),
    ("garbage-text", b"HELLO THERE " + M + b"\r\n\r\n", [400], 0),
    ("lowercase-method", get(TAG, method=b"get"), [400], 0),
    ("unknown-method", get(TAG, method=b"GETX"), [400], 0),
    ("space-in-target", get(TAG, target=b"/echo/a b"), [400], 0),
    ("non-ascii-in-target", get(TAG, target=b"/echo/\xff"), [400], 0),
    ("nul-in-target", get(TAG, target=b"/echo/\x00"), [400], 0),
    ("fragment-in-target", get(TAG, target=b"/echo/x#frag"), [400], 0),
    ("absolute-form-other-host", get(TAG, target=b"http://evil.example/echo/x"), [400], 0),
    ("absolute-form-other-scheme", get(TAG, target=b"ftp://a/echo/x"), [400], 0),
    ("absolute-form-one-slash", get(TAG, target=b"https:/echo/x"), [400], 0),
    ("absolute-form-host-with-userinfo", get(TAG, target=b"http://a@evil.example/echo/x"), [400], 0),
    ("asterisk-form", get(TAG, target=b"*", method=b"OPTIONS"), [400], 0),
    ("authority-form", get(TAG, target=b"evil.example:443", method=b"CONNECT"), [400], 0),
    ("dot-segments", get(TAG, target=b"/echo/../admin"), [400], 0),
    ("encoded-dot-segments", get(TAG, target=b"/echo/%2e%2e/admin"), [400], 0),
    ("encoded-dot-segment-mixed-case", get(TAG, target=b"/echo/%2E./admin"), [400], 0),
    ("single-dot-segment", get(TAG, target=b"/echo/./x"), [400], 0),
    # encoded separators: nginx decodes %2f/%5c and resolves `/users/..%2f..%2fadmin` to `/admin`
    ("param-encoded-slash-traversal", get(TAG, target=b"/users/..%2f..%2fadmin"), [400], 0),
    ("param-all-encoded-traversal", get(TAG, target=b"/users/%2e%2e%2f%2e%2e%2fadmin"), [400], 0),
    ("param-mixed-encoded-traversal", get(TAG, target=b"/users/.%2e%2f.%2e%2fadmin"), [400], 0),
    ("param-upper-case-encoded-traversal", get(TAG, target=b"/users/..%2F..%2Fadmin"), [400], 0),
    ("wildcard-encoded-slash-traversal", get(TAG, target=b"/files/..%2f..%2fadmin"), [400], 0),
    ("encoded-backslash-traversal", get(TAG, target=b"/users/..%5c..%5cadmin"), [400], 0),
    ("raw-backslash-traversal", get(TAG, target=b"/users/..\\..\\admin"), [400], 0),
    # -- slow / incomplete --
    ("head-never-completed", b"GET /echo/" + M + b" HTTP/1.1\r\nHost: a\r\nX-Slow: 1\r\n", [408], 0),
    # -- after valid requests on the same connection --
    ("valid-request-then-garbage", OK_GET + b"\x00\x01\x02 garbage " + M + b"\r\n\r\n", [200, 400], 1),
    ("valid-pair-then-cl-te-smuggle",
     OK_GET + OK_POST + post(b"Content-Length: 44", CHUNKED,
                            body=b"0\r\n\r\nGET /echo/" + M + b"-inner HTTP/1.1\r\nHost: a\r\n\r\n"),
     [200, 200, 400], 2),
    ("valid-then-te-in-http10", OK_GET + post(CHUNKED, body=ZERO, version=b"1.0", host=False), [200, 400], 1),
    ("valid-then-duplicate-cl", OK_POST + post(b"Content-Length: 1", b"Content-Length: 2", body=b"ab"),
     [200, 400], 1),
    ("valid-then-fragment", OK_GET + get(TAG, target=b"/echo/#" + M), [200, 400], 1),
    ("valid-then-invalid-host", OK_GET + get(b"Host: a, evil", TAG, host=False), [200, 400], 1),
    ("valid-then-oversize-head", OK_GET + get(TAG, b"X-Big: " + b"b" * 9000), [200, 431], 1),
]


def _lengths(u) -> list:
    return [len(c) for c in list(u.connections)]


def _new_bytes(u, before: list) -> bytes:
    conns = list(u.connections)
    return b"".join(bytes(c[before[i] if i < len(before) else 0:]) for i, c in enumerate(conns))


@pytest.mark.parametrize("case_id,data,statuses,valid", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_and_never_reaches_the_backend(env, case_id, data, statuses, valid):
    proxy, u = env
    marker = f"hostile-{case_id}".encode()
    data = data.replace(M, marker)
    seen_before = _lengths(u)
    requests_before = len(u.requests)
    responses, closed, elapsed = exchange(proxy.port, data, timeout=3.0)
    assert [r.status for r in responses] == statuses, responses
    assert closed, "the proxy kept the connection open after refusing a request"
    assert responses[-1].header("connection").lower() == "close"
    if statuses[-1] == 408:
        assert HEADER_TIMEOUT * 0.8 < elapsed < HEADER_TIMEOUT + 1.0
    new_requests = u.requests[requests_before:]
    assert len(new_requests) == valid, new_requests
    assert all(r["url"] == "/echo" for r in new_requests)
    leaked = _new_bytes(u, seen_before)
    assert marker not in leaked, leaked[:300]
    if valid == 0:
        assert leaked == b"", leaked[:300]
    else:
        assert leaked.count(b" HTTP/1.1\r\n") == valid, leaked


def test_table_has_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_chunked_body_over_the_limit_is_413_and_never_completes_upstream(env):
    # A streamed body can only be measured while it streams: the head may have gone upstream,
    # but the backend never receives a complete request and its connection is dropped.
    proxy, u = env
    requests_before = len(u.requests)
    body = b"%x\r\n%s\r\n" % (MAX_BODY + 1, b"z" * (MAX_BODY + 1)) + ZERO
    responses, closed, _ = exchange(proxy.port, post(CHUNKED, body=body).replace(M, b"hostile-chunked-413"))
    assert [r.status for r in responses] == [413] and closed
    assert len(u.requests) == requests_before


def test_header_that_never_ends_is_431_without_waiting_for_the_deadline(env):
    proxy, u = env
    seen_before = _lengths(u)
    with Client(proxy.port, timeout=3) as c:
        t0 = time.monotonic()
        c.send(b"GET /echo/hostile-endless HTTP/1.1\r\nHost: a\r\nX-Endless: ")
        try:
            for _ in range(10):
                c.send(b"e" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.response()
        assert r.status == 431
        assert time.monotonic() - t0 < HEADER_TIMEOUT
        assert c.closed()
    assert b"hostile-endless" not in _new_bytes(u, seen_before)


def test_slowloris_head_gets_408_within_the_header_deadline_despite_activity(env):
    proxy, u = env
    seen_before = _lengths(u)
    head = b"GET /echo/hostile-slowloris HTTP/1.1\r\nHost: a\r\n" + b"X-Drip: 1\r\n" * 100
    with Client(proxy.port, timeout=3) as c:
        t0 = time.monotonic()
        refused = None
        for i in range(0, len(head), 8):
            try:
                c.send(head[i:i + 8])
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - t0 > HEADER_TIMEOUT + 1.0:
                break
            c.sock.settimeout(0.05)
            try:
                data = c.sock.recv(65536, 2)  # MSG_PEEK: has an answer arrived?
                if data:
                    refused = time.monotonic() - t0
                    break
            except (TimeoutError, BlockingIOError, OSError):
                pass
        c.sock.settimeout(3)
        r = c.response()
        assert r.status == 408
        assert refused is not None and refused < HEADER_TIMEOUT + 0.5
        assert c.closed()
    assert b"hostile-slowloris" not in _new_bytes(u, seen_before)


def test_harmless_encoded_slash_is_forwarded_as_received(env):
    proxy, u = env
    with Client(proxy.port, timeout=3) as c:
        r = c.request("GET", "/files/a%2fb")
        assert r.status == 200
    assert u.requests[-1]["url"] == "/echo/static/a%2fb"


def test_no_hostile_marker_ever_reached_the_backend(env):
    _, u = env
    everything = b"".join(bytes(c) for c in list(u.connections))
    assert b"hostile-" not in everything

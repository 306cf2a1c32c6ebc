"""The raw-head scans of http/head.py: on any head llhttp accepts they raise HTTPError or
succeed (compiled, they index bytes through pointers: a wrong offset would be a crash, not an
exception), and the header block they forward equals the one rebuilt header by header."""

import httptools
from hypothesis import given, settings
from hypothesis import strategies as st

from fastproxy.http.head import RequestHead, forwarded_block, named_headers, scan_request, scan_response
from fastproxy.http.request import HTTPError
from fastproxy.http.wire import REQUEST_DROP

NAMES = [b"Host", b"User-Agent", b"Content-Length", b"Transfer-Encoding", b"Connection", b"X_Under",
         b"Accept", b"Cookie", b"Expect", b"Keep-Alive", b"TE", b"Content-Type", b"X-Forwarded-For", b"h"]
VALUES = [b"a", b"", b" padded ", b"10", b"chunked", b"close", b"keep-alive, X-Drop", b"100-continue",
          b"a_b", b"\tx\t"]


def accepted(raw: bytes) -> bool:
    class Sink:
        pass
    try:
        httptools.HttpRequestParser(Sink()).feed_data(raw)
    except httptools.HttpParserError:
        return False
    return True


heads = st.builds(
    lambda line, fields: line + b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n",
    st.sampled_from([b"GET / HTTP/1.1\r\n", b"POST /a?b=c HTTP/1.0\r\n", b"GET /x\r\n", b"PUT * HTTP/1.1\r\n",
                     b"GET http://h/p HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n"]),
    st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=8))


@settings(max_examples=400, deadline=None)
@given(heads)
def test_any_head_llhttp_accepts_is_read_or_refused_with_an_http_error(raw):
    if not accepted(raw):
        return
    h = RequestHead()
    try:
        scan_request(h, raw, 8192, 8192, 65536, 100, 10**9)
    except HTTPError:
        return
    rebuilt = [(n, v) for n, _, v in h.headers]
    assert len(rebuilt) == raw.count(b"\r\n") - 2
    block = b"".join(forwarded_block(h))
    expected = b"".join(name + b": " + value + b"\r\n" for lname, name, value in h.headers
                        if lname not in REQUEST_DROP and b"_" not in lname)
    if not h.dirty and h.conn_opts in (None, b"close", b"keep-alive"):
        # the fast path copies lines as received: the same headers, the raw spelling
        assert block.replace(b": ", b":") == expected.replace(b": ", b":")
    elif h.conn_opts is None:
        assert block == expected
    named = b"".join(named_headers(h, frozenset([b"accept", b"host", b"cookie"])))
    assert all(line.split(b":")[0].lower() in (b"accept", b"cookie") for line in named.split(b"\r\n") if line)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES + [b"Server", b"Date"]), st.sampled_from(VALUES)), max_size=8),
       st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 204 No Content\r\n", b"HTTP/1.1 304 X\r\n"]),
       st.booleans())
def test_any_response_head_is_read_or_refused_with_a_value_error(fields, line, head_request):
    raw = line + b"".join(n + b":" + v + b"\r\n" for n, v in fields) + b"\r\n"
    try:
        head = scan_response(raw, head_request)
    except ValueError:
        return
    assert 100 <= head.status <= 999
    for piece in head.lines:
        assert piece.endswith(b"\r\n")


def test_a_header_list_a_policy_edited_is_what_the_backend_gets():
    # the GeoIP policy removes a client's own X-Geoip through `headers`: neither an input_headers
    # list naming it nor "*" may forward the raw line
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Geoip: {\"forged\": 1}\r\nAccept: */*\r\n\r\n"
    h = RequestHead()
    scan_request(h, raw, 8192, 8192, 65536, 100, 10**9)
    h.headers = [hd for hd in h.headers if hd[0] != b"x-geoip"]
    assert b"".join(named_headers(h, frozenset([b"x-geoip", b"accept"]))) == b"Accept: */*\r\n"
    assert b"".join(forwarded_block(h)) == b"Accept: */*\r\n"


def test_input_headers_forward_their_lines_as_received_in_order():
    raw = b"GET / HTTP/1.1\r\nB: 2\r\nHost: a\r\nA:1\r\nB: 3\r\n\r\n"
    h = RequestHead()
    scan_request(h, raw, 8192, 8192, 65536, 100, 10**9)
    assert b"".join(named_headers(h, frozenset([b"a", b"b", b"host"]))) == b"B: 2\r\nA:1\r\nB: 3\r\n"

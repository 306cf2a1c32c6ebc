"""`security/cors` as pure logic (rs/cors semantics): which headers a preflight and an actual
request get, for allowed and refused origins, methods and headers; and its config errors."""

import pytest

from fastproxy.config.compile import compile_config
from fastproxy.http.head import RequestHead, scan_request
from tests.configutil import assert_problem, errors_of

P = '$.extra_config["security/cors"]'


def cfg(cors: dict, ns: str = "security/cors") -> dict:
    return {"version": 3, "host": ["http://127.0.0.1:1"], "output_encoding": "no-op",
            "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/a"}]}], "extra_config": {ns: cors}}


def cors_of(block: dict):
    c = compile_config(cfg(block)).cors
    assert c is not None
    return c


def req(method: str, *headers: str) -> RequestHead:
    x = RequestHead()
    raw = f"{method} /a HTTP/1.1\r\nHost: h\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    scan_request(x, raw.encode(), 8192, 8192, 32768, 100, 1 << 20)
    return x


def got(block: dict, method: str, *headers: str) -> dict:
    out: dict = {}
    for name, value in cors_of(block).response_headers(req(method, *headers)):
        out.setdefault(name.decode(), []).append(value.decode())
    return out


SITE = "https://app.example"
PRE = ("Origin: " + SITE, "Access-Control-Request-Method: PUT", "Access-Control-Request-Headers: x-trace, content-type")
VARY_PRE = ["Origin, Access-Control-Request-Method, Access-Control-Request-Headers"]


def test_an_allowed_preflight_gets_the_method_headers_and_max_age():
    block = {"allow_origins": [SITE], "allow_methods": ["GET", "PUT"], "allow_headers": ["X-Trace", "Content-Type"],
             "max_age": "12h"}
    assert got(block, "OPTIONS", *PRE) == {
        "Vary": VARY_PRE, "Access-Control-Allow-Origin": [SITE], "Access-Control-Allow-Methods": ["PUT"],
        "Access-Control-Allow-Headers": ["x-trace, content-type"], "Access-Control-Max-Age": ["43200"]}
    assert cors_of(block).answers_preflight(req("OPTIONS", *PRE))


@pytest.mark.parametrize("block,headers", [
    ({"allow_origins": ["https://other.example"], "allow_methods": ["PUT"], "allow_headers": ["*"]}, PRE),
    ({"allow_origins": [SITE], "allow_methods": ["GET"], "allow_headers": ["*"]}, PRE),
    ({"allow_origins": [SITE], "allow_methods": ["PUT"], "allow_headers": ["X-Trace"]}, PRE),
    ({"allow_origins": [SITE], "allow_methods": ["PUT"]}, PRE[1:]),
], ids=["origin not allowed", "method not allowed", "a header not allowed", "no origin"])
def test_a_refused_preflight_gets_no_allow_headers(block, headers):
    assert got(block, "OPTIONS", *headers) == {"Vary": VARY_PRE}


@pytest.mark.parametrize("origins,origin,allowed", [
    (["*"], "https://anything.example", True),
    ([], "https://anything.example", True),  # rs/cors: none listed means any
    (["https://app.example"], "https://APP.example", True),
    (["https://app.example"], "https://app.example.evil", False),
    (["https://*.example.com"], "https://api.example.com", True),
    (["https://*.example.com"], "https://example.com", False),
    (["https://*.example.com"], "http://api.example.com", False),
    (["https://*.example.com"], "https://api.example.com.evil", False),
])
def test_origin_matching(origins, origin, allowed):
    assert cors_of({"allow_origins": origins}).allowed_origin(origin.encode()) is allowed


def test_an_actual_request_from_an_allowed_origin_gets_allow_origin_and_exposed_headers():
    block = {"allow_origins": [SITE], "expose_headers": ["X-Request-Id", "RateLimit"]}
    assert got(block, "GET", "Origin: " + SITE) == {
        "Vary": ["Origin"], "Access-Control-Allow-Origin": [SITE],
        "Access-Control-Expose-Headers": ["X-Request-Id, RateLimit"]}


@pytest.mark.parametrize("method,headers", [
    ("GET", ("Origin: https://evil.example",)), ("GET", ()), ("DELETE", ("Origin: " + SITE,))])
def test_an_actual_request_that_is_not_allowed_gets_only_vary(method, headers):
    assert got({"allow_origins": [SITE]}, method, *headers) == {"Vary": ["Origin"]}


def test_any_origin_is_star_but_with_credentials_the_origin_is_echoed():
    assert got({"allow_origins": ["*"]}, "GET", "Origin: " + SITE)["Access-Control-Allow-Origin"] == ["*"]
    creds = got({"allow_origins": ["*"], "allow_credentials": True}, "GET", "Origin: " + SITE)
    assert creds["Access-Control-Allow-Origin"] == [SITE] and creds["Access-Control-Allow-Credentials"] == ["true"]
    pre = got({"allow_credentials": True, "allow_methods": ["PUT"], "allow_headers": ["*"]}, "OPTIONS", *PRE)
    assert pre["Access-Control-Allow-Origin"] == [SITE] and pre["Access-Control-Allow-Credentials"] == ["true"]


def test_private_network_access_is_granted_only_when_allowed_and_asked():
    asked = (*PRE, "Access-Control-Request-Private-Network: true")
    block = {"allow_methods": ["PUT"], "allow_headers": ["*"]}
    assert "Access-Control-Allow-Private-Network" not in got(block, "OPTIONS", *asked)
    on = got({**block, "allow_private_network": True}, "OPTIONS", *asked)
    assert on["Access-Control-Allow-Private-Network"] == ["true"]
    assert on["Vary"] == [VARY_PRE[0] + ", Access-Control-Request-Private-Network"]
    assert "Access-Control-Allow-Private-Network" not in got({**block, "allow_private_network": True}, "OPTIONS", *PRE)


def test_default_headers_are_rs_cors_and_origin_is_always_allowed():
    headers = ("Origin: " + SITE, "Access-Control-Request-Method: GET",
               "Access-Control-Request-Headers: Accept, Content-Type, X-Requested-With, Origin")
    assert "Access-Control-Allow-Headers" in got({}, "OPTIONS", *headers)
    assert "Access-Control-Allow-Headers" not in got({}, "OPTIONS", headers[0], headers[1],
                                                     "Access-Control-Request-Headers: Authorization")


def test_with_options_passthrough_fastproxy_does_not_answer_the_preflight_but_decorates_its_response():
    c = cors_of({"options_passthrough": True, "allow_methods": ["PUT"], "allow_headers": ["*"]})
    assert not c.answers_preflight(req("OPTIONS", *PRE))
    assert dict(c.response_headers(req("OPTIONS", *PRE)))[b"Access-Control-Allow-Methods"] == b"PUT"


def test_a_plain_options_request_is_not_a_preflight():
    assert not cors_of({}).answers_preflight(req("OPTIONS", "Origin: " + SITE))


def test_the_krakend_1x_name_is_read_too_and_no_block_means_no_cors():
    assert compile_config(cfg({"allow_origins": [SITE]}, "github_com/devopsfaith/krakend-cors")).cors is not None
    raw = cfg({})
    raw["extra_config"] = {}
    assert compile_config(raw).cors is None


@pytest.mark.parametrize("block,path,words", [
    ({"allow_methods": ["FETCH"]}, f"{P}.allow_methods[0]", ["expected an HTTP method"]),
    ({"allow_headers": ["X Bad"]}, f"{P}.allow_headers[0]", ["expected a header name"]),
    ({"expose_headers": ["X-Ok", "a:b"]}, f"{P}.expose_headers[1]", ["expected a header name"]),
    ({"allow_origins": ["https://*.*.example"]}, f"{P}.allow_origins[0]", ["one '*' at most"]),
    ({"max_age": "long"}, f"{P}.max_age", ["expected a duration"]),
    ({"options_success_status": 404}, f"{P}.options_success_status", ["expected a 2xx status"]),
    ({"allow_origin": ["*"]}, f"{P}.allow_origin", ["did you mean `allow_origins`?"]),
])
def test_config_errors(block, path, words):
    assert_problem(errors_of(cfg(block)), path, words)


def test_cors_on_an_endpoint_is_an_error_krakend_reads_it_at_the_root():
    raw = cfg({})
    raw["extra_config"] = {}
    raw["endpoints"][0]["extra_config"] = {"security/cors": {}}
    assert_problem(errors_of(raw), '$.endpoints[0].extra_config["security/cors"]', ["is read at the root"])

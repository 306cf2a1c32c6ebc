"""Configuration: Go durations, loading JSON/YAML/TOML with error positions, compiling a KrakenD
`version: 3` file into a Snapshot, and the errors and warnings `fastproxy check` shows (SPEC §1-2).

Every refused configuration is asserted on its exact JSON path and on the words of its message:
what was expected and what was found.
"""

import copy
import json
import math

import pytest

from fastproxy.config.compile import QUERY_ALL, QUERY_LIST, QUERY_NONE, compile_config, load
from fastproxy.config.durations import parse_duration
from fastproxy.config.load import ConfigError, load_file
from tests.configutil import errors_of

HOST = "http://127.0.0.1:8081"


def cfg(*endpoints: dict, **root) -> dict:
    return {"version": 3, "host": [HOST], "endpoints": list(endpoints), **root}


def ep(path: str = "/a", url_pattern: str = None, **kw) -> dict:
    backend = {"url_pattern": url_pattern or path, **kw.pop("backend", {})}
    return {"endpoint": path, "backend": [backend], **kw}


# ---------------------------------------------------------------------------------------------
# Durations: Go's time.ParseDuration grammar

GOOD_DURATIONS = [
    ("500ms", 0.5),
    ("2s", 2.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1m30s", 90.0),
    ("1.5h", 5400.0),
    ("1h2m3s4ms", 3723.004),
    ("0", 0.0),
    ("0s", 0.0),
    ("-0", 0.0),
    ("+5s", 5.0),
    ("-1.5s", -1.5),
    (".5s", 0.5),
    ("1.s", 1.0),
    ("100ns", 1e-7),
    ("100us", 1e-4),
    ("100\u00b5s", 1e-4),
    ("300ms1s", 1.3),
]


@pytest.mark.parametrize("text,seconds", GOOD_DURATIONS)
def test_go_duration_parses_to_seconds(text, seconds):
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-12, abs_tol=1e-15)


BAD_DURATIONS = ["", "1", "10", "s", "2 s", "1d", "1w", "1e3s", "1h-5m", "+", "-", ".s", "1..5s", "ms",
                 "2S", "1h 30m", "\uff11s", "2ss"]


@pytest.mark.parametrize("text", BAD_DURATIONS)
def test_non_go_duration_is_refused_quoting_the_text(text):
    with pytest.raises(ValueError) as exc:
        parse_duration(text)
    assert f'expected a duration such as "500ms" or "2s", found {text!r}' == str(exc.value)


@pytest.mark.parametrize("value", [5, 2.5, None, ["2s"]])
def test_duration_that_is_not_a_string_is_refused(value):
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert "expected a duration string" in str(exc.value)


# ---------------------------------------------------------------------------------------------
# Compiling good configurations


def test_minimal_config_gets_krakend_defaults():
    snap = compile_config(cfg(ep("/a"), output_encoding="no-op"))
    assert snap.port == 8080
    assert snap.listen_ip == "0.0.0.0"
    assert snap.workers == 1
    assert snap.warnings == ()
    (route,) = snap.route_list
    assert route.timeout == 2.0
    assert route.method == "GET"
    assert route.upstream_method is None  # the backend uses the client's method
    assert route.template == (b"/a",)


def test_protocol_limits_have_their_documented_defaults():
    p = compile_config(cfg(ep("/a"))).protocol
    assert (p.max_request_line, p.max_header_size, p.max_head_size, p.max_headers) == (8192, 8192, 32768, 100)
    assert p.max_body_size == 10 * 1024 * 1024
    assert p.max_connections == 10000
    assert (p.read_header_timeout, p.idle_timeout, p.connect_timeout) == (10.0, 15.0, 5.0)
    assert p.max_idle_per_host == 250


def test_krakend_server_knobs_set_the_protocol_timeouts():
    p = compile_config(cfg(ep("/a"), read_header_timeout="3s", idle_timeout="1m", dialer_timeout="250ms",
                           max_idle_connections_per_host=10)).protocol
    assert (p.read_header_timeout, p.idle_timeout, p.connect_timeout, p.max_idle_per_host) == (3.0, 60.0, 0.25, 10)


def test_fastproxy_settings_override_krakend_knobs():
    raw = cfg(ep("/a"), read_header_timeout="3s",
              extra_config={"fastproxy": {"read_header_timeout": "4s", "workers": 3, "max_body_size": 100,
                                          "admin": {"port": 9091}}})
    snap = compile_config(raw)
    assert snap.protocol.read_header_timeout == 4.0
    assert snap.protocol.max_body_size == 100
    assert snap.workers == 3
    assert (snap.admin_ip, snap.admin_port) == ("127.0.0.1", 9091)


def test_root_timeout_is_the_default_and_endpoint_timeout_wins():
    snap = compile_config(cfg(ep("/a"), ep("/b", timeout="750ms"), timeout="10s", port=9000, listen_ip="127.0.0.1"))
    assert [r.timeout for r in snap.route_list] == [10.0, 0.75]
    assert (snap.port, snap.listen_ip) == (9000, "127.0.0.1")


def test_input_headers_default_to_content_type_only():
    (route,) = compile_config(cfg(ep("/a"))).route_list
    assert route.forward_headers is False
    assert route.header_names == frozenset({b"content-type"})


def test_input_headers_list_is_case_insensitive_and_star_forwards_all():
    a, b, c = compile_config(cfg(ep("/a", input_headers=["Authorization", "X-Request-ID"]),
                                 ep("/b", input_headers=["*"]),
                                 ep("/c", input_headers=[]))).route_list
    assert (a.forward_headers, a.header_names) == (False, frozenset({b"authorization", b"x-request-id"}))
    assert b.forward_headers is True
    assert (c.forward_headers, c.header_names) == (False, frozenset())


QUERY_MODES = [
    ("/a", None, QUERY_NONE, frozenset()),
    ("/a", [], QUERY_NONE, frozenset()),
    ("/a", ["page", "Limit"], QUERY_LIST, frozenset({b"page", b"Limit"})),  # case-sensitive, as KrakenD
    ("/a", ["*"], QUERY_ALL, frozenset()),
    ("/a/*", None, QUERY_ALL, frozenset()),  # a catch-all keeps the query string
    ("/a/*", ["q"], QUERY_LIST, frozenset({b"q"})),
]


@pytest.mark.parametrize("path,iq,mode,names", QUERY_MODES)
def test_input_query_strings_select_the_query_mode(path, iq, mode, names):
    extra = {} if iq is None else {"input_query_strings": iq}
    (route,) = compile_config(cfg(ep(path, "/x", **extra))).route_list
    assert (route.query_mode, route.query_names) == (mode, names)


def test_backend_without_host_uses_the_root_host():
    (route,) = compile_config(cfg(ep("/a"))).route_list
    (t,) = route.targets
    assert (t.scheme, t.host, t.port, t.host_header, t.key) == ("http", "127.0.0.1", 8081, b"127.0.0.1:8081",
                                                                HOST)


def test_backend_host_list_replaces_the_root_host_and_keeps_its_order():
    hosts = ["http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8081"]
    snap = compile_config(cfg(ep("/a", backend={"host": hosts}), host=["http://10.0.0.1:9"]))
    (route,) = snap.route_list
    assert [t.key for t in route.targets] == hosts
    assert set(snap.targets) == {"http://127.0.0.1:8081", "http://127.0.0.1:8082"}


HOSTS = [
    ("https://api.example.com", "https", "api.example.com", 443, b"api.example.com"),
    ("https://api.example.com:443", "https", "api.example.com", 443, b"api.example.com"),
    ("https://api.example.com:8443", "https", "api.example.com", 8443, b"api.example.com:8443"),
    ("http://backend", "http", "backend", 80, b"backend"),
    ("http://backend:80/", "http", "backend", 80, b"backend"),
    ("http://Backend.Local:8080", "http", "backend.local", 8080, b"backend.local:8080"),
    ("http://[::1]:8081", "http", "::1", 8081, b"[::1]:8081"),
    ("http://[::1]", "http", "::1", 80, b"[::1]"),
]


@pytest.mark.parametrize("url,scheme,host,port,header", HOSTS, ids=[h[0] for h in HOSTS])
def test_host_url_gives_scheme_port_and_a_host_header_without_the_default_port(url, scheme, host, port, header):
    (route,) = compile_config(cfg(ep("/a", backend={"host": [url]}))).route_list
    (t,) = route.targets
    assert (t.scheme, t.host, t.port, t.host_header) == (scheme, host, port, header)


def test_url_pattern_placeholders_become_a_template():
    (route,) = compile_config(cfg(ep("/u/{id}/o/{order}", "/users/{order}-{id}/x"))).route_list
    assert route.template == (b"/users/", "order", b"-", "id", b"/x")
    assert route.wildcard is False


def test_backend_method_and_endpoint_method_are_upper_cased():
    (route,) = compile_config(cfg(ep("/a", method="post", backend={"method": "put"}))).route_list
    assert route.method == "POST"
    assert route.upstream_method == b"PUT"


def test_compiled_routes_are_in_the_route_table():
    snap = compile_config(cfg(ep("/a"), ep("/u/{id}", "/users/{id}"), ep("/f/*", "/files"),
                              ep("/a", method="POST")))
    assert snap.routes.match(b"GET", b"/a")[0] is snap.route_list[0]
    assert snap.routes.match(b"GET", b"/u/7")[:2] == (snap.route_list[1], {"id": b"7"})
    assert snap.routes.match(b"GET", b"/f/x/y")[2] == b"x/y"
    assert snap.routes.match(b"POST", b"/a")[0] is snap.route_list[3]


def test_no_op_encodings_and_schema_key_give_no_warning():
    raw = cfg(ep("/a", output_encoding="no-op", backend={"encoding": "no-op"}),
              output_encoding="no-op", **{"$schema": "https://www.krakend.io/schema/v2.13/krakend.json"})
    assert compile_config(raw).warnings == ()


def test_config_is_not_modified_by_compiling():
    raw = cfg(ep("/a", backend={"host": ["http://127.0.0.1:8082"]}), timeout="3s")
    before = copy.deepcopy(raw)
    compile_config(raw)
    assert raw == before


# ---------------------------------------------------------------------------------------------
# Refused configurations: (id, config, JSON path, words the message must contain)

BAD = [
    ("version is not 3", {"version": 2, "endpoints": []},
     "$.version", ["expected 3", "found 2"]),
    ("version missing", {"endpoints": []},
     "$.version", ["required field is missing", "expected int", "found nothing"]),
    ("version as a string", {"version": "3", "endpoints": []},
     "$.version", ["expected int", "found str"]),
    ("top level is an array", [],
     "$", ["expected an object at the top level", "found array"]),
    ("port is a string", cfg(port="8080"),
     "$.port", ["expected int", "found str"]),
    ("port out of range", cfg(port=70000),
     "$.port", ["expected a TCP port 0-65535", "found 70000"]),
    ("root timeout is a number", cfg(timeout=5),
     "$.timeout", ["expected str", "found int"]),
    ("root timeout zero", cfg(ep("/a"), timeout="0"),
     "$.timeout", ["expected a positive duration", "found '0'"]),
    ("endpoints is an object", cfg() | {"endpoints": {"/a": {}}},
     "$.endpoints", ["expected array", "found object"]),
    ("endpoint is a number", cfg(5),
     "$.endpoints[0]", ["expected object", "found int"]),
    ("endpoint path missing", cfg({"backend": [{"url_pattern": "/a"}]}),
     "$.endpoints[0].endpoint", ["required field is missing", "expected str"]),
    ("url_pattern not a string", cfg({"endpoint": "/a", "backend": [{"url_pattern": 5}]}),
     "$.endpoints[0].backend[0].url_pattern", ["expected str", "found int"]),
    ("url_pattern unclosed brace", cfg(ep("/a/{id}", "/a/{id")),
     "$.endpoints[0].backend[0].url_pattern", ["expected '}' to close '{'", "found '/a/{id'"]),
    ("placeholder not in endpoint", cfg(ep("/users/{id}", "/u/{user}")),
     "$.endpoints[0].backend[0].url_pattern",
     ["placeholder {user} is not a parameter of the endpoint", "expected one of its parameters ({id})",
      "found {user}"]),
    ("bad duration on the second endpoint", cfg(ep("/a"), ep("/b", timeout="2 seconds")),
     "$.endpoints[1].timeout", ["expected a duration such as \"500ms\" or \"2s\"", "found '2 seconds'"]),
    ("endpoint timeout as a number", cfg(ep("/a", timeout=3)),
     "$.endpoints[0].timeout", ["expected str", "found int"]),
    ("unknown fastproxy setting", cfg(ep("/a"), extra_config={"fastproxy": {"worker": 2}}),
     '$.extra_config["fastproxy"].worker', ["unknown setting", "expected one of", "workers"]),
    ("unknown fastproxy admin setting", cfg(ep("/a"), extra_config={"fastproxy": {"admin": {"host": "x"}}}),
     '$.extra_config["fastproxy"].admin.host', ["unknown setting", "expected one of listen_ip, port"]),
    ("fastproxy setting of the wrong type", cfg(ep("/a"), extra_config={"fastproxy": {"workers": "4"}}),
     '$.extra_config["fastproxy"].workers', ["expected int", "found str"]),
    ("fastproxy nested setting of the wrong type",
     cfg(ep("/a"), extra_config={"fastproxy": {"admin": {"port": "9091"}}}),
     '$.extra_config["fastproxy"].admin.port', ["expected int", "found str"]),
    ("fastproxy boolean of the wrong type", cfg(ep("/a"), extra_config={"fastproxy": {"access_log": "yes"}}),
     '$.extra_config["fastproxy"].access_log', ["expected bool", "found str"]),
    ("fastproxy workers zero", cfg(ep("/a"), extra_config={"fastproxy": {"workers": 0}}),
     '$.extra_config["fastproxy"].workers', ["expected an integer >= 1", "found 0"]),
    ("fastproxy bad duration", cfg(ep("/a"), extra_config={"fastproxy": {"drain_timeout": "soon"}}),
     '$.extra_config["fastproxy"].drain_timeout', ["expected a duration", "found 'soon'"]),
    ("fastproxy block not an object", cfg(ep("/a"), extra_config={"fastproxy": [1]}),
     '$.extra_config["fastproxy"]', ["expected object", "found array"]),
    ("two backends", cfg({"endpoint": "/a", "backend": [{"url_pattern": "/a"}, {"url_pattern": "/b"}]}),
     "$.endpoints[0].backend", ["expected exactly one backend", "found 2"]),
    ("no backend", cfg({"endpoint": "/a", "backend": []}),
     "$.endpoints[0].backend", ["expected exactly one backend", "found 0"]),
    ("no host anywhere", {"version": 3, "endpoints": [ep("/a")]},
     "$.endpoints[0].backend[0].host", ["expected a list of 'scheme://host:port' here or in the root 'host'",
                                        "found neither"]),
    ("endpoint method unknown", cfg(ep("/a", method="FETCH")),
     "$.endpoints[0].method", ["expected one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT", "found 'FETCH'"]),
    ("backend method unknown", cfg(ep("/a", backend={"method": "GIVE"})),
     "$.endpoints[0].backend[0].method", ["expected one of DELETE, GET", "found 'GIVE'"]),
    ("host without scheme, sanitising off", cfg(ep("/a", backend={"host": ["127.0.0.1:8081"],
                                                                   "disable_host_sanitize": True})),
     "$.endpoints[0].backend[0].host[0]", ["expected 'scheme://host:port'", "found '127.0.0.1:8081'"]),
    ("host with other scheme", cfg(ep("/a", backend={"host": ["ftp://127.0.0.1"]})),
     "$.endpoints[0].backend[0].host[0]", ["expected an http://, https://, ws:// or wss:// host", "found 'ftp://127.0.0.1'"]),
    ("host with a path", cfg(ep("/a", backend={"host": ["http://h:1/api"]})),
     "$.endpoints[0].backend[0].host[0]", ["expected 'scheme://host:port' with no path", "found 'http://h:1/api'"]),
    ("host port out of range", cfg(ep("/a", backend={"host": ["http://h:99999"]})),
     "$.endpoints[0].backend[0].host[0]", ["with a port 1-65535", "found 'http://h:99999'"]),
    ("host port zero", cfg(ep("/a", backend={"host": ["http://h:0"]})),
     "$.endpoints[0].backend[0].host[0]", ["with a port 1-65535", "found 'http://h:0'"]),
    ("root host is a string", {"version": 3, "host": HOST, "endpoints": []},
     "$.host", ["expected array", "found str"]),
    ("bad root host", {"version": 3, "host": ["ftp://nohost"], "endpoints": [ep("/a")]},
     "$.host[0]", ["expected an http://, https://, ws:// or wss:// host", "found 'ftp://nohost'"]),
    ("duplicate endpoint", cfg(ep("/a"), ep("/b"), ep("/a")),
     "$.endpoints[2].endpoint", ["GET /a is defined twice", "first at $.endpoints[0]"]),
    ("duplicate endpoint method spelt in lower case", cfg(ep("/a", method="POST"), ep("/a", method="post")),
     "$.endpoints[1].endpoint", ["POST /a is defined twice"]),
    ("conflicting parameter names", cfg(ep("/u/{id}"), ep("/u/{name}/x", "/x")),
     "$.endpoints[1].endpoint", ["parameter {name} conflicts with {id} at the same position"]),
    ("endpoint pattern half a brace", cfg(ep("/a/{id", "/a")),
     "$.endpoints[0].endpoint", ["expected a literal segment or a whole '{param}' segment", "found '{id'"]),
    ("endpoint pattern without slash", cfg(ep("a", "/a")),
     "$.endpoints[0].endpoint", ["expected a path starting with '/'", "found 'a'"]),
    ("endpoint pattern star in the middle", cfg(ep("/a/*/b", "/a")),
     "$.endpoints[0].endpoint", ["expected '*' only as the last segment"]),
    ("input_headers not a list", cfg(ep("/a", input_headers="Authorization")),
     "$.endpoints[0].input_headers", ["expected array", "found str"]),
    ("input_query_strings item not a string", cfg(ep("/a", input_query_strings=["a", 1])),
     "$.endpoints[0].input_query_strings[1]", ["expected str", "found int"]),
    ("extra_config not an object", cfg(ep("/a", extra_config=[])),
     "$.endpoints[0].extra_config", ["expected object", "found array"]),
    ("listen_ip not an address", cfg(listen_ip="localhost:80"),
     "$.listen_ip", ["expected an IPv4 or IPv6 address", "found 'localhost:80'"]),
    ("admin port out of range", cfg(extra_config={"fastproxy": {"admin": {"port": 70000}}}),
     '$.extra_config["fastproxy"].admin.port', ["expected a TCP port 0-65535", "found 70000"]),
    ("admin listen_ip not an address", cfg(extra_config={"fastproxy": {"admin": {"listen_ip": "x"}}}),
     '$.extra_config["fastproxy"].admin.listen_ip', ["expected an IPv4 or IPv6 address", "found 'x'"]),
    ("negative idle pool size", cfg(extra_config={"fastproxy": {"max_idle_per_host": -1}}),
     '$.extra_config["fastproxy"].max_idle_per_host', ["expected an integer >= 0", "found -1"]),
    ("redis_timeout without any redis pool", cfg(extra_config={"fastproxy": {"redis_timeout": "soon"}}),
     '$.extra_config["fastproxy"].redis_timeout', ["expected a duration", "found 'soon'"]),
    ("response_header_timeout not a duration", cfg(response_header_timeout="banana"),
     "$.response_header_timeout", ["expected a duration", "found 'banana'"]),
    ("unknown strategy without a client rate",
     cfg(ep("/a", extra_config={"qos/ratelimit/router": {"max_rate": 10, "strategy": "cookie"}})),
     '$.endpoints[0].extra_config["qos/ratelimit/router"].strategy', ["expected one of ip, header, param",
                                                                      "found 'cookie'"]),
    ("a backend limit and its legacy alias on one backend",
     cfg(ep("/a", backend={"extra_config": {"qos/ratelimit/proxy": {"max_rate": 1},
                                            "github.com/devopsfaith/krakend-ratelimit/juju/proxy": {"maxRate": 1}}})),
     '$.endpoints[0].backend[0].extra_config["github.com/devopsfaith/krakend-ratelimit/juju/proxy"]',
     ["the same limit is configured twice"]),
]


@pytest.mark.parametrize("raw,path,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_config_is_refused_naming_the_path_expected_and_found(raw, path, words):
    problems = errors_of(raw)
    mine = [p for p in problems if p.startswith(path + ": ")]
    assert len(mine) == 1, f"no single error at {path}: {problems}"
    for w in words:
        assert w in mine[0], f"{w!r} not in {mine[0]!r}"


def test_bad_configs_cover_many_distinct_paths():
    assert len({b[2] for b in BAD}) >= 12


def test_every_error_of_a_file_is_listed_at_once():
    raw = {
        "version": 3,
        "port": "x",
        "timeout": 5,
        "host": [HOST],
        "extra_config": {"fastproxy": {"bogus": 1, "workers": "2", "admin": {"port": "x"}}},
        "endpoints": [
            ep("/a", method="FETCH", timeout=3, backend={"url_pattern": "/b/{x}", "method": "ZAP"}),
            ep("/c", backend={"host": ["ftp://x"]}),
            ep("/d/{id", "/d"),
            ep("/e", timeout="1y"),
            {"endpoint": "/f", "backend": [{"url_pattern": "/f"}, {"url_pattern": "/g"}]},
            ep("/e", timeout="1s"),
        ],
    }
    paths = [p.split(": ", 1)[0] for p in errors_of(raw)]
    assert paths == [
        "$.port",
        "$.timeout",
        '$.extra_config["fastproxy"].bogus',
        '$.extra_config["fastproxy"].workers',
        '$.extra_config["fastproxy"].admin.port',
        "$.endpoints[0].timeout",
        "$.endpoints[0].method",
        "$.endpoints[0].backend[0].method",
        "$.endpoints[0].backend[0].url_pattern",
        "$.endpoints[1].backend[0].host[0]",
        "$.endpoints[2].endpoint",
        "$.endpoints[3].timeout",
        "$.endpoints[4].backend",
        "$.endpoints[5].endpoint",
    ]


def test_config_error_lists_problems_one_per_line():
    exc = ConfigError(["$.a: x", "$.b: y"])
    assert str(exc) == "$.a: x\n$.b: y"


# ---------------------------------------------------------------------------------------------
# Warnings: what a migrating user sees ignored


def warnings_of(raw) -> list:
    return list(compile_config(raw).warnings)


WARNINGS = [
    ("telemetry/opentelemetry on an endpoint",
     cfg(ep("/a", extra_config={"telemetry/opentelemetry": {}})),
     '$.endpoints[0].extra_config["telemetry/opentelemetry"]', "recognised KrakenD namespace, not implemented by fastproxy"),
    ("modifier/jmespath on an endpoint",
     cfg(ep("/a", extra_config={"modifier/jmespath": {"expr": "a"}})),
     '$.endpoints[0].extra_config["modifier/jmespath"]', "recognised KrakenD namespace, not implemented by fastproxy"),
    ("telemetry/logging at the root",
     cfg(ep("/a"), extra_config={"telemetry/logging": {"level": "INFO"}}),
     '$.extra_config["telemetry/logging"]', "recognised KrakenD namespace, not implemented by fastproxy"),
    ("backend/http on a backend",
     cfg(ep("/a", backend={"extra_config": {"backend/http": {"return_error_code": True}}})),
     '$.endpoints[0].backend[0].extra_config["backend/http"]', "recognised KrakenD namespace"),
    ("output_encoding json on an endpoint", cfg(ep("/a", output_encoding="json")),
     "$.endpoints[0].output_encoding", "'json' (KrakenD's default) is not implemented: the response is streamed as 'no-op'"),
    ("backend encoding misspelt", cfg(ep("/a", backend={"encoding": "no_op"})),
     "$.endpoints[0].backend[0].encoding", "unknown backend encoding 'no_op' (did you mean `no-op`?)"),
    ("root cache_ttl", cfg(ep("/a"), cache_ttl="300s"),
     "$.cache_ttl", "recognised KrakenD field, not implemented by fastproxy: ignored"),
    ("root output_encoding xml, inherited", cfg(ep("/a"), output_encoding="xml"),
     "$.endpoints[0]", "output_encoding 'xml' is not implemented: the response is streamed as 'no-op'"),
    ("endpoint concurrent_calls", cfg(ep("/a", concurrent_calls=3)),
     "$.endpoints[0].concurrent_calls", "recognised KrakenD field, not implemented by fastproxy"),
    ("backend mapping", cfg(ep("/a", backend={"mapping": {"a": "b"}})),
     "$.endpoints[0].backend[0].mapping", "recognised KrakenD field, not implemented by fastproxy"),
    ("unknown root field", cfg(ep("/a"), colour="blue"),
     "$.colour", "unknown field: ignored"),
    ("unknown endpoint field", cfg(ep("/a", colour="blue")),
     "$.endpoints[0].colour", "unknown field: ignored"),
    ("KrakenD 1.x endpoint field", cfg(ep("/a", headers_to_pass=["X"])),
     "$.endpoints[0].headers_to_pass", "KrakenD 1.x name of `input_headers`"),
    ("unknown namespace at the root", cfg(ep("/a"), extra_config={"acme/thing": {}}),
     '$.extra_config["acme/thing"]', "unknown namespace: ignored"),
    ("response_header_timeout is read but not used", cfg(ep("/a"), response_header_timeout="1s"),
     "$.response_header_timeout", "not used by fastproxy: the endpoint timeout bounds the wait"),
    ("unknown field in a backend limit",
     cfg(ep("/a", backend={"extra_config": {"qos/ratelimit/proxy": {"max_rate": 1, "burst": 3}}})),
     '$.endpoints[0].backend[0].extra_config["qos/ratelimit/proxy"].burst', "unknown field: ignored"),
    ("unknown namespace on a backend",
     cfg(ep("/a", backend={"extra_config": {"acme/thing": {}}})),
     '$.endpoints[0].backend[0].extra_config["acme/thing"]', "unknown namespace: ignored"),
]


@pytest.mark.parametrize("raw,path,words", [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS])
def test_recognised_or_unknown_but_unimplemented_config_is_a_warning_not_an_error(raw, path, words):
    warnings = warnings_of(raw)
    mine = [w for w in warnings if w.startswith(path + ": ")]
    assert len(mine) == 1, f"no single warning at {path}: {warnings}"
    assert words in mine[0]


def test_warnings_do_not_stop_the_routes_from_compiling():
    snap = compile_config(cfg(ep("/a", output_encoding="json", extra_config={"telemetry/opentelemetry": {}}),
                              cache_ttl="1s"))
    assert len(snap.route_list) == 1
    assert len(snap.warnings) == 3


# ---------------------------------------------------------------------------------------------
# Files: JSON, YAML, TOML, and their syntax errors with line and column


GOOD_JSON = json.dumps(cfg(ep("/a/{id}", "/b/{id}", timeout="3s")), indent=2)

GOOD_YAML = """\
version: 3
port: 9000
timeout: 3s
host:
  - http://127.0.0.1:8081
endpoints:
  - endpoint: /a/{id}
    method: POST
    input_headers: [Authorization]
    backend:
      - url_pattern: /b/{id}
        host: [http://127.0.0.1:8082]
"""

GOOD_TOML = """\
version = 3
port = 9000
timeout = "3s"
host = ["http://127.0.0.1:8081"]

[[endpoints]]
endpoint = "/a/{id}"
method = "POST"
input_headers = ["Authorization"]

[[endpoints.backend]]
url_pattern = "/b/{id}"
host = ["http://127.0.0.1:8082"]
"""


def write(tmp_path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_json_yaml_and_toml_files_load_alike(tmp_path):
    j = load(write(tmp_path, "k.json", GOOD_JSON))
    assert j.source.endswith("k.json")
    assert [r.name for r in j.route_list] == ["/a/{id}"]
    for name, text in (("k.yaml", GOOD_YAML), ("k.yml", GOOD_YAML), ("k.toml", GOOD_TOML)):
        snap = load(write(tmp_path, name, text))
        (route,) = snap.route_list
        assert snap.port == 9000, name
        assert (route.name, route.method, route.timeout) == ("/a/{id}", "POST", 3.0), name
        assert route.header_names == frozenset({b"authorization"}), name
        assert [t.key for t in route.targets] == ["http://127.0.0.1:8082"], name


SYNTAX_ERRORS = [
    ("bad.json", '{\n  "version": 3,\n  "endpoints": [\n    {"endpoint": "/a",}\n  ]\n}\n',
     "line 4, column 23: invalid JSON: trailing comma"),
    ("bad2.json", '{\n  "version": 3\n  "port": 1\n}\n', "line 3, column 3: invalid JSON"),
    ("truncated.json", '{\n  "version": 3,\n  "endpoints": [\n', "line 4, column 1: invalid JSON: unexpected end"),
    ("empty.json", "", "line 1, column 1: invalid JSON: unexpected end"),
    ("bad.yaml", "version: 3\nendpoints:\n  - endpoint: /a\n   backend: x\n", "line 4, column 4: invalid YAML"),
    ("bad.yml", "version: 3\nhost: [a, b\n", "invalid YAML"),
    ("bad.toml", 'version = 3\nport = \n', "line 2, column 8: invalid TOML: Invalid value"),
    ("unterminated.toml", 'version = 3\nhost = [\n', "line 3, column 1: invalid TOML"),
]


@pytest.mark.parametrize("name,text,words", SYNTAX_ERRORS, ids=[s[0] for s in SYNTAX_ERRORS])
def test_file_that_does_not_parse_reports_line_and_column(tmp_path, name, text, words):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    (problem,) = exc.value.problems
    assert problem.startswith(f"{path}: ")
    assert words in problem


def test_yaml_flow_error_names_a_line(tmp_path):
    path = write(tmp_path, "bad.yml", "version: 3\nhost: [a, b\n")
    with pytest.raises(ConfigError) as exc:
        load_file(path)
    assert "line 3, column 1" in exc.value.problems[0]


def test_toml_that_is_not_utf8_is_refused(tmp_path):
    p = tmp_path / "bin.toml"
    p.write_bytes(b"version = 3\n\xff\n")
    with pytest.raises(ConfigError) as exc:
        load_file(str(p))
    assert "invalid TOML: not UTF-8 at byte 12" in exc.value.problems[0]


def test_missing_file_is_reported_with_its_name(tmp_path):
    path = str(tmp_path / "nope.json")
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert exc.value.problems == [f"{path}: cannot read the file: No such file or directory"]


def test_empty_yaml_document_is_refused_as_not_an_object(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, "empty.yaml", ""))
    assert exc.value.problems == ["$: expected an object at the top level, found an empty document"]


def test_load_reports_meaning_errors_with_json_paths_for_yaml_too(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(write(tmp_path, "k.yaml", GOOD_YAML.replace("timeout: 3s", "timeout: 3")))
    assert exc.value.problems == ["$.timeout: expected str, found int (line 3, column 10)"]

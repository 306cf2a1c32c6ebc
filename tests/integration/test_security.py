"""Security filters over real sockets (SPEC §3.9–§3.12, §3 evaluation order, §4 X-Forwarded-For).

Client addresses: the whole 127.0.0.0/8 is loopback on Linux, so a test picks its peer address
by binding the client socket to 127.0.0.1, .2, .3 or .4 before connecting to the proxy on
127.0.0.1. A small MaxMind City database built with mmdb-writer maps those addresses (and two
documentation networks reached through a trusted X-Forwarded-For) to countries.

One proxy holds every endpoint-level filter; root-level filters each get a proxy of their own
(a proxy starts in ~0.1 s). Every rejection is checked to be 403, and its reason is read from
the access log (JSON lines on the proxy's stderr).
"""

import http.client
import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from fastproxy.config.compile import compile_config
from fastproxy.config.load import ConfigError
from tests.support import ROOT, Proxy, Upstream, config, ep

ES, US, UNKNOWN, DE = "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"
DOC_DE, DOC_FR = "192.0.2.5", "198.51.100.7"  # in the database through networks 192.0.2.0/24, 198.51.100.0/24

# KrakenD's documented bot-detector example
KRAKEND_BOT = {
    "deny": ["a", "b"],
    "allow": ["c", "Pingdom.com_bot_version_1.1"],
    "patterns": ["(Pingdom.com_bot_version_).*", "(facebookexternalhit)/.*"],
    "cache_size": 1000,
}
KRAKEND_VERDICTS = [
    ("a", 403), ("b", 403),  # deny list
    ("c", 200), ("Pingdom.com_bot_version_1.1", 200),  # allow list beats the patterns
    ("Pingdom.com_bot_version_1.2", 403), ("facebookexternalhit/1.1", 403),  # patterns
    ("Mozilla/5.0 facebookexternalhit/1.0 (+http://www.facebook.com)", 403),  # unanchored search
    ("ab", 200), ("A", 200), ("facebookexternalhit", 200),  # exact lists; pattern needs the slash
    ("Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", 200), (None, 200),  # no UA: not a bot by default
]


# ------------------------------------------------------------------ helpers

def req(port, path, headers=None, source=ES, method="GET"):
    """One request from `source` (a loopback address): (status, headers, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5, source_address=(source, 0))
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def ua(port, path, agent, source=ES):
    return req(port, path, {} if agent is None else {"User-Agent": agent}, source)[0]


def upstream_headers(u, marker) -> dict:
    """Headers (lower-case name -> [values]) of the request the backend got for /echo/<marker>."""
    for r in list(u.requests):
        if r["url"] == f"/echo/{marker}":
            out: dict = {}
            for n, v in r["headers"]:
                out.setdefault(n.lower(), []).append(v)
            return out
    raise AssertionError(f"/echo/{marker} never reached the backend")


def access_log(proxy) -> list:
    return [json.loads(line) for line in proxy.stderr().splitlines() if line.startswith("{")]


def reasons(proxy, path_prefix) -> list:
    return [(r["client"], r["status"], r.get("reason")) for r in access_log(proxy)
            if r["path"].startswith(path_prefix)]


def mark() -> str:
    return uuid.uuid4().hex[:12]


def fence(**kw) -> dict:
    return {"security/geofence": kw}


def ipf(cidr, allow, **kw) -> dict:
    return {"security/ip-filter": {"CIDR": cidr, "allow": allow, **kw}}


def bot(**kw) -> dict:
    return {"security/bot-detector": kw}


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def geodb(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("geo") / "city.mmdb")
    w = MMDBWriter(ip_version=6, database_type="GeoIP2-City", ipv4_compatible=True)

    def city(iso, country, name, lat, lon):
        return {"city": {"names": {"en": name}}, "country": {"iso_code": iso, "names": {"en": country}},
                "location": {"latitude": lat, "longitude": lon}}

    w.insert_network(IPSet([f"{ES}/32"]), city("ES", "Spain", "Madrid", 40.4, -3.7))
    w.insert_network(IPSet([f"{US}/32"]), city("US", "United States", "Boston", 42.4, -71.1))
    w.insert_network(IPSet([f"{DE}/32", "192.0.2.0/24"]), city("DE", "Germany", "Berlin", 52.5, 13.4))
    w.insert_network(IPSet(["198.51.100.0/24"]), city("FR", "France", "Paris", 48.9, 2.4))
    w.to_db_file(path)
    return path


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture
def make(tmp_path, upstream):
    """make(endpoints, **root_extra) -> a started Proxy in front of `upstream`; stopped after."""
    started: list = []

    def _make(endpoints, settings=None, **extra):
        cfg = config(upstream, endpoints, listen_ip="127.0.0.1", timeout="2s",
                     extra_config={"fastproxy": {"access_log": True, **(settings or {})}, **extra})
        p = Proxy(cfg, tmp_path, name=f"fastproxy{len(started)}.json")
        started.append(p)
        return p

    yield _make
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def eps(tmp_path_factory, upstream, geodb):
    """One proxy with every endpoint-level filter; no root filter, no trusted proxy."""
    endpoints = [
        ep("/open/{id}", "/echo/{id}"),
        ep("/bot/{id}", "/echo/{id}", extra_config=bot(**KRAKEND_BOT)),
        ep("/bot-empty", "/", extra_config=bot(empty_user_agent_is_bot=True)),
        ep("/redos", "/", extra_config=bot(patterns=["(a+)+$"])),
        ep("/ip/allow-local", "/", extra_config=ipf(["127.0.0.1/32"], True)),
        ep("/ip/allow-other", "/", extra_config=ipf(["10.0.0.0/8", "2001:db8::/32", "127.0.0.2"], True)),
        ep("/ip/deny-local", "/", extra_config=ipf(["127.0.0.0/8"], False)),
        ep("/ip/deny-other", "/", extra_config=ipf(["192.168.0.0/16", "::1", "127.0.0.2"], False)),
        ep("/ip/spoof-deny/{id}", "/echo/{id}", extra_config=ipf(["203.0.113.0/24"], False)),
        ep("/ip/spoof-allow", "/", extra_config=ipf(["203.0.113.7"], True)),
        ep("/ip/own-headers/{id}", "/echo/{id}", extra_config=ipf(
            ["203.0.113.0/24"], False, trusted_proxies=["127.0.0.1"], client_ip_headers=["X-Client-IP"])),
        ep("/ip/own-trusted", "/", extra_config=ipf(
            ["203.0.113.0/24"], False, trusted_proxies=["127.0.0.1", "10.0.0.0/8"])),
        ep("/geo/allow-es", "/", extra_config=fence(db_path=geodb, allow_countries=["ES"])),
        ep("/geo/deny-us", "/", extra_config=fence(db_path=geodb, deny_countries=["us"], unknown="deny")),
        ep("/order", "/", extra_config={
            **ipf([UNKNOWN], False),
            **fence(db_path=geodb, allow_countries=["ES", "US"], unknown="deny"),
            **bot(deny=["evil"]),
            "qos/ratelimit/router": {"max_rate": 1, "every": "1h", "capacity": 2},
        }),
    ]
    cfg = config(upstream, endpoints, listen_ip="127.0.0.1", timeout="2s",
                 extra_config={"fastproxy": {"access_log": True, "max_header_size": 131072,
                                             "max_head_size": 262144}})
    p = Proxy(cfg, tmp_path_factory.mktemp("eps"))
    yield p
    p.stop()


# ------------------------------------------------------------------ bot detector

@pytest.mark.parametrize("agent,status", KRAKEND_VERDICTS)
def test_endpoint_bot_detector_krakend_example(eps, agent, status):
    assert ua(eps.port, f"/bot/{mark()}", agent) == status
    assert ua(eps.port, f"/open/{mark()}", agent) == 200  # the next endpoint has no detector


def test_root_bot_detector_krakend_example_covers_every_endpoint_but_health(make):
    p = make([ep("/one", "/"), ep("/two/{x}", "/")], **bot(**KRAKEND_BOT))
    for agent, status in KRAKEND_VERDICTS:
        assert (agent, ua(p.port, "/one", agent)) == (agent, status)
        assert (agent, ua(p.port, "/two/z", agent)) == (agent, status)
    assert ua(p.port, "/__health", "a") == 200
    rejected = [r for r in access_log(p) if r["status"] == 403]
    assert rejected and {r["reason"] for r in rejected} == {"bot detector"}


def test_empty_user_agent_is_bot(eps):
    assert ua(eps.port, "/bot-empty", None) == 403
    assert ua(eps.port, "/bot-empty", "") == 403
    assert ua(eps.port, "/bot-empty", "curl/8.5") == 200
    assert ua(eps.port, f"/open/{mark()}", None) == 200


def test_catastrophic_regex_on_a_64k_user_agent_is_answered_fast(eps):
    no_match = "a" * 65536 + "!"  # exponential for a backtracking engine
    match = "a" * 65536
    for agent, status in ((no_match, 200), (match, 403), ("b" + no_match, 200)):
        t0 = time.monotonic()
        got = ua(eps.port, "/redos", agent)
        elapsed = time.monotonic() - t0
        print(f"\n(a+)+$ against {len(agent)} bytes: {got} in {elapsed * 1000:.1f} ms")
        assert got == status
        assert elapsed < 0.5


# ------------------------------------------------------------------ ip filter

@pytest.mark.parametrize("path,status", [
    ("/ip/allow-local", 200), ("/ip/allow-other", 403), ("/ip/deny-local", 403), ("/ip/deny-other", 200)])
def test_endpoint_ip_filter_allow_and_deny(eps, path, status):
    assert req(eps.port, path)[0] == status


def test_endpoint_ip_filter_sees_the_real_peer(eps):
    assert req(eps.port, "/ip/allow-other", source=US)[0] == 200  # 127.0.0.2 is listed
    assert req(eps.port, "/ip/allow-local", source=US)[0] == 403
    assert req(eps.port, "/ip/deny-other", source=US)[0] == 403
    assert req(eps.port, "/ip/deny-other", source=UNKNOWN)[0] == 200
    log = reasons(eps, "/ip/")
    assert all(reason == "ip filter" for _, status, reason in log if status == 403)


def test_root_ip_filter_allow(make):
    p = make([ep("/one", "/"), ep("/two", "/")], **ipf(["127.0.0.1", "127.0.0.2/32"], True))
    for path in ("/one", "/two"):
        assert req(p.port, path, source=ES)[0] == 200
        assert req(p.port, path, source=US)[0] == 200
        assert req(p.port, path, source=UNKNOWN)[0] == 403
    assert req(p.port, "/__health", source=UNKNOWN)[0] == 200  # never filtered


def test_root_ip_filter_deny(make):
    p = make([ep("/one", "/")], **ipf(["127.0.0.0/8"], False))
    for source in (ES, US, UNKNOWN):
        assert req(p.port, "/one", source=source)[0] == 403
    assert req(p.port, "/__health")[0] == 200
    assert {r for _, _, r in reasons(p, "/one")} == {"ip filter"}


def test_plugin_http_server_ip_filter_form(make):
    p = make([ep("/one", "/")], **{"plugin/http-server": {
        "name": ["ip-filter"], "ip-filter": {"CIDR": ["127.0.0.2", "127.0.0.3/32"], "allow": False}}})
    assert req(p.port, "/one", source=ES)[0] == 200
    assert req(p.port, "/one", source=US)[0] == 403
    assert req(p.port, "/one", source=UNKNOWN)[0] == 403
    assert req(p.port, "/__health", source=US)[0] == 200
    p2 = make([ep("/one", "/")], **{"plugin/http-server": {
        "name": "ip-filter", "ip-filter": {"CIDR": ["127.0.0.1"], "allow": True}}})
    assert req(p2.port, "/one", source=ES)[0] == 200
    assert req(p2.port, "/one", source=US)[0] == 403


# ------------------------------------------------------------------ client IP

def test_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(eps, upstream):
    m = mark()
    status, _, _ = req(eps.port, f"/ip/spoof-deny/{m}", {"X-Forwarded-For": "203.0.113.7",
                                                         "X-Real-IP": "203.0.113.8"})
    assert status == 200  # the filter saw 127.0.0.1, not the header
    assert req(eps.port, "/ip/spoof-allow", {"X-Forwarded-For": "203.0.113.7"})[0] == 403
    assert req(eps.port, "/ip/spoof-allow", {"X-Real-IP": "203.0.113.7"})[0] == 403
    # SPEC §4: the client's own X-Forwarded-For is discarded; the peer alone goes upstream
    assert upstream_headers(upstream, m)["x-forwarded-for"] == ["127.0.0.1"]


def test_per_filter_trusted_proxies_and_client_ip_headers(eps, upstream):
    port = eps.port
    m1, m2, m3 = mark(), mark(), mark()
    assert req(port, f"/ip/own-headers/{m1}", {"X-Client-IP": "203.0.113.9"})[0] == 403
    assert req(port, f"/ip/own-headers/{m2}", {"X-Forwarded-For": "203.0.113.9"})[0] == 200  # not its header
    assert req(port, f"/ip/own-headers/{m3}", {"X-Client-IP": "198.51.100.1"})[0] == 200
    assert req(port, f"/ip/own-headers/{mark()}", {"X-Client-IP": "203.0.113.9"}, source=US)[0] == 200  # untrusted
    # the override is the filter's own: the root still trusts nobody, so upstream gets the peer
    assert upstream_headers(upstream, m3)["x-forwarded-for"] == ["127.0.0.1"]
    assert upstream_headers(upstream, m2)["x-forwarded-for"] == ["127.0.0.1"]
    # right to left, skipping trusted hops: the rightmost untrusted address is the client
    assert req(port, "/ip/own-trusted", {"X-Forwarded-For": "203.0.113.7, 10.0.0.5"})[0] == 403
    assert req(port, "/ip/own-trusted", {"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})[0] == 200
    assert req(port, "/ip/own-trusted", {"X-Forwarded-For": "203.0.113.7"}, source=US)[0] == 200
    assert req(port, "/ip/own-trusted", {"X-Real-IP": "203.0.113.7"})[0] == 403  # default headers


def test_router_trusted_proxies_decide_the_client_ip_for_every_filter(make, upstream):
    p = make([ep("/echo/{id}")], router={"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]},
             **ipf(["203.0.113.0/24", "2001:db8::/32"], False))
    port = p.port
    # IPv6 and IPv4-mapped forms, trusted IPv6 hops, several header lines joined
    for xff in ("2001:db8::1", "2001:DB8:0:0::7, fd00::1", "::ffff:203.0.113.9", "203.0.113.7, fd12::3"):
        assert (xff, req(port, f"/echo/{mark()}", {"X-Forwarded-For": xff})[0]) == (xff, 403)
    for xff in ("2001:db9::1", "2001:db8::1, 2a00::1", "garbage", "203.0.113.7, garbage"):
        assert (xff, req(port, f"/echo/{mark()}", {"X-Forwarded-For": xff})[0]) == (xff, 200)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.putrequest("GET", f"/echo/{mark()}")
    c.putheader("X-Forwarded-For", "198.51.100.2")
    c.putheader("X-Forwarded-For", "203.0.113.7")
    c.endheaders()
    assert c.getresponse().status == 403  # the last hop of the joined chain
    c.close()
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": "203.0.113.7"})[0] == 403  # trusted peer honoured
    assert req(port, f"/echo/{mark()}", {"X-Real-IP": "203.0.113.7"})[0] == 403
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": "203.0.113.7, 10.1.2.3"})[0] == 403
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})[0] == 200
    m = mark()
    assert req(port, f"/echo/{m}", {"X-Forwarded-For": "203.0.113.7"}, source=US)[0] == 200  # untrusted peer
    assert upstream_headers(upstream, m)["x-forwarded-for"] == [US]  # its header discarded
    m = mark()
    assert req(port, f"/echo/{m}", {"X-Forwarded-For": "198.51.100.2, 10.0.0.9"})[0] == 200
    # a trusted peer's chain is passed on with the peer appended
    assert upstream_headers(upstream, m)["x-forwarded-for"] == ["198.51.100.2, 10.0.0.9, 127.0.0.1"]
    m = mark()
    assert req(port, f"/echo/{m}")[0] == 200
    assert upstream_headers(upstream, m)["x-forwarded-for"] == ["127.0.0.1"]
    clients = {r["client"] for r in access_log(p) if r["status"] == 403}
    # the access log names the resolved client, in canonical form
    assert clients == {"203.0.113.7", "2001:db8::1", "2001:db8::7", "203.0.113.9"}


# ------------------------------------------------------------------ geofence and geoip

@pytest.mark.parametrize("path,source,status", [
    ("/geo/allow-es", ES, 200), ("/geo/allow-es", US, 403), ("/geo/allow-es", DE, 403),
    ("/geo/allow-es", UNKNOWN, 200),  # unknown defaults to allow
    ("/geo/deny-us", ES, 200), ("/geo/deny-us", US, 403), ("/geo/deny-us", DE, 200),
    ("/geo/deny-us", UNKNOWN, 403),  # unknown: deny
])
def test_endpoint_geofence(eps, path, source, status):
    assert req(eps.port, path, source=source)[0] == status


def test_root_geofence_geoip_and_http_server_ip_filter(make, upstream, geodb):
    p = make([ep("/echo/{id}"), ep("/star/{id}", "/echo/{id}", input_headers=["*"])],
             router={"trusted_proxies": ["127.0.0.1"]},
             **{"plugin/http-server": {"name": ["ip-filter", "geoip"],
                                       "ip-filter": {"CIDR": [US], "allow": False},
                                       "geoip": {"citydb_path": geodb}},
                "security/geofence": {"db_path": geodb, "deny_countries": ["FR"], "unknown": "deny"}})
    port = p.port

    def geo(m):
        values = upstream_headers(upstream, m).get("x-geoip", [])
        assert len(values) == 1, values
        return json.loads(values[0])

    m = mark()
    assert req(port, f"/echo/{m}")[0] == 200
    record = geo(m)
    assert record["country"]["iso_code"] == "ES" and record["city"]["names"]["en"] == "Madrid"
    assert req(port, f"/echo/{mark()}", source=US)[0] == 403  # ip filter
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": DOC_DE}, source=US)[0] == 403  # untrusted peer
    assert req(port, f"/echo/{mark()}", source=UNKNOWN)[0] == 403  # geofence: unknown
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": DOC_FR})[0] == 403  # geofence: FR
    assert req(port, f"/echo/{mark()}", {"X-Forwarded-For": US})[0] == 403  # ip filter, via a trusted peer
    m = mark()
    assert req(port, f"/echo/{m}", {"X-Forwarded-For": DOC_DE})[0] == 200
    assert geo(m)["country"]["iso_code"] == "DE"
    assert upstream_headers(upstream, m)["x-forwarded-for"] == [f"{DOC_DE}, 127.0.0.1"]
    m = mark()
    assert req(port, f"/echo/{m}", {"X-Forwarded-For": f"{DOC_FR}, {DOC_DE}"})[0] == 200  # rightmost untrusted
    assert geo(m)["country"]["iso_code"] == "DE"
    # a client cannot pass its own X-Geoip upstream, even where every header is forwarded
    m = mark()
    assert req(port, f"/star/{m}", {"X-Geoip": '{"country":{"iso_code":"XX"}}'})[0] == 200
    assert geo(m)["country"]["iso_code"] == "ES"
    assert req(port, "/__health", source=UNKNOWN)[0] == 200
    log = {(r["client"], r.get("reason")) for r in access_log(p) if r["status"] == 403}
    assert log == {(US, "ip filter"), (UNKNOWN, "geofence"), (DOC_FR, "geofence")}


# ------------------------------------------------------------------ evaluation order

def test_endpoint_order_ip_filter_geofence_bot_detector_then_rate_limit(eps):
    port = eps.port
    for _ in range(3):
        assert ua(port, "/order", "evil", source=UNKNOWN) == 403  # all three would refuse: ip filter says so
        assert ua(port, "/order", "evil", source=DE) == 403  # geofence and bot would: geofence
        assert ua(port, "/order", "evil", source=ES) == 403  # bot detector
    log = reasons(eps, "/order")
    assert {(c, r) for c, _, r in log} == {(UNKNOWN, "ip filter"), (DE, "geofence"), (ES, "bot detector")}
    # nine refusals spent no token of the limit (capacity 2, refill once an hour)
    assert [ua(port, "/order", "fine", source=src) for src in (ES, US, ES)] == [200, 200, 503]


def test_root_order_ip_filter_and_bot_detector_before_the_service_limit(make):
    p = make([ep("/one", "/"), ep("/two", "/")], **ipf([US], False), **bot(deny=["evil"]),
             **{"qos/ratelimit/service": {"max_rate": 1, "every": "1h", "capacity": 2}})
    for _ in range(4):
        assert ua(p.port, "/one", "evil", source=US) == 403
        assert ua(p.port, "/two", "evil", source=ES) == 403
    assert {(c, r) for c, _, r in reasons(p, "/")} == {(US, "ip filter"), (ES, "bot detector")}
    assert [ua(p.port, path, "fine") for path in ("/one", "/two", "/one")] == [200, 200, 503]


# ------------------------------------------------------------------ config errors

def _errors(raw) -> list:
    with pytest.raises(ConfigError) as exc:
        compile_config(raw)
    return exc.value.problems


def _cfg(endpoint_extra=None, **root_extra) -> dict:
    return {"version": 3, "host": ["http://127.0.0.1:1"], "extra_config": root_extra,
            "endpoints": [ep("/x", "/", extra_config=endpoint_extra or {})]}


def test_config_error_bad_cidr_names_the_path():
    errs = _errors(_cfg(**ipf(["10.0.0.0/8", "10.0.0.300/8"], False)))
    assert any(e.startswith('$.extra_config["security/ip-filter"].CIDR') and "10.0.0.300/8" in e for e in errs), errs
    errs = _errors(_cfg(endpoint_extra=ipf(["not-an-ip"], True)))
    assert any(e.startswith('$.endpoints[0].extra_config["security/ip-filter"].CIDR') and "not-an-ip" in e
               for e in errs), errs
    errs = _errors(_cfg(**{"plugin/http-server": {"name": ["ip-filter"], "ip-filter": {"CIDR": ["1.2.3.4/33"]}}}))
    assert any('$.extra_config["plugin/http-server"]["ip-filter"].CIDR' in e and "1.2.3.4/33" in e for e in errs), errs
    errs = _errors(_cfg(router={"trusted_proxies": ["300.1.1.1"]}))
    assert any(e.startswith('$.extra_config["router"].trusted_proxies') and "300.1.1.1" in e for e in errs), errs
    errs = _errors(_cfg(endpoint_extra=ipf(["10.0.0.0/8"], False, trusted_proxies=["bogus/8"])))
    assert any(e.startswith('$.endpoints[0].extra_config["security/ip-filter"]') and "bogus/8" in e
               for e in errs), errs


def test_config_error_bad_regex_names_the_path():
    errs = _errors(_cfg(endpoint_extra=bot(patterns=["fine.*", "(unclosed"])))
    assert any(e.startswith('$.endpoints[0].extra_config["security/bot-detector"]') and "(unclosed" in e
               for e in errs), errs
    errs = _errors(_cfg(**bot(patterns=["(?<=lookbehind)x"])))  # valid for Python, not for RE2
    assert any(e.startswith('$.extra_config["security/bot-detector"]') for e in errs), errs


def test_config_error_unreadable_database_names_the_path(tmp_path):
    missing = str(tmp_path / "missing.mmdb")
    not_a_db = tmp_path / "junk.mmdb"
    not_a_db.write_bytes(b"this is not a maxmind database" * 10)
    errs = _errors(_cfg(**fence(db_path=missing, allow_countries=["ES"])))
    assert any(e.startswith('$.extra_config["security/geofence"].db_path') and missing in e for e in errs), errs
    errs = _errors(_cfg(endpoint_extra=fence(db_path=str(not_a_db), deny_countries=["ES"])))
    assert any(e.startswith('$.endpoints[0].extra_config["security/geofence"].db_path') for e in errs), errs
    errs = _errors(_cfg(**{"plugin/http-server": {"name": ["geoip"], "geoip": {"citydb_path": str(tmp_path)}}}))
    assert any(e.startswith('$.extra_config["plugin/http-server"].geoip.citydb_path') for e in errs), errs


def test_fastproxy_check_lists_every_security_error(tmp_path):
    raw = _cfg(endpoint_extra=bot(patterns=["(unclosed"]),
               **ipf(["10.0.0.300/8"], True), **fence(db_path=str(tmp_path / "nope.mmdb")))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    r = subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", str(path)], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=30)
    assert r.returncode == 1
    for where in ('$.extra_config["security/ip-filter"].CIDR', '$.extra_config["security/geofence"].db_path',
                  '$.endpoints[0].extra_config["security/bot-detector"]'):
        assert where in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["security.json", "breaker.json"])
def test_example_configs_pass_check(name):
    r = subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", os.path.join(ROOT, "config", name)],
                       capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "Syntax OK" in r.stdout


@pytest.mark.parametrize("first,second", [("facebookexternalhit/1.1", "Mozilla/5.0"),
                                          ("Mozilla/5.0", "facebookexternalhit/1.1")])
def test_two_user_agent_headers_are_refused_whichever_is_the_bot(eps, first, second):
    # only one value can be judged while both would reach the backend: refused by the parser
    c = http.client.HTTPConnection("127.0.0.1", eps.port, timeout=5)
    c.putrequest("GET", f"/bot/{mark()}")
    c.putheader("User-Agent", first)
    c.putheader("User-Agent", second)
    c.endheaders()
    status = c.getresponse().status
    c.close()
    assert status == 400

"""Compiled rate-limit policies (SPEC §3.1-3.5): `qos/ratelimit/router`, `qos/ratelimit/service`,
`qos/ratelimit/proxy` and KrakenD 1.x's juju aliases, compiled from tiny configs with
`compile_config` and driven on a fake clock (plain floats) with a fake exchange.

What runs a route's policies here is what `ClientConnection.dispatch` / `send_upstream` do: the
live checks of the route's `RouteState` in order, stopping at the first Rejection, then (if all
passed) its backend checks. Buckets are created by building a `State`, as the Worker does.
"""

import math

import pytest

from fastproxy.limits.headers import rl_headers, rl_pairs
from fastproxy import policies
from fastproxy.config.compile import compile_config
from fastproxy.limits.policy import ClientLimit, Limit
from fastproxy.policies import Rejection
from fastproxy.policies.state import State
from tests.configutil import JUJU_PROXY, JUJU_ROUTER, PROXY, RL, SF_ITEM, SVC, assert_problem, errors_of

HOST = "http://127.0.0.1:8081"


# -- helpers ------------------------------------------------------------------------------------
def ep(path: str = "/a", limits: dict = None, backend_limits: dict = None) -> dict:
    backend = {"url_pattern": "/x"}
    if backend_limits:
        backend["extra_config"] = backend_limits
    out = {"endpoint": path, "backend": [backend]}
    if limits:
        out["extra_config"] = limits
    return out


def cfg(*endpoints: dict, service: dict = None, **root) -> dict:
    raw = {"version": 3, "host": [HOST], "endpoints": list(endpoints), **root}
    if service is not None:
        raw.setdefault("extra_config", {})[SVC] = service
    return raw


class Compiled:
    """A snapshot and one worker's State for it; `route_list` pairs each route with its state."""

    def __init__(self, snap, state: State) -> None:
        self.snap = snap
        self.state = state
        self.warnings = snap.warnings
        self.route_list = [LiveRoute(r, state.routes[r.index]) for r in snap.route_list]


class LiveRoute:
    """A compiled route (`checks`, `backend_checks`: the compiled policies) and its RouteState."""

    def __init__(self, route, rs) -> None:
        self.route = route
        self.rs = rs
        self.name = route.name
        self.checks = route.checks
        self.backend_checks = route.backend_checks


def compile_(raw: dict, now: float = 0.0, workers: int = 1, previous: Compiled = None) -> Compiled:
    snap = compile_config(raw, workers=workers)
    return Compiled(snap, State(snap, now, previous=previous.state if previous is not None else None))


def one(block: dict, path: str = "/a", now: float = 0.0, workers: int = 1):
    """The single route of a config with `block` as its `qos/ratelimit/router`."""
    return compile_(cfg(ep(path, {RL: block})), now, workers).route_list[0]


class X:
    """The attributes of `server.connection.Exchange` the limit policies read and write."""

    def __init__(self, ip: str = "10.0.0.1", headers: dict = None, params: dict = None) -> None:
        self.client_ip = ip
        self.headers = [(k.lower().encode(), k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.params = params if params is not None else {}
        self.rl = None
        self.conn = None


def run(route, x: X, now: float):
    """Run the route's checks as the server does; None when admitted, else the Rejection."""
    try:
        for check in route.rs.checks:
            check.check(x, now)
        for check in route.rs.backend_checks:
            check.check(x, now)
    except Rejection as rej:
        return rej
    return None


def statuses(route, now: float, n: int, **xkw) -> list:
    out = []
    for _ in range(n):
        rej = run(route, X(**xkw), now)
        out.append(200 if rej is None else rej.status)
    return out


def header(rej: Rejection, name: bytes) -> bytes:
    values = [v for k, v in rej.headers if k.lower() == name.lower()]
    assert len(values) == 1, rej.headers
    return values[0]


def of(route, cls, name: str = None):
    """The live limit (its bucket or table; `.limit`: the compiled one) of type `cls` on `route`."""
    found = [c for c in route.rs.checks + route.rs.backend_checks
             if type(c.limit) is cls and (name is None or c.limit.name == name)]
    assert len(found) == 1, found
    return found[0]


# -- status codes -------------------------------------------------------------------------------
def test_endpoint_limit_rejects_with_503_and_retry_after():
    r = one({"max_rate": 2, "capacity": 2})
    assert statuses(r, 0.0, 3) == [200, 200, 503]
    rej = run(r, X(), 0.0)
    assert rej.status == 503 and "rate limit" in rej.reason
    assert header(rej, b"Retry-After") == b"1"  # 0.5 s to the next token, rounded up


def test_client_limit_rejects_with_429_per_client():
    r = one({"client_max_rate": 1, "strategy": "header", "key": "X-Key"})
    assert statuses(r, 0.0, 2, headers={"X-Key": "a"}) == [200, 429]
    assert statuses(r, 0.0, 2, headers={"X-Key": "b"}) == [200, 429]  # a's bucket is not b's
    rej = run(r, X(headers={"X-Key": "a"}), 0.0)
    assert header(rej, b"Retry-After") == b"1"


def test_status_code_overrides_both_codes_and_client_status_code_the_client_one():
    r = one({"max_rate": 1, "capacity": 1, "client_max_rate": 1, "strategy": "header", "key": "K",
             "status_code": 429})
    assert statuses(r, 0.0, 2, headers={"K": "a"}) == [200, 429]  # client limit: override
    assert statuses(r, 0.0, 1, headers={"K": "b"}) == [429]  # endpoint limit: 503 overridden
    r = one({"max_rate": 1, "capacity": 1, "client_max_rate": 1, "strategy": "header", "key": "K",
             "status_code": 509, "client_status_code": 420})
    assert statuses(r, 0.0, 2, headers={"K": "a"}) == [200, 420]
    assert statuses(r, 0.0, 1, headers={"K": "b"}) == [509]


def test_backend_limit_rejects_with_503_and_retry_after():
    route = compile_(cfg(ep("/a", backend_limits={PROXY: {"max_rate": 1, "capacity": 2, "every": "10s"}}))).route_list[0]
    assert route.checks == () and len(route.backend_checks) == 1
    assert statuses(route, 0.0, 3) == [200, 200, 503]
    assert header(run(route, X(), 0.0), b"Retry-After") == b"10"


# -- strategies ---------------------------------------------------------------------------------
def test_ip_strategy_buckets_by_client_ip_and_rejects_a_missing_ip():
    r = one({"client_max_rate": 1, "strategy": "ip"})
    assert statuses(r, 0.0, 2, ip="10.0.0.1") == [200, 429]
    assert statuses(r, 0.0, 2, ip="10.0.0.2") == [200, 429]
    for missing in (None, ""):
        rej = run(r, X(ip=missing), 0.0)
        assert rej.status == 429 and "no client key" in rej.reason
        assert header(rej, b"Retry-After") == b"1"


def test_strategy_is_case_insensitive():
    r = one({"client_max_rate": 1, "strategy": "IP"})
    assert of(r, ClientLimit).strategy == "ip"
    assert statuses(r, 0.0, 2) == [200, 429]


def test_header_strategy_matches_the_name_case_insensitively_and_rejects_a_missing_header():
    r = one({"client_max_rate": 1, "strategy": "header", "key": "X-Api-Key"})
    assert statuses(r, 0.0, 1, headers={"x-api-key": "k1"}) == [200]
    assert statuses(r, 0.0, 1, headers={"X-API-KEY": "k1"}) == [429]  # same client, other spelling
    assert statuses(r, 0.0, 1, headers={"X-Api-Key": "k2"}) == [200]
    for headers in ({}, {"X-Other": "k1"}, {"X-Api-Key": ""}):
        rej = run(r, X(headers=headers), 0.0)
        assert rej is not None and rej.status == 429, headers
    # the client's IP does not matter to a header strategy
    assert statuses(r, 0.0, 1, ip="10.9.9.9", headers={"X-Api-Key": "k1"}) == [429]


def test_param_strategy_buckets_by_the_placeholder_value_and_rejects_a_missing_one():
    r = one({"client_max_rate": 1, "strategy": "param", "key": "customer"}, path="/c/{customer}/invoices")
    # the router gives placeholder values as bytes and never an empty one (/c//invoices is a 404)
    assert statuses(r, 0.0, 2, params={"customer": b"alice"}) == [200, 429]
    assert statuses(r, 0.0, 1, params={"customer": b"bob"}) == [200]
    for params in ({}, None, {"other": b"alice"}):
        x = X()
        x.params = params
        rej = run(r, x, 0.0)
        assert rej is not None and rej.status == 429, params
    # the same client from another IP is the same bucket
    assert statuses(r, 0.0, 1, ip="10.9.9.9", params={"customer": b"alice"}) == [429]


def test_a_client_key_is_never_confused_across_strategies_or_endpoints():
    snap = compile_(cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "header", "key": "K"}}),
                        ep("/b", {RL: {"client_max_rate": 1, "strategy": "header", "key": "K"}})))
    a, b = snap.route_list
    assert statuses(a, 0.0, 2, headers={"K": "x"}) == [200, 429]
    assert statuses(b, 0.0, 2, headers={"K": "x"}) == [200, 429]  # per endpoint


# -- capacity defaults, every, refill -------------------------------------------------------------
@pytest.mark.parametrize("block, capacity, rate", [
    ({"max_rate": 0.5}, 1, 0.5),
    ({"max_rate": 10, "every": "1m"}, 1, 10 / 60),
    ({"max_rate": 50}, 50, 50.0),
    ({"max_rate": 50, "every": "10m"}, 1, 50 / 600),  # KrakenD's documented trap
    ({"max_rate": 7.9}, 7, 7.9),
    ({"max_rate": 5, "capacity": 12}, 12, 5.0),
])
def test_default_capacity_is_the_per_second_rate_rounded_down_at_least_1(block, capacity, rate):
    lim = of(one(block), Limit)
    assert lim.limit.capacity == capacity
    assert lim.bucket.capacity == capacity
    assert lim.bucket.rate == pytest.approx(rate)


def test_default_capacity_admits_exactly_that_burst():
    for block, burst in (({"max_rate": 0.5}, 1), ({"max_rate": 10, "every": "1m"}, 1), ({"max_rate": 50}, 50)):
        r = one(block)
        assert statuses(r, 0.0, burst + 1) == [200] * burst + [503], block


def test_client_capacity_defaults_from_client_max_rate_not_max_rate():
    # KrakenD >= v3.2 (issue #31) computes it from max_rate: a client-only block would get 1
    r = one({"client_max_rate": 5, "strategy": "ip"})
    assert of(r, ClientLimit).limit.capacity == 5
    assert statuses(r, 0.0, 6) == [200] * 5 + [429]
    r = one({"max_rate": 0.5, "client_max_rate": 20, "strategy": "ip"})
    assert of(r, ClientLimit).limit.capacity == 20
    r = one({"max_rate": 100, "client_max_rate": 0.5, "strategy": "ip"})
    assert of(r, ClientLimit).limit.capacity == 1
    r = one({"client_max_rate": 5, "client_capacity": 2, "strategy": "ip"})
    assert of(r, ClientLimit).limit.capacity == 2


def test_sub_second_every_is_honoured_not_clamped_to_1s():
    # 1 per 100ms = 10/s; default capacity = 10 (per second, rounded down)
    r = one({"max_rate": 1, "every": "100ms"})
    lim = of(r, Limit)
    assert lim.limit.every == pytest.approx(0.1) and lim.limit.capacity == 10
    assert lim.bucket.rate == pytest.approx(10.0)
    assert statuses(r, 0.0, 11) == [200] * 10 + [503]
    assert statuses(r, 0.05, 1) == [503]
    assert statuses(r, 0.1, 2) == [200, 503]
    # 2 per 500ms with capacity 1: one every 250ms
    r = one({"max_rate": 2, "every": "500ms", "capacity": 1})
    assert statuses(r, 0.0, 2) == [200, 503]
    assert statuses(r, 0.2, 1) == [503]
    assert statuses(r, 0.25, 2) == [200, 503]


def test_client_limit_honours_every_too():
    r = one({"client_max_rate": 3, "every": "1m", "strategy": "ip"})
    assert of(r, ClientLimit).limit.capacity == 1  # 3/min is below 1/s
    assert statuses(r, 0.0, 2) == [200, 429]
    assert statuses(r, 19.9, 1) == [429]
    assert statuses(r, 20.0, 1) == [200]


def test_spike_arrest_after_the_burst_one_request_per_interval():
    r = one({"max_rate": 20, "capacity": 1})
    admitted = []
    t = 0.0
    while t < 1.0:
        if run(r, X(), t) is None:
            admitted.append(t)
        t = round(t + 0.001, 6)
    assert len(admitted) == 20  # 1 burst + one every 50 ms over [0, 1)
    gaps = [b - a for a, b in zip(admitted, admitted[1:])]
    assert all(g == pytest.approx(0.05, abs=1.5e-3) for g in gaps), gaps


# -- Retry-After ----------------------------------------------------------------------------------
@pytest.mark.parametrize("block, spend, at, expected", [
    ({"max_rate": 1, "every": "10s", "capacity": 1}, 1, 0.0, b"10"),
    ({"max_rate": 1, "every": "10s", "capacity": 1}, 1, 3.5, b"7"),  # 6.5 s left
    ({"max_rate": 1, "every": "10s", "capacity": 1}, 1, 9.0, b"1"),
    ({"max_rate": 1, "every": "10s", "capacity": 1}, 1, 9.99, b"1"),
    ({"max_rate": 0.5}, 1, 0.0, b"2"),
    ({"max_rate": 0.5}, 1, 0.5, b"2"),  # 1.5 s left
    ({"max_rate": 0.5}, 1, 1.0, b"1"),
    ({"max_rate": 10, "every": "1m"}, 1, 0.0, b"6"),
    ({"max_rate": 3, "capacity": 3}, 3, 0.0, b"1"),  # 1/3 s, never 0
    ({"max_rate": 100, "capacity": 5}, 5, 0.0, b"1"),
    ({"max_rate": 1, "every": "1h", "capacity": 2}, 2, 0.0, b"3600"),
])
def test_retry_after_is_the_true_wait_rounded_up_at_least_1(block, spend, at, expected):
    r = one(block)
    assert statuses(r, 0.0, spend) == [200] * spend
    rej = run(r, X(), at)
    assert rej is not None and header(rej, b"Retry-After") == expected
    wait = of(r, Limit).bucket.retry_after(at)
    assert int(expected) == max(1, math.ceil(wait - 1e-9))
    assert run(r, X(), at + wait) is None  # the advertised wait is enough, not more than a second too long


def test_client_retry_after_is_the_client_bucket_wait():
    r = one({"client_max_rate": 1, "every": "30s", "strategy": "ip"})
    assert statuses(r, 0.0, 1) == [200]
    assert header(run(r, X(), 12.25), b"Retry-After") == b"18"


# -- RateLimit headers ---------------------------------------------------------------------------
def pairs(x: X) -> dict:
    return dict(rl_pairs(x.rl))


def test_ratelimit_headers_describe_the_limit_in_structured_field_syntax():
    r = one({"max_rate": 10, "capacity": 10})
    x = X()
    assert run(r, x, 0.0) is None
    h = pairs(x)
    assert set(h) == {b"RateLimit-Policy", b"RateLimit"}
    assert h[b"RateLimit-Policy"] == b'"endpoint";q=10;w=1'
    assert h[b"RateLimit"] == b'"endpoint";r=9;t=1'  # 0.1 s to full, rounded up
    for v in h.values():
        assert SF_ITEM.match(v.decode()), v
    # the raw header block the server writes says the same
    assert rl_headers(x.rl) == b'RateLimit-Policy: "endpoint";q=10;w=1\r\nRateLimit: "endpoint";r=9;t=1\r\n'


@pytest.mark.parametrize("block, policy", [
    ({"max_rate": 10, "every": "1m"}, b'"endpoint";q=10;w=60'),
    ({"max_rate": 0.5}, b'"endpoint";q=5;w=10'),  # integers only: 0.5/1s as 5/10s
    ({"max_rate": 1, "every": "100ms"}, b'"endpoint";q=10;w=1'),
    ({"max_rate": 2.5, "every": "1s"}, b'"endpoint";q=25;w=10'),
    ({"max_rate": 1, "every": "1.5s"}, b'"endpoint";q=10;w=15'),
    ({"max_rate": 100, "every": "1h", "capacity": 5}, b'"endpoint";q=100;w=3600'),
])
def test_ratelimit_policy_uses_integers_for_fractional_rates_and_windows(block, policy):
    r = one(block)
    x = X()
    assert run(r, x, 0.0) is None
    assert pairs(x)[b"RateLimit-Policy"] == policy
    for v in pairs(x).values():
        assert SF_ITEM.match(v.decode()), v


def test_ratelimit_remaining_and_reset_follow_the_bucket():
    r = one({"max_rate": 1, "capacity": 5})
    for i in range(3):
        x = X()
        assert run(r, x, 0.0) is None
    assert pairs(x)[b"RateLimit"] == b'"endpoint";r=2;t=3'
    x = X()
    assert run(r, x, 1.5) is None  # 2 + 1.5 refilled = 3.5, one spent: 2.5 -> 2; full in 2.5 s
    assert pairs(x)[b"RateLimit"] == b'"endpoint";r=2;t=3'


def test_ratelimit_headers_name_the_tightest_limit_and_a_rejection_reports_zero():
    r = one({"max_rate": 100, "capacity": 100, "client_max_rate": 2, "strategy": "ip"})
    x = X()
    assert run(r, x, 0.0) is None
    h = pairs(x)
    assert h[b"RateLimit-Policy"] == b'"client";q=2;w=1'
    assert h[b"RateLimit"] == b'"client";r=1;t=1'
    assert run(r, X(), 0.0) is None
    x = X()
    rej = run(r, x, 0.0)
    assert rej.status == 429
    assert pairs(x)[b"RateLimit"] == b'"client";r=0;t=1'
    # another client: the endpoint limit (98 left) is looser than its own (1 left)
    x = X(ip="10.0.0.2")
    assert run(r, x, 0.0) is None
    assert pairs(x)[b"RateLimit"] == b'"client";r=1;t=1'
    # an endpoint limit that is tighter than the client's wins
    r = one({"max_rate": 1, "capacity": 1, "client_max_rate": 10, "strategy": "ip"})
    x = X()
    assert run(r, x, 0.0) is None
    assert pairs(x)[b"RateLimit"] == b'"endpoint";r=0;t=1'


def test_route_without_limits_has_no_checks_and_sets_no_ratelimit_info():
    snap = compile_(cfg(ep("/free"), ep("/limited", {RL: {"max_rate": 1}})))
    free, limited = snap.route_list
    assert free.checks == () and free.backend_checks == ()
    assert isinstance(free.checks, tuple)
    x = X()
    assert run(free, x, 0.0) is None and x.rl is None
    assert len(limited.checks) == 1


# -- evaluation order -----------------------------------------------------------------------------
def test_a_request_refused_by_the_client_limit_spends_no_endpoint_token():
    r = one({"max_rate": 1, "every": "1m", "capacity": 100, "client_max_rate": 1,
             "strategy": "header", "key": "K"})
    assert [type(c).__name__ for c in r.checks] == ["ClientLimit", "Limit"]
    assert statuses(r, 0.0, 50, headers={"K": "greedy"}) == [200] + [429] * 49
    assert of(r, Limit).bucket.remaining(0.0) == 99
    assert statuses(r, 0.0, 1, headers={"K": "other"}) == [200]


def test_a_request_without_a_client_key_spends_no_endpoint_token():
    r = one({"max_rate": 1, "every": "1m", "capacity": 5, "client_max_rate": 1, "strategy": "header", "key": "K"})
    assert statuses(r, 0.0, 20) == [429] * 20
    assert of(r, Limit).bucket.remaining(0.0) == 5


def test_a_request_refused_by_the_service_limit_spends_no_endpoint_or_client_token():
    snap = compile_(cfg(ep("/a", {RL: {"max_rate": 1, "every": "1m", "capacity": 50, "client_max_rate": 1,
                                      "client_capacity": 10, "strategy": "ip"}}),
                        service={"max_rate": 1, "every": "1m", "capacity": 2}))
    r = snap.route_list[0]
    assert [c.name for c in r.checks] == ["service", "client", "endpoint"]
    assert statuses(r, 0.0, 20) == [200, 200] + [503] * 18
    assert of(r, Limit, "endpoint").bucket.remaining(0.0) == 48
    assert of(r, ClientLimit).table.remaining("10.0.0.1", 0.0) == 8


def test_a_request_refused_by_the_service_client_limit_spends_no_service_wide_token():
    # same rule as the endpoint: one greedy client must not drain everybody's bucket
    snap = compile_(cfg(ep("/a"), service={"max_rate": 1, "every": "1m", "capacity": 10,
                                          "client_max_rate": 1, "strategy": "ip"}))
    r = snap.route_list[0]
    assert [c.name for c in r.checks] == ["service-client", "service"]
    assert statuses(r, 0.0, 30, ip="10.0.0.66") == [200] + [429] * 29
    assert of(r, Limit, "service").bucket.remaining(0.0) == 9


def test_a_request_refused_at_the_route_spends_no_backend_token():
    route = compile_(cfg(ep("/a", {RL: {"max_rate": 1, "capacity": 1, "every": "1m"}},
                            backend_limits={PROXY: {"max_rate": 1, "capacity": 5, "every": "1m"}}))).route_list[0]
    assert statuses(route, 0.0, 10) == [200] + [503] * 9
    assert of(route, Limit, "backend").bucket.remaining(0.0) == 4


def test_service_limit_is_one_bucket_across_endpoints_and_per_client_across_endpoints():
    snap = compile_(cfg(ep("/a"), ep("/b"), ep("/c", {RL: {"max_rate": 100}}),
                        service={"max_rate": 1, "every": "1m", "capacity": 3,
                                 "client_max_rate": 1, "strategy": "ip"}))
    a, b, c = snap.route_list
    assert of(a, Limit) is of(b, Limit) is of(c, Limit, "service")
    assert statuses(a, 0.0, 1, ip="1.1.1.1") == [200]
    assert statuses(b, 0.0, 1, ip="1.1.1.1") == [429]  # the client's bucket covers every endpoint
    assert statuses(b, 0.0, 1, ip="2.2.2.2") == [200]
    assert statuses(c, 0.0, 1, ip="3.3.3.3") == [200]
    assert statuses(a, 0.0, 1, ip="4.4.4.4") == [503]  # 3 spent: the instance-wide bucket is empty


def test_checks_are_in_spec_order():
    snap = compile_(cfg(ep("/a/{id}", {RL: {"max_rate": 5, "client_max_rate": 1, "strategy": "param", "key": "id"}},
                           backend_limits={PROXY: {"max_rate": 5}}),
                        service={"max_rate": 5, "client_max_rate": 1, "strategy": "ip"}))
    r = snap.route_list[0]
    orders = [c.order for c in r.checks]
    assert orders == sorted(orders)
    assert [c.name for c in r.checks] == ["service-client", "service", "client", "endpoint"]
    assert all(policies.ORDER_SERVICE_LIMIT - 1 <= c.order < policies.ORDER_TIERED for c in r.checks[:2])
    assert [c.name for c in r.backend_checks] == ["backend"]
    assert r.backend_checks[0].order == policies.ORDER_BACKEND_LIMIT


# -- configuration errors -------------------------------------------------------------------------
EP0 = f'$.endpoints[0].extra_config["{RL}"]'


@pytest.mark.parametrize("raw, path, words", [
    (cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "jwt"}})), f"{EP0}.strategy",
     ["expected one of ip, header, param", "'jwt'"]),
    (cfg(ep("/a", {RL: {"max_rate": -1}})), f"{EP0}.max_rate", ["expected a rate >= 0", "-1"]),
    (cfg(ep("/a", {RL: {"client_max_rate": -2, "strategy": "ip"}})), f"{EP0}.client_max_rate",
     ["expected a rate >= 0", "-2"]),
    (cfg(ep("/a", {RL: {}})), EP0, ["expected max_rate or client_max_rate", "found neither"]),
    (cfg(ep("/a", {RL: {"max_rate": 0, "client_max_rate": 0}})), EP0, ["found neither"]),
    (cfg(ep("/a/{id}", {RL: {"client_max_rate": 1, "strategy": "param", "key": "user"}})), f"{EP0}.key",
     ["expected a parameter of the endpoint", "'/a/{id}'", "'user'"]),
    (cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "param"}})), f"{EP0}.key", ["needs a key"]),
    (cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "header"}})), f"{EP0}.key",
     ["strategy 'header' needs a key", "header name", "found none"]),
    (cfg(ep("/a", {RL: {"max_rate": 1, "capacity": -1}})), f"{EP0}.capacity", ["expected an integer >= 0", "-1"]),
    (cfg(ep("/a", {RL: {"max_rate": 1, "every": "soon"}})), f"{EP0}.every", ["'soon'"]),
    (cfg(ep("/a", {RL: {"max_rate": 1, "every": "0s"}})), f"{EP0}.every", ["positive", "'0s'"]),
    (cfg(ep("/a", {RL: {"max_rate": 1, "status_code": 200}})), f"{EP0}.status_code", ["400-599", "200"]),
    (cfg(ep("/a", {RL: {"max_rate": "10"}})), f"{EP0}.max_rate", ["expected", "found str"]),
    (cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "ip", "max_clients": 0}})), f"{EP0}.max_clients",
     [">= 1", "0"]),
    (cfg(ep("/a"), service={"client_max_rate": 1, "strategy": "param", "key": "id"}),
     f'$.extra_config["{SVC}"].strategy', ["only meaningful on an endpoint"]),
    (cfg(ep("/a"), service={"client_max_rate": 1, "strategy": "cookie"}),
     f'$.extra_config["{SVC}"].strategy', ["expected one of ip, header, param"]),
    (cfg(ep("/a", backend_limits={PROXY: {"max_rate": 0}})),
     f'$.endpoints[0].backend[0].extra_config["{PROXY}"].max_rate', ["above 0", "0"]),
    (cfg(ep("/a", backend_limits={PROXY: {"max_rate": 1, "every": "-1s"}})),
     f'$.endpoints[0].backend[0].extra_config["{PROXY}"].every', ["positive"]),
    (cfg(ep("/a", backend_limits={JUJU_PROXY: {"maxRate": -3}})),
     f'$.endpoints[0].backend[0].extra_config["{JUJU_PROXY}"].max_rate', ["above 0", "-3"]),
])
def test_config_error_names_the_json_path_and_what_was_found(raw, path, words):
    assert_problem(errors_of(raw), path, words)


def test_every_rate_limit_error_of_a_file_is_listed_at_once():
    problems = errors_of(cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "nope"}}),
                             ep("/b", {RL: {"max_rate": -1}}),
                             ep("/c/{id}", {RL: {"client_max_rate": 1, "strategy": "param", "key": "x"}}),
                             ep("/d", {RL: {"client_max_rate": 1, "strategy": "header"}})))
    paths = {p.split(": ", 1)[0] for p in problems}
    assert {'$.endpoints[0].extra_config["qos/ratelimit/router"].strategy',
            '$.endpoints[1].extra_config["qos/ratelimit/router"].max_rate',
            '$.endpoints[2].extra_config["qos/ratelimit/router"].key',
            '$.endpoints[3].extra_config["qos/ratelimit/router"].key'} <= paths


def test_krakend_store_knobs_and_unknown_fields_are_warnings():
    snap = compile_config(cfg(ep("/a", {RL: {"max_rate": 1, "num_shards": 64, "cleanup_period": "1m",
                                             "cleanup_threads": 2}})))
    assert any(w.startswith(f"{EP0}.num_shards:") for w in snap.warnings)
    assert any(w.startswith(f"{EP0}.cleanup_threads:") for w in snap.warnings)
    assert len(snap.route_list[0].checks) == 1


def test_ip_strategy_with_a_key_and_a_missing_strategy_warn():
    snap = compile_config(cfg(ep("/a", {RL: {"client_max_rate": 1, "strategy": "ip", "key": "X-Real-IP"}}),
                              ep("/b", {RL: {"client_max_rate": 1}})))
    assert any(w.startswith('$.endpoints[0].extra_config["qos/ratelimit/router"].key:') for w in snap.warnings)
    assert any(w.startswith('$.endpoints[1].extra_config["qos/ratelimit/router"].strategy:') for w in snap.warnings)
    assert snap.route_list[1].checks[0].strategy == "ip"


# -- juju aliases ---------------------------------------------------------------------------------
def test_juju_router_alias_maps_camel_case_and_capacity_equals_rate():
    snap = compile_(cfg(ep("/a", {JUJU_ROUTER: {"maxRate": 7, "clientMaxRate": 3, "strategy": "header", "key": "K"}})))
    r = snap.route_list[0]
    lim, cl = of(r, Limit), of(r, ClientLimit)
    assert (lim.limit.max_rate, lim.limit.every, lim.limit.capacity, lim.status) == (7, 1.0, 7, 503)
    assert (cl.limit.max_rate, cl.limit.every, cl.limit.capacity, cl.status, cl.strategy, cl.key) == (3, 1.0, 3, 429, "header", "K")
    assert statuses(r, 0.0, 4, headers={"K": "a"}) == [200, 200, 200, 429]
    assert of(r, Limit).bucket.remaining(0.0) == 4


def test_juju_router_fractional_rate_gets_capacity_1():
    r = compile_(cfg(ep("/a", {JUJU_ROUTER: {"maxRate": 0.5}}))).route_list[0]
    assert of(r, Limit).limit.capacity == 1
    assert statuses(r, 0.0, 2) == [200, 503]
    assert statuses(r, 2.0, 1) == [200]


def test_juju_proxy_alias_uses_maxrate_and_capacity_or_the_rate():
    r = compile_(cfg(ep("/a", backend_limits={JUJU_PROXY: {"maxRate": 4}}))).route_list[0]
    lim = of(r, Limit, "backend")
    assert (lim.limit.max_rate, lim.limit.every, lim.limit.capacity, lim.status) == (4, 1.0, 4, 503)
    assert statuses(r, 0.0, 5) == [200] * 4 + [503]
    r = compile_(cfg(ep("/a", backend_limits={JUJU_PROXY: {"maxRate": 4, "capacity": 2}}))).route_list[0]
    assert of(r, Limit, "backend").limit.capacity == 2


def test_juju_router_errors_keep_the_alias_path():
    problems = errors_of(cfg(ep("/a", {JUJU_ROUTER: {"clientMaxRate": 1, "strategy": "bogus"}})))
    assert any(p.startswith(f'$.endpoints[0].extra_config["{JUJU_ROUTER}"].strategy:') for p in problems), problems


# -- workers --------------------------------------------------------------------------------------
def test_worker_split_divides_global_limits_and_keeps_client_limits_whole():
    snap = compile_(cfg(ep("/a", {RL: {"max_rate": 5, "capacity": 5, "client_max_rate": 3, "client_capacity": 7,
                                      "strategy": "ip"}},
                           backend_limits={PROXY: {"max_rate": 9, "capacity": 3}}),
                        service={"max_rate": 10, "every": "2s", "capacity": 4,
                                 "client_max_rate": 2, "client_capacity": 3, "strategy": "ip"}),
                    workers=2)
    r = snap.route_list[0]
    endpoint, service, backend = of(r, Limit, "endpoint"), of(r, Limit, "service"), of(r, Limit, "backend")
    assert (endpoint.bucket.rate, endpoint.bucket.capacity) == (2.5, 3)  # 5/2, ceil(5/2)
    assert (service.bucket.rate, service.bucket.capacity) == (2.5, 2)  # 10 per 2s / 2, ceil(4/2)
    assert (backend.bucket.rate, backend.bucket.capacity) == (4.5, 2)  # ceil(3/2)
    client, sclient = of(r, ClientLimit, "client"), of(r, ClientLimit, "service-client")
    assert (client.table.rate, client.table.capacity) == (3.0, 7)
    assert (sclient.table.rate, sclient.table.capacity) == (1.0, 3)
    # the configured numbers (and so the advertised policy) are unchanged
    assert (endpoint.limit.max_rate, endpoint.limit.capacity) == (5, 5)
    # service burst: 2 on this worker; the client's 3 service tokens (not split) run out next
    assert statuses(r, 0.0, 4, ip="9.9.9.9") == [200, 200, 503, 429]


def test_worker_split_over_time_admits_capacity_over_n_plus_rate_over_n():
    r = one({"max_rate": 20, "capacity": 10}, workers=4)
    lim = of(r, Limit)
    assert (lim.bucket.rate, lim.bucket.capacity) == (5.0, 3)
    admitted = sum(run(r, X(), i / 1000) is None for i in range(2001))  # [0, 2 s], every ms
    assert admitted == 3 + 10  # ceil(10/4) + 5/s * 2 s
    r = one({"max_rate": 1, "capacity": 1}, workers=3)
    assert (of(r, Limit).bucket.rate, of(r, Limit).bucket.capacity) == (pytest.approx(1 / 3), 1)  # ceil: never 0


# -- reload ---------------------------------------------------------------------------------------
BLOCK = {"max_rate": 5, "capacity": 5, "client_max_rate": 2, "strategy": "header", "key": "K"}


def reload(old, raw):
    return compile_(raw, 1.0, previous=old)


def test_reload_with_the_same_block_keeps_the_bucket_objects_and_their_state():
    raw = cfg(ep("/a", {RL: BLOCK}, backend_limits={PROXY: {"max_rate": 3}}), ep("/b"),
              service={"max_rate": 8, "client_max_rate": 4, "strategy": "ip"})
    old = compile_(raw)
    r = old.route_list[0]
    assert statuses(r, 0.0, 3, headers={"K": "a"}) == [200, 200, 429]
    new = reload(old, raw)
    nr = new.route_list[0]
    assert new is not old and nr is not r
    for name, cls in (("endpoint", Limit), ("service", Limit), ("backend", Limit)):
        assert of(nr, cls, name) is not of(r, cls, name)
        assert of(nr, cls, name).bucket is of(r, cls, name).bucket, name
    for name in ("client", "service-client"):
        assert of(nr, ClientLimit, name).table is of(r, ClientLimit, name).table, name
    assert statuses(nr, 0.0, 1, headers={"K": "a"}) == [429]  # the client's spent tokens survived


def test_reload_with_a_changed_block_starts_fresh_state():
    raw = cfg(ep("/a", {RL: BLOCK}))
    old = compile_(raw)
    r = old.route_list[0]
    assert statuses(r, 0.0, 3, headers={"K": "a"}) == [200, 200, 429]
    for change in ({"max_rate": 6}, {"capacity": 4}, {"every": "2s"}):
        new = reload(old, cfg(ep("/a", {RL: {**BLOCK, **change}})))
        nr = new.route_list[0]
        assert of(nr, Limit).bucket is not of(r, Limit).bucket, change
        assert of(nr, Limit).bucket.remaining(1.0) == of(nr, Limit).limit.capacity
    for change in ({"client_max_rate": 3}, {"key": "K2"}, {"strategy": "ip"}, {"client_capacity": 9},
                   {"max_clients": 10}):
        new = reload(old, cfg(ep("/a", {RL: {**BLOCK, **change}})))
        nr = new.route_list[0]
        assert of(nr, ClientLimit).table is not of(r, ClientLimit).table, change
        assert of(nr, ClientLimit).table.max_keys == change.get("max_clients", 100_000)
    # a client-limit change keeps the unchanged endpoint bucket, and vice versa
    new = reload(old, cfg(ep("/a", {RL: {**BLOCK, "client_max_rate": 3}})))
    assert of(new.route_list[0], Limit).bucket is of(r, Limit).bucket
    new = reload(old, cfg(ep("/a", {RL: {**BLOCK, "max_rate": 6}})))
    assert of(new.route_list[0], ClientLimit).table is of(r, ClientLimit).table


def test_reload_changing_only_the_status_code_keeps_the_bucket_and_uses_the_new_code():
    raw = cfg(ep("/a", {RL: {"max_rate": 1, "capacity": 1, "every": "1m"}}))
    old = compile_(raw)
    assert statuses(old.route_list[0], 0.0, 2) == [200, 503]
    new = reload(old, cfg(ep("/a", {RL: {"max_rate": 1, "capacity": 1, "every": "1m", "status_code": 429}})))
    assert of(new.route_list[0], Limit).bucket is of(old.route_list[0], Limit).bucket
    assert statuses(new.route_list[0], 1.0, 1) == [429]


def test_reload_does_not_hand_a_bucket_to_another_endpoint_or_method():
    old = compile_(cfg(ep("/a", {RL: {"max_rate": 1}})))
    new = reload(old, cfg(ep("/b", {RL: {"max_rate": 1}})))
    assert of(new.route_list[0], Limit).bucket is not of(old.route_list[0], Limit).bucket
    raw = cfg({"endpoint": "/a", "method": "POST", "backend": [{"url_pattern": "/x"}],
               "extra_config": {RL: {"max_rate": 1}}})
    new = reload(old, raw)
    assert of(new.route_list[0], Limit).bucket is not of(old.route_list[0], Limit).bucket


# -- the example configuration ---------------------------------------------------------------------
def test_example_config_compiles_with_every_rate_limit_namespace():
    import json
    import os

    from fastproxy.config.compile import load

    path = os.path.join(os.path.dirname(__file__), "..", "..", "config", "ratelimit.json")
    with open(path) as f:
        raw = json.load(f)
    namespaces = set(raw["extra_config"])
    for e in raw["endpoints"]:
        namespaces |= set(e.get("extra_config", {}))
        for b in e["backend"]:
            namespaces |= set(b.get("extra_config", {}))
    assert {SVC, RL, PROXY, JUJU_ROUTER, JUJU_PROXY} <= namespaces
    snap = load(path)
    assert snap.warnings == ()
    checks = [c for r in snap.route_list for c in r.checks + r.backend_checks]
    assert {c.name for c in checks} == {"service", "service-client", "endpoint", "client", "backend"}
    assert {c.strategy for c in checks if isinstance(c, ClientLimit)} == {"ip", "header", "param"}
    assert any(c.status == 429 and type(c) is Limit for c in checks)  # a status_code override

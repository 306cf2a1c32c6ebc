"""Tiered limits (`qos/ratelimit/tiered`, SPEC §3.7) compiled from small configs with
`compile_config` and driven with a fake exchange on a fake clock (plain floats).

The `tier_key` header picks the first tier that matches (`literal`: exact bytes, `regex`: RE2,
unanchored search, `*`: anything, the header absent included); that tier's limits run; no match
is 403. Each tier in the tables below has its own capacity (every 1m, so nothing refills), so
the number of requests a value gets through tells which tier it landed in.
"""

import pytest

from fastproxy.config.compile import compile_config
from fastproxy.limits.redis import RedisLimit
from fastproxy.limits.tiered import TieredCheck, select_tier
from fastproxy.policies.state import State
from fastproxy.policies import Rejection
from tests.configutil import errors_of, assert_problem

HOST = "http://127.0.0.1:8081"
T = "qos/ratelimit/tiered"
EP0 = f'$.endpoints[0].extra_config["{T}"]'
SVC = f'$.extra_config["{T}"]'


def lim(capacity: int, **kw) -> dict:
    return {"max_rate": 1, "every": "1m", "capacity": capacity, **kw}


def tier(value: str, kind: str = None, capacity: int = 1, **kw) -> dict:
    out = {"tier_value": value, "ratelimit": lim(capacity)}
    if kind is not None:
        out["tier_value_as"] = kind
    out.update(kw)
    return out


def cfg(block: dict, where: str = "endpoint", path: str = "/a", root: dict = None) -> dict:
    e = {"endpoint": path, "backend": [{"url_pattern": "/x"}]}
    raw = {"version": 3, "host": [HOST], "endpoints": [e, {"endpoint": "/b", "backend": [{"url_pattern": "/x"}]}]}
    if where == "endpoint":
        e["extra_config"] = {T: block}
    else:
        raw["extra_config"] = {T: block}
    if root:
        raw.setdefault("extra_config", {}).update(root)
    return raw


class LiveRoute:
    """A compiled route (`checks`: its compiled policies) and `live`: the checks of its RouteState."""

    def __init__(self, route, rs) -> None:
        self.checks = route.checks
        self.live = rs.checks


class Compiled:
    def __init__(self, snap) -> None:
        state = State(snap, 0.0)
        self.route_list = [LiveRoute(r, state.routes[r.index]) for r in snap.route_list]


def compile_(raw: dict, now: float = 0.0):
    return Compiled(compile_config(raw))


class X:
    """The attributes of `server.connection.Exchange` the limit policies read and write."""

    def __init__(self, headers: dict = None, ip: str = "10.0.0.1", params: dict = None) -> None:
        self.client_ip = ip
        self.headers = [(k.lower().encode(), k.encode(), v.encode()) for k, v in (headers or {}).items()]
        self.params = params or {}
        self.rl = None
        self.conn = None


def run(route, x: X, now: float = 0.0):
    """The route's checks as the server runs them; 200 when admitted, else the rejection status."""
    try:
        for check in route.live:
            assert check.check(x, now) is None  # stateless tiers decide synchronously
    except Rejection as rej:
        return rej.status
    return 200


def admitted(route, value, n: int = 10, now: float = 0.0, header: str = "X-Tier", **extra_headers) -> list:
    out = []
    for _ in range(n):
        h = dict(extra_headers)
        if value is not None:
            h[header] = value
        out.append(run(route, X(h), now))
    return out


def tiered_of(route) -> TieredCheck:
    found = [c for c in route.checks if isinstance(c, TieredCheck)]
    assert len(found) == 1, route.checks
    return found[0]


# -- selection ----------------------------------------------------------------------------------
TABLE = {"tier_key": "X-Tier", "tiers": [
    tier("gold", "literal", 5),
    tier("silver", None, 3),  # tier_value_as defaults to literal
    tier(r"^team-[a-z]+$", "regex", 2),
    tier("vip", "regex", 4),  # unanchored: any value containing vip
    tier("ignored", "*", 1),  # anything else, the header absent included
    tier("unreachable", "literal", 7),  # after *: never reached
]}


@pytest.mark.parametrize("value, tier_name", [
    ("gold", "gold"),
    ("silver", "silver"),
    ("Gold", "ignored"),  # literal is an exact, case-sensitive compare
    ("gold ", "ignored"),
    ("goldie", "ignored"),
    ("team-red", r"^team-[a-z]+$"),
    ("team-Red", "ignored"),
    ("team-red-2", "ignored"),  # anchored by the pattern itself
    ("supervip2", "vip"),  # unanchored search
    ("unreachable", "ignored"),  # * comes first
    ("", "ignored"),
    (None, "ignored"),  # header absent: only * matches
])
def test_first_matching_tier_wins(value, tier_name):
    route = compile_(cfg(TABLE)).route_list[0]
    check = tiered_of(route)
    chosen = select_tier(check.tiers, None if value is None else value.encode())
    assert chosen is not None and chosen.name == tier_name


@pytest.mark.parametrize("value, capacity", [
    ("gold", 5), ("silver", 3), ("team-blue", 2), ("a-vip", 4), ("bronze", 1), (None, 1),
])
def test_each_tier_applies_its_own_limit(value, capacity):
    route = compile_(cfg(TABLE)).route_list[0]
    assert admitted(route, value, capacity + 2) == [200] * capacity + [503, 503]


def test_tiers_have_separate_buckets_and_values_sharing_a_tier_share_it():
    route = compile_(cfg(TABLE)).route_list[0]
    assert admitted(route, "gold", 5) == [200] * 5
    assert admitted(route, "silver", 3) == [200] * 3  # gold's spent bucket is not silver's
    assert admitted(route, "team-a", 1) == [200]
    assert admitted(route, "team-b", 2) == [200, 503]  # one tier, one endpoint-wide bucket
    assert admitted(route, None, 1) == [200]
    assert admitted(route, "other", 1) == [503]  # * is one bucket for everybody it catches


def test_the_tier_key_header_is_matched_case_insensitively():
    route = compile_(cfg({"tier_key": "x-TIER", "tiers": [tier("gold", capacity=2)]})).route_list[0]
    assert admitted(route, "gold", 3, header="X-Tier") == [200, 200, 503]


@pytest.mark.parametrize("value", [None, "", "bronze", "GOLD", "gold2"])
def test_no_matching_tier_is_a_403_rejection(value):
    route = compile_(cfg({"tier_key": "X-Tier", "tiers": [tier("gold"), tier("^s", "regex")]})).route_list[0]
    x = X({} if value is None else {"X-Tier": value})
    with pytest.raises(Rejection) as exc:
        for check in route.live:
            check.check(x, 0.0)
    assert exc.value.status == 403
    assert run(route, X({"X-Tier": "gold"})) == 200  # the control


def test_regex_tiers_use_re2_linear_time_on_hostile_input():
    # a catastrophic-backtracking pattern for a backtracking engine; RE2 answers at once
    route = compile_(cfg({"tier_key": "X-Tier", "tiers": [tier("^(a+)+$", "regex", 3)]})).route_list[0]
    import time

    t0 = time.monotonic()
    assert admitted(route, "a" * 5000 + "!", 2) == [403, 403]
    assert time.monotonic() - t0 < 1.0
    assert admitted(route, "aaaa", 1) == [200]


def test_user_inside_a_tier_is_identified_by_strategy_and_key():
    block = {"tier_key": "X-Tier", "tiers": [
        {"tier_value": "gold", "ratelimit": {"client_max_rate": 1, "every": "1m", "client_capacity": 3,
                                             "strategy": "header", "key": "X-User"}},
        {"tier_value": "*", "tier_value_as": "*", "ratelimit": {"client_max_rate": 1, "every": "1m",
                                                                "client_capacity": 1, "strategy": "ip"}},
    ]}
    route = compile_(cfg(block)).route_list[0]
    assert admitted(route, "gold", 4, **{"X-User": "ann"}) == [200, 200, 200, 429]
    assert admitted(route, "gold", 1, **{"X-User": "bob"}) == [200]  # another user of the tier
    assert admitted(route, "gold", 1) == [429]  # no user key
    assert [run(route, X({}, ip="10.0.0.7")) for _ in range(2)] == [200, 429]
    assert run(route, X({}, ip="10.0.0.8")) == 200


def test_service_level_tiers_cover_every_endpoint():
    snap = compile_(cfg({"tier_key": "X-Tier", "tiers": [tier("gold", capacity=3)]}, where="service"))
    a, b = snap.route_list[0], snap.route_list[1]
    assert [run(r, X({"X-Tier": "gold"})) for r in (a, b, a, b)] == [200, 200, 200, 503]
    assert run(b, X({"X-Tier": "silver"})) == 403


def test_endpoint_tiers_are_per_endpoint():
    block = {"tier_key": "X-Tier", "tiers": [tier("gold", capacity=1)]}
    raw = cfg(block)
    raw["endpoints"][1]["extra_config"] = {T: block}
    snap = compile_(raw)
    a, b = snap.route_list[0], snap.route_list[1]
    assert [run(a, X({"X-Tier": "gold"})), run(b, X({"X-Tier": "gold"})), run(a, X({"X-Tier": "gold"}))] == \
        [200, 200, 503]


def test_a_redis_tier_compiles_to_a_redis_limit_and_falls_back_to_its_local_twin():
    root = {"redis": {"connection_pools": [{"name": "p", "address": "127.0.0.1:6379"}]}}
    block = {"tier_key": "X-Tier", "tiers": [
        {"tier_value": "gold", "ratelimit_redis": {"connection_name": "p", "max_rate": 10, "capacity": 20}},
        tier("*", "*", 2)]}
    route = compile_(cfg(block, root=root)).route_list[0]
    check = tiered_of(route)
    gold, rest = check.tiers
    assert [type(c) for c in gold.checks] == [RedisLimit]
    assert gold.checks[0].rate == 10 and gold.checks[0].cap == 20
    assert not any(isinstance(c, RedisLimit) for c in rest.checks)


# -- config errors ------------------------------------------------------------------------------
REDIS_ROOT = {"redis": {"connection_pools": [{"name": "p", "address": "127.0.0.1:6379"}]}}


@pytest.mark.parametrize("raw, path, words", [
    (cfg({"tier_key": "X-Tier", "tiers": [tier("(a)\\1", "regex")]}), f"{EP0}.tiers[0].tier_value",
     ["invalid regular expression", "(a)"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("gold"), tier("(?=x)y", "regex")]}), f"{EP0}.tiers[1].tier_value",
     ["invalid regular expression"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("[unclosed", "regex")]}), f"{EP0}.tiers[0].tier_value",
     ["invalid regular expression", "'[unclosed'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("value.matches('x')", "policy")]}), f"{EP0}.tiers[0].tier_value_as",
     ["expected literal, regex or *", "'policy'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("gold", "Literal")]}), f"{EP0}.tiers[0].tier_value_as", ["'Literal'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "gold", "ratelimit": lim(1),
                                           "ratelimit_redis": {"connection_name": "p", "max_rate": 1}}]},
         root=REDIS_ROOT), f"{EP0}.tiers[0]", ["exactly one of ratelimit or ratelimit_redis"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("gold"), {"tier_value": "silver"}]}), f"{EP0}.tiers[1]",
     ["exactly one of ratelimit or ratelimit_redis"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "gold", "ratelimit_redis": {"connection_name": "nope",
                                                                                      "max_rate": 1}}]},
         root=REDIS_ROOT), f"{EP0}.tiers[0].ratelimit_redis.connection_name", ["(p)", "'nope'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "gold", "ratelimit_redis": {"connection_name": "p",
                                                                                      "max_rate": 1}}]}),
     f"{EP0}.tiers[0].ratelimit_redis.connection_name", ["none defined", "'p'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "gold", "ratelimit_redis": {"max_rate": 1}}]},
         root=REDIS_ROOT), f"{EP0}.tiers[0].ratelimit_redis.connection_name", ["found none"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "g", "ratelimit": {"client_max_rate": 1,
                                                                             "strategy": "cookie"}}]}),
     f"{EP0}.tiers[0].ratelimit.strategy", ["expected one of ip, header, param", "'cookie'"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "g", "ratelimit": {"max_rate": 0}}]}),
     f"{EP0}.tiers[0].ratelimit", ["found neither"]),
    (cfg({"tiers": [tier("gold")]}), f"{EP0}.tier_key", ["required", "missing"]),
    (cfg({"tier_key": "", "tiers": [tier("gold")]}), f"{EP0}.tier_key", ["header name", "found none"]),
    (cfg({"tier_key": "X-Tier", "tiers": []}), f"{EP0}.tiers", ["at least one tier"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("gold"), "silver"]}), f"{EP0}.tiers[1]", ["expected object", "str"]),
    (cfg({"tier_key": "X-Tier", "tiers": [tier("(", "regex")]}, where="service"), f"{SVC}.tiers[0].tier_value",
     ["invalid regular expression"]),
    (cfg({"tier_key": "X-Tier", "tiers": [{"tier_value": "g", "ratelimit": {"client_max_rate": 1,
                                                                             "strategy": "param", "key": "id"}}]},
         where="service"), f"{SVC}.tiers[0].ratelimit.strategy", ["only meaningful on an endpoint"]),
])
def test_config_errors_name_the_json_path(raw, path, words):
    assert_problem(errors_of(raw), path, words)


def test_every_tier_error_is_listed_at_once():
    problems = errors_of(cfg({"tier_key": "X-Tier", "tiers": [
        tier("(", "regex"), tier("x", "policy"), {"tier_value": "y"},
        {"tier_value": "z", "ratelimit_redis": {"connection_name": "nope", "max_rate": 1}}]}))
    paths = {p.split(": ", 1)[0] for p in problems}
    assert {f"{EP0}.tiers[0].tier_value", f"{EP0}.tiers[1].tier_value_as", f"{EP0}.tiers[2]",
            f"{EP0}.tiers[3].ratelimit_redis.connection_name"} <= paths, problems


def test_tiers_after_a_catch_all_and_unknown_fields_are_warned_about():
    block = {"tier_key": "X-Tier", "typo": 1, "tiers": [
        tier("gold", rate_limit_typo=1),
        tier("", "*"),
        tier("silver"),
    ]}
    block["tiers"][0]["ratelimit"]["burst"] = 3
    warnings = compile_config(cfg(block)).warnings
    ep = '$.endpoints[0].extra_config["qos/ratelimit/tiered"]'
    assert f"{ep}.typo: unknown field: ignored" in warnings
    assert f"{ep}.tiers[0].rate_limit_typo: unknown field: ignored" in warnings
    assert f"{ep}.tiers[0].ratelimit.burst: unknown field: ignored" in warnings
    assert f"{ep}.tiers[2]: never reached: a '*' tier before it matches every request" in warnings

"""Tiered limits over real sockets (SPEC §3.7): the `tier_key` header picks the tier, each tier has
its own limits (stateless or on Redis), a request that matches no tier gets 403. Limits use
`every: "1m"`, so counts are exact.
"""

import pytest

from tests.support import Proxy, config, ep, get

T = "qos/ratelimit/tiered"


@pytest.fixture(scope="module")
def px(up, redis_server, tmp_path_factory):
    if not redis_server.alive:
        redis_server.start()
    redis_server.flushall()
    tiers = {"tier_key": "X-Tier", "tiers": [
        {"tier_value": "gold", "ratelimit": {"max_rate": 1, "every": "1m", "capacity": 4,
                                             "client_max_rate": 1, "client_capacity": 3,
                                             "strategy": "header", "key": "X-User"}},
        {"tier_value": "silver", "tier_value_as": "literal", "ratelimit": {"max_rate": 1, "every": "1m", "capacity": 2}},
        {"tier_value": "^trial-[0-9]+$", "tier_value_as": "regex",
         "ratelimit_redis": {"connection_name": "main", "max_rate": 1, "every": "1m", "capacity": 3}},
    ]}
    catch_all = {"tier_key": "X-Plan", "tiers": [
        {"tier_value": "pro", "ratelimit": {"max_rate": 1, "every": "1m", "capacity": 2}},
        {"tier_value": "", "tier_value_as": "*", "ratelimit": {"max_rate": 1, "every": "1m", "capacity": 1}},
    ]}
    cfg = config(up, [ep("/t", "/ok/t", extra_config={T: tiers}),
                      ep("/any", "/ok/any", extra_config={T: catch_all})],
                 listen_ip="127.0.0.1",
                 extra_config={"redis": {"connection_pools": [{"name": "main",
                                                               "address": f"127.0.0.1:{redis_server.port}"}]}})
    p = Proxy(cfg, tmp_path_factory.mktemp("tiered"))
    yield p
    p.stop()


def codes(port, path, n, **headers):
    return [get(port, path, headers)[0] for _ in range(n)]


def test_gold_silver_and_no_tier_get_their_own_limits_and_403(px):
    gold = [get(px.port, "/t", {"X-Tier": "gold", "X-User": u}) for u in ("ann", "ann", "ann", "ann", "bob", "cy")]
    assert [s for s, _, _ in gold] == [200, 200, 200, 429, 200, 503]
    s, h, _ = gold[3]
    assert h["retry-after"].isdigit() and 55 <= int(h["retry-after"]) <= 60
    assert gold[0][1]["ratelimit-policy"] == '"client";q=1;w=60'  # the tightest: ann's 3 before the tier's 4
    assert codes(px.port, "/t", 3, **{"X-Tier": "silver"}) == [200, 200, 503]  # gold's bucket is not silver's
    s, h, _ = get(px.port, "/t", {"X-Tier": "silver"})
    assert s == 503 and 55 <= int(h["retry-after"]) <= 60 and h["ratelimit-policy"] == '"endpoint";q=1;w=60'
    assert codes(px.port, "/t", 2) == [403, 403]  # no tier header
    assert codes(px.port, "/t", 2, **{"X-Tier": "bronze"}) == [403, 403]  # no matching tier
    assert codes(px.port, "/t", 1, **{"X-Tier": "Gold"}) == [403]  # literal is exact
    assert codes(px.port, "/t", 1, **{"x-tier": "trial-x"}) == [403]  # the regex does not match


def test_a_tier_with_ratelimit_redis_keeps_its_counter_in_redis(px, redis_server):
    assert codes(px.port, "/t", 4, **{"X-Tier": "trial-1"}) == [200, 200, 200, 503]
    assert codes(px.port, "/t", 1, **{"X-Tier": "trial-22"}) == [503]  # same tier, same bucket
    keys = redis_server.keys("fp:tiered:*")
    assert keys == ["fp:tiered:endpoint:GET:/t:2:a:"], keys
    assert "unavailable" not in px.stderr()


def test_a_catch_all_tier_takes_every_other_value_and_the_absent_header(px):
    assert codes(px.port, "/any", 3, **{"X-Plan": "pro"}) == [200, 200, 503]
    assert codes(px.port, "/any", 1) == [200]  # header absent: the * tier
    assert codes(px.port, "/any", 1, **{"X-Plan": "free"}) == [503]  # the same * bucket

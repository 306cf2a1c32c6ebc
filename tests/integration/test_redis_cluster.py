"""Redis-backed limits on a real 3-master Redis Cluster (SPEC §3.6): `redis.clusters` through
CLI-started proxies (tests/redis_cluster.py starts the cluster on loopback ports).

Proven: two instances share client limits for many keys, whose buckets spread over all three
masters; a master killed under load makes its slots' decisions fall back to the local bucket
within the timeout (no 5xx, bounded latency) while the other masters' slots stay shared, and
once it is back its slots are shared again.
"""

import time

import pytest

from tests.integration.test_redis_limits import (
    ANSWER_BOUND,
    RRL,
    Load,
    phase,
    proxies,  # noqa: F401 - the fixture, shared
    start,
    target,
    wait_for,
)
from tests.redis_cluster import RedisCluster
from tests.support import ep, get

CLUSTER = "ratelimit_cluster"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        c = RedisCluster(str(tmp_path_factory.mktemp("cluster")))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield c
    c.stop()


@pytest.fixture
def fresh(cluster):
    for n in cluster.nodes:
        if not n.alive:
            n.start()
    cluster.wait_ok()
    cluster.flushall()
    return cluster


def cluster_root(c: RedisCluster, **settings) -> dict:
    return {"redis": {"clusters": [{"name": CLUSTER, "addresses": c.addresses[:2], "pool_size": 4}]},
            "fastproxy": {"redis_timeout": "50ms", **settings}}


def client_ep(path: str, **block) -> dict:
    return ep(path, "/ok" + path, extra_config={RRL: {"connection_name": CLUSTER, "strategy": "header",
                                                      "key": "X-Client", **block}})


def key_of(path: str, client: str) -> bytes:
    return f"fp:router:GET:{path}:c:{client}".encode()


def test_two_instances_share_client_limits_for_many_keys_spread_over_every_master(fresh, up, proxies, tmp_path):
    endpoints = [client_ep("/c", client_max_rate=1, every="1h", client_capacity=3)]
    extra = cluster_root(fresh, redis_timeout="1s")  # not about timeouts: nothing may fall back here
    a = start(proxies, tmp_path, up, endpoints, extra, name="a.json")
    b = start(proxies, tmp_path, up, endpoints, extra, name="b.json")
    clients = [f"user{i}" for i in range(40)]
    admitted = {c: 0 for c in clients}
    for round_ in range(5):  # 5 requests per client, alternating instances: 3 pass in all
        for c in clients:
            port = (a if (round_ + len(c)) % 2 else b).port
            status = get(port, "/c", {"X-Client": c})[0]
            assert status in (200, 429)
            admitted[c] += status == 200
    assert admitted == {c: 3 for c in clients}
    masters = {fresh.node_of(key_of("/c", c)).port for c in clients}
    assert masters == {n.port for n in fresh.nodes}  # one limit's keys spread over all three
    for c in clients[:5]:
        assert fresh.get_hash(key_of("/c", c), "t") is not None  # decided in the cluster
    for p in (a, b):
        assert "unavailable" not in p.stderr()


def test_a_master_killed_under_load_falls_back_for_its_slots_only_then_shares_again(fresh, up, proxies, tmp_path):
    endpoints = [client_ep("/k", client_max_rate=100, every="1s", client_capacity=100)]
    a = start(proxies, tmp_path, up, endpoints, cluster_root(fresh), name="ka.json")
    b = start(proxies, tmp_path, up, endpoints, cluster_root(fresh), name="kb.json")
    # one client key per master: which master serves which key is fixed by the slots
    by_node: dict = {}
    i = 0
    while len(by_node) < 3:
        name = f"client{i}"
        by_node.setdefault(fresh.node_of(key_of("/k", name)).port, name)
        i += 1
    victim = fresh.nodes[2]
    dead_client = by_node[victim.port]
    live_clients = [c for port, c in by_node.items() if port != victim.port]
    targets = [target(p.port, "/k", 1, **{"X-Client": c}) for p in (a, b) for c in by_node.values()]
    stopfile = str(tmp_path / "stop")
    load = Load([phase("kill", 30.0, *targets)], stopfile)
    try:
        wait_for(lambda: all(fresh.get_hash(key_of("/k", c), "t") is not None for c in by_node.values()), 5,
                 "every client's bucket in the cluster")
        t_kill = time.monotonic()
        victim.kill()
        wait_for(lambda: "unavailable" in a.stderr() and "unavailable" in b.stderr(), 5,
                 "both instances falling back for the dead master")
        # the live masters' keys are still written by the proxies while the victim is down
        for c in live_clients:
            before = float(fresh.get_hash(key_of("/k", c), "l"))
            wait_for(lambda c=c, before=before: float(fresh.get_hash(key_of("/k", c), "l")) > before, 5,
                     f"{c}'s bucket (on a live master) written while the victim is down")
        time.sleep(max(0.0, t_kill + 1.5 - time.monotonic()))
        t_back = time.monotonic()
        victim.start()
        fresh.wait_ok()
        wait_for(lambda: fresh.get_hash(key_of("/k", dead_client), "t") is not None, 10,
                 "the returned master's slots shared again (its client's bucket written)")
        for p in (a, b):
            wait_for(lambda p=p: "answers again" in p.stderr(), 10, "the switch back logged")
    finally:
        rows = load.finish()["kill"]
    statuses = {r[2] for r in rows}
    assert statuses <= {200, 429}, statuses  # never a 5xx, never a connection error
    worst = max(r[1] for r in rows)
    down = [r for r in rows if t_kill <= r[0] < t_back]
    print(f"\n[cluster kill] {len(rows)} requests, {len(down)} while a master was down; worst answer "
          f"{worst * 1000:.1f} ms")
    assert worst < ANSWER_BOUND
    assert len(down) > 50
    assert any(r[2] == 200 for r in down)  # served meanwhile, by the live masters and the local fallback


def test_cluster_config_errors_name_the_field(tmp_path):
    import json
    import subprocess
    import sys

    from tests.support import ROOT

    raw = {"version": 3, "host": ["http://127.0.0.1:9"], "endpoints": [client_ep("/c", client_max_rate=1)],
           "extra_config": {"redis": {"clusters": [{"name": CLUSTER, "addresses": ["127.0.0.1:7000", "no port:x"]},
                                                   {"name": "other", "addresses": []}]}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(raw))
    r = subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", str(path)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 1
    assert 'clusters[0].addresses[1]' in r.stderr and "expected 'host:port'" in r.stderr
    assert 'clusters[1].addresses' in r.stderr and "at least one cluster node" in r.stderr


def test_throughput_of_a_cluster_limited_route_against_one_redis_and_a_local_limit(fresh, redis_server, up,
                                                                                  proxies, tmp_path):
    """Limits far above the load (they never refuse), 2 s each, interleaved twice: the cost of
    Redis, and of a cluster over one Redis. Printed for the report; only a gross regression fails."""
    from tests.configutil import RL

    redis_server.flushall()
    big = {"max_rate": 1_000_000, "capacity": 1_000_000}
    extra = cluster_root(fresh, redis_timeout="1s")
    extra["redis"]["connection_pools"] = [{"name": "one", "address": f"127.0.0.1:{redis_server.port}",
                                           "pool_size": 4}]
    p = start(proxies, tmp_path, up, [
        ep("/tp-local", "/ok/tp-local", extra_config={RL: big}),
        ep("/tp-redis", "/ok/tp-redis", extra_config={RRL: {"connection_name": "one", **big}}),
        ep("/tp-cluster", "/ok/tp-cluster", extra_config={RRL: {"connection_name": CLUSTER, **big}}),
    ], extra)
    phases = []
    for i in range(2):
        for kind in ("local", "redis", "cluster"):
            phases.append(phase(f"{kind}{i}", 2.0, target(p.port, f"/tp-{kind}", 8)))
    out = Load(phases).finish()

    def rate(label):
        rows = out[label]
        assert rows and all(r[2] == 200 for r in rows), {r[2] for r in rows}
        return len(rows) / (max(r[0] + r[1] for r in rows) - min(r[0] for r in rows))

    local, red, clu = (sum(rate(f"{k}{i}") for i in range(2)) / 2 for k in ("local", "redis", "cluster"))
    print(f"\n[throughput] local {local:.0f} req/s, one Redis {red:.0f} req/s ({red / local:.2f}x), "
          f"cluster {clu:.0f} req/s ({clu / local:.2f}x local, {clu / red:.2f}x one Redis)")
    assert clu / local > 0.3
    assert "unavailable" not in p.stderr()


def test_a_replica_promoted_for_a_killed_master_makes_its_slots_shared_again(up, proxies, tmp_path):
    """3 masters with a replica each: a master SIGKILLed under load, its replica promoted by the
    cluster (node timeout 1 s); the proxies find the new master through the slot map and share
    that master's slots again, with no 5xx meanwhile."""
    try:
        c = RedisCluster(str(tmp_path / "replicated"), replicas=1)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        endpoints = [client_ep("/r", client_max_rate=100, every="1s", client_capacity=100)]
        a = start(proxies, tmp_path, up, endpoints, cluster_root(c), name="ra.json")
        victim = c.masters()[0]
        i = 0
        while c.node_of(key_of("/r", f"client{i}")).port != victim.port:
            i += 1
        name = f"client{i}"
        stopfile = str(tmp_path / "stop")
        load = Load([phase("promote", 30.0, target(a.port, "/r", 2, **{"X-Client": name}))], stopfile)
        try:
            wait_for(lambda: c.get_hash(key_of("/r", name), "t") is not None, 5, "the client's bucket in the cluster")
            victim.kill()
            wait_for(lambda: "unavailable" in a.stderr(), 5, "the fallback for the dead master")
            wait_for(lambda: victim.port not in {n.port for n in c.masters()}, 15, "the replica's promotion")
            promoted = c.node_of(key_of("/r", name))
            assert promoted.port != victim.port
            try:
                wait_for(lambda: c.get_hash(key_of("/r", name), "t") is not None, 10,
                         "the client's bucket written on the promoted replica (shared again)")
            except AssertionError:
                print(a.stderr())
                raise
            assert "slot map changed" in a.stderr()
        finally:
            rows = load.finish()["promote"]
        assert {r[2] for r in rows} <= {200, 429}
        assert max(r[1] for r in rows) < ANSWER_BOUND
    finally:
        c.stop()


def test_a_route_parameter_is_no_hash_tag_the_keys_of_its_limit_spread_over_the_slots():
    from fastproxy.config.compile import compile_config
    from fastproxy.limits.redis_cluster import key_slot

    raw = {"version": 3, "host": ["http://127.0.0.1:9"], "output_encoding": "no-op",
           "endpoints": [client_ep("/users/{id}", client_max_rate=1)],
           "extra_config": {"redis": {"clusters": [{"name": CLUSTER, "addresses": ["127.0.0.1:7000"]}]}}}
    route = compile_config(raw).route_list[0]
    prefix = next(c for c in route.checks if hasattr(c, "prefix")).prefix
    assert b"{" not in prefix and b"}" not in prefix
    assert len({key_slot(prefix + f"user{i}".encode()) for i in range(200)}) > 150

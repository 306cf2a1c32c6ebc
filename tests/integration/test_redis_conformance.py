"""One battery of token-bucket cases (SPEC §3.1, §3.6) run against both implementations: the local
`bucket.TokenBucket` and the Lua script of `redis_store.RedisStore` on a real redis-server, with
an injected clock (`decide(..., now=t)`). Same inputs, identical admitted counts.

A case is (max_rate, every, capacity, schedule); the schedule is a list of (time, n): n requests
at that instant. Locally that is n `take(t)`; on Redis the n decisions are asked in one loop tick,
so the store sends one EVALSHA asking for n tokens (the production path). A second Redis pass
asks one decision per round trip, which must agree too.

The table's expected counts hold at t0 = 0; the same schedules are also run shifted to an epoch
time (1.7e9 s, what Redis `TIME` gives in production, where a float has 0.24 µs of resolution),
where both implementations must still agree with each other.
"""

import asyncio
import math
import random
import time

import pytest

from fastproxy.config.compile import compile_config
from fastproxy.limits.bucket import TokenBucket, default_capacity
from fastproxy.limits.redis_store import FALLBACK, PoolConfig, RedisStore
from fastproxy.limits.redis import RedisLimit

BASES = (0.0, 1_700_000_000.0)

# (id, max_rate, every (s), capacity, [(t, n)], expected admitted per step at t0 = 0)
CASES = [
    ("burst-equals-capacity", 1, 1.0, 5, [(0, 8)], [5]),
    ("burst-then-nothing-at-same-instant", 1, 1.0, 5, [(0, 5), (0, 1), (0.5, 3)], [5, 0, 0]),
    ("default-capacity", 7, 1.0, default_capacity(7, 1.0), [(0, 10)], [7]),
    ("refill-exactly-at-1/rate", 10, 1.0, 3, [(0, 3), (0.099, 1), (0.1, 1), (0.1, 1), (0.2, 2)], [3, 0, 1, 0, 1]),
    ("refill-exactly-at-1/rate-slow", 1, 1.0, 1, [(0, 2), (0.999, 1), (1, 1), (2, 1)], [1, 0, 1, 1]),
    ("sub-second-every-500ms", 2, 0.5, default_capacity(2, 0.5), [(0, 6), (0.25, 2), (0.5, 1), (0.75, 1)],
     [4, 1, 1, 1]),
    ("sub-second-every-100ms", 1, 0.1, 1, [(0, 3), (0.05, 1), (0.1, 1), (0.15, 1), (0.2, 5)], [1, 0, 1, 0, 1]),
    ("every-1m", 2, 60.0, 2, [(0, 3), (29, 1), (30, 1), (60, 2)], [2, 0, 1, 1]),
    ("fractional-rate", 1, 2.0, 1, [(0, 2), (1, 1), (2, 1), (3.9, 1), (4, 1)], [1, 0, 1, 0, 1]),
    ("partial-refill-carries", 3, 1.0, 2, [(0, 2), (0.2, 1), (0.34, 1), (0.5, 1), (1.0, 5)], [2, 0, 1, 0, 2]),
    ("no-burst-above-capacity-after-idle", 5, 1.0, 5, [(0, 5), (1000, 10), (1000, 1), (1000.2, 2)], [5, 5, 0, 1]),
    ("idle-in-steps-never-exceeds-capacity", 4, 1.0, 3, [(0, 1), (10, 4), (20, 2), (30, 9)], [1, 3, 2, 3]),
    ("spike-arrest", 20, 1.0, 1, [(i / 100, 1) for i in range(100)], [1 if i % 5 == 0 else 0 for i in range(100)]),
    ("refused-takes-change-nothing", 2, 1.0, 2, [(0, 2), (0.25, 50), (0.5, 1), (0.75, 50), (1.0, 1)],
     [2, 0, 1, 0, 1]),
    ("large-batch", 100, 1.0, 250, [(0, 1000), (1, 1000), (1.5, 1)], [250, 100, 1]),
]


def _random_cases(n_cases: int = 6, steps: int = 150) -> list:
    rnd = random.Random(20240611)
    out = []
    for c in range(n_cases):
        max_rate = rnd.choice([0.7, 3.3, 7, 20, 250])
        every = rnd.choice([0.1, 0.25, 1.0, 2.0])
        cap = rnd.randint(1, 12)
        t, sched = 0.0, []
        for _ in range(steps):
            t += rnd.expovariate(max_rate / every * 1.5)
            sched.append((round(t, 6), rnd.choice([1, 1, 1, 2, 3, 7])))
        out.append((f"random-{c}", max_rate, every, cap, sched, None))
    return out


ALL = CASES + _random_cases()


def local_counts(rate: float, cap: int, sched: list, base: float) -> list:
    b = TokenBucket(rate, cap, base + sched[0][0])
    return [sum(b.take(base + t) for _ in range(n)) for t, n in sched]


def run(coro):
    return asyncio.run(coro)


def store_of(redis_server, timeout: float = 5.0) -> RedisStore:
    # a generous budget: the conformance run must never fall back
    return RedisStore(PoolConfig("conformance", "127.0.0.1", redis_server.port, 0, 4, 2.0, None, None), timeout)


async def redis_counts(store: RedisStore, key: bytes, rate: float, cap: int, sched: list, base: float,
                       batched: bool = True, ttl_ms: int = 600_000) -> list:
    out = []
    for t, n in sched:
        now = base + t
        if batched:
            results = await asyncio.gather(*[store.decide(key, rate, cap, ttl_ms, now=now) for _ in range(n)])
        else:
            results = [await store.decide(key, rate, cap, ttl_ms, now=now) for _ in range(n)]
        assert FALLBACK not in results and store.up, "Redis must answer every conformance decision"
        out.append(sum(r[0] for r in results))
    return out


async def _close(store: RedisStore) -> None:
    if store.conn is not None:
        store.conn.close()


def _key(tag: str) -> bytes:
    return f"conf:{tag}:{time.monotonic_ns()}".encode()


@pytest.mark.parametrize("base", BASES, ids=["t0", "epoch"])
@pytest.mark.parametrize("case", ALL, ids=[c[0] for c in ALL])
def test_local_bucket_and_redis_script_admit_the_same(redis_server, case, base):
    name, max_rate, every, cap, sched, expected = case
    rate = max_rate / every
    local = local_counts(rate, cap, sched, base)

    async def go():
        store = store_of(redis_server)
        try:
            batched = await redis_counts(store, _key(name + ":b"), rate, cap, sched, base, batched=True)
            single = await redis_counts(store, _key(name + ":s"), rate, cap, sched, base, batched=False)
        finally:
            await _close(store)
        return batched, single

    batched, single = run(go())
    assert batched == local, f"{name} at base {base}: redis (one EVALSHA per tick) {batched} != local {local}"
    assert single == local, f"{name} at base {base}: redis (one decision per call) {single} != local {local}"
    if expected is not None and base == 0.0:
        assert local == expected, f"{name}: local bucket {local} != table {expected}"
    # the window bound of §3.1 holds for both: over [t_a, t_b] at most capacity + rate * (t_b - t_a)
    for i in range(len(sched)):
        for j in range(i, min(len(sched), i + 40)):
            window = sched[j][0] - sched[i][0]
            assert sum(local[i:j + 1]) <= cap + rate * window + 1e-6


def test_a_batch_of_many_keys_in_one_tick_keeps_every_key_isolated(redis_server):
    """50 keys decided in the same ticks (one pipeline of 50 EVALSHA per tick), each with its own
    schedule: every key's counts equal its own local bucket's; draining one touches no other."""
    rnd = random.Random(7)
    rate, cap = 5.0, 4
    keys = [_key(f"iso{i}") for i in range(50)]
    times = [0, 0.1, 0.2, 0.5, 1.0, 3.0]
    plan = {k: [(t, rnd.choice([0, 1, 2, 6])) for t in times] for k in keys}
    plan[keys[0]] = [(t, 100) for t in times]  # one key hammered, next to quiet ones

    async def go():
        store = store_of(redis_server)
        got = {k: [] for k in keys}
        try:
            for step, t in enumerate(times):
                futs = {k: [store.decide(k, rate, cap, 600_000, now=t) for _ in range(plan[k][step][1])] for k in keys}
                assert len(store.pending) == sum(1 for k in keys if plan[k][step][1])  # grouped per key
                for k in keys:
                    rs = await asyncio.gather(*futs[k])
                    assert FALLBACK not in rs
                    got[k].append(sum(r[0] for r in rs))
        finally:
            await _close(store)
        return got

    got = run(go())
    for k in keys:
        assert got[k] == local_counts(rate, cap, plan[k], 0.0), k
    assert got[keys[0]] == [4, 0, 1, 1, 3, 4]


def test_the_remaining_count_of_each_admitted_decision_matches_the_local_bucket(redis_server):
    """Within one batch the j-th admitted request sees what the later ones left (RateLimit: r=)."""
    rate, cap = 2.0, 5

    async def go():
        store = store_of(redis_server)
        try:
            rs = await asyncio.gather(*[store.decide(_key_fixed, rate, cap, 600_000, now=0.0) for _ in range(7)])
        finally:
            await _close(store)
        return rs

    _key_fixed = _key("remaining")
    rs = run(go())
    b = TokenBucket(rate, cap, 0.0)
    want = []
    for _ in range(7):
        ok = b.take(0.0)
        want.append((int(ok), b.remaining(0.0) if ok else 0))
    assert [(r[0], r[1]) for r in rs] == want
    refused = rs[-1]
    # Retry-After and RateLimit t= inputs: the bucket's own wait and time-to-full
    assert math.isclose(refused[2], b.retry_after(0.0), abs_tol=1e-12) and math.isclose(refused[2], 0.5, abs_tol=1e-6)
    assert math.isclose(refused[3], b.reset_after(0.0), abs_tol=1e-12) and math.isclose(refused[3], cap / rate)


def test_key_ttl_covers_the_time_to_full_and_the_key_expires(redis_server):
    """Keys expire once the bucket would be full again: the TTL a RedisLimit sets is at least the
    refill time, so expiry is lossless (a full bucket is what a missing key means); and a set key
    really goes away (polled, bounded)."""
    snap = compile_config({"version": 3, "host": ["http://127.0.0.1:9"],
                           "extra_config": {"redis": {"connection_pools": [
                               {"name": "p", "address": f"127.0.0.1:{redis_server.port}"}]}},
                           "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/a"}], "extra_config": {
                               "qos/ratelimit/router/redis": {"connection_name": "p", "max_rate": 3, "capacity": 12,
                                                              "every": "2s", "client_max_rate": 50,
                                                              "client_capacity": 5, "strategy": "ip"}}}]})
    limits = [c for c in snap.route_list[0].checks if isinstance(c, RedisLimit)]
    assert len(limits) == 2
    for lim in limits:
        refill_ms = lim.cap / lim.rate * 1000
        assert lim.ttl_ms >= refill_ms
        assert lim.ttl_ms <= refill_ms + 2000  # not kept much longer than needed
        # lossless: at the TTL the local bucket, drained, is full again (same as a fresh one)
        b = TokenBucket(lim.rate, lim.cap, 0.0)
        while b.take(0.0):
            pass
        assert b.remaining(lim.ttl_ms / 1000) == lim.cap and b.reset_after(lim.ttl_ms / 1000) == 0.0

    key = _key("ttl")
    ttl_ms = 300

    async def decide(now):
        store = store_of(redis_server)
        try:
            return await asyncio.gather(*[store.decide(key, 10.0, 2, ttl_ms, now=now) for _ in range(3)])
        finally:
            await _close(store)

    r = redis_server.client()
    try:
        assert [x[0] for x in run(decide(0.0))] == [1, 1, 0]
        pttl = r.pttl(key)
        assert 0 < pttl <= ttl_ms
        deadline = time.monotonic() + 5
        while r.exists(key) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not r.exists(key), "the bucket key must expire"
        # a refused decision does not create or extend a key
        r.hset(key, mapping={"t": "0", "l": "100"})
        r.pexpire(key, 60_000)
        assert [x[0] for x in run(decide(100.01))] == [0, 0, 0]
        assert r.pttl(key) > 50_000
        assert r.hget(key, "t") == b"0"
    finally:
        r.delete(key)
        r.close()


def test_a_reload_that_changes_a_pool_closes_the_old_one_and_keeps_an_unchanged_one(redis_server):
    from fastproxy.policies.state import State

    def snap_with(pool_size: int):
        raw = {"version": 3, "host": ["http://127.0.0.1:1"],
               "extra_config": {"redis": {"connection_pools": [
                   {"name": "a", "address": f"127.0.0.1:{redis_server.port}", "pool_size": pool_size},
                   {"name": "b", "address": f"127.0.0.1:{redis_server.port}"}]}},
               "endpoints": [{"endpoint": p, "backend": [{"url_pattern": "/"}], "extra_config": {
                   "qos/ratelimit/router/redis": {"connection_name": n, "max_rate": 100}}}
                   for p, n in (("/a", "a"), ("/b", "b"))]}
        return compile_config(raw)

    def stores_of(state):
        """Pool name -> the worker's store, from the live Redis limits of the routes /a and /b."""
        return {name: rs.checks[0].store for name, rs in zip("ab", state.routes)}

    async def go():
        old = State(snap_with(4), 0.0)
        stores = stores_of(old)
        for s in stores.values():  # make each pool open a connection
            assert (await s.decide(b"fp:test:reload", 100.0, 100, 60000))[0] == 1
        new = State(snap_with(8), 0.0, previous=old)  # pool "a" changed, "b" did not
        await asyncio.sleep(0.05)
        assert stores_of(new)["b"] is stores["b"] and stores["b"].up
        assert stores_of(new)["a"] is not stores["a"]
        assert stores["a"].up is False  # retired: no more decisions, no probing
        assert stores["a"].decide(b"fp:test:reload", 100.0, 100, 60000) is None

    asyncio.run(go())

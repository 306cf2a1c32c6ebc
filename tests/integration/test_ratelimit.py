"""Rate limits over real sockets (SPEC §3.1-3.5, §3.9, §4 workers): fastproxy started through its
CLI (`tests.support.Proxy`) in front of a recording backend (`tests.support.Upstream`).

Every limit that is not about timing uses `every: "1m"`, so no token comes back while a test
runs and the counts are exact; the timing tests (spike arrest, accounting, two workers) measure
over a bounded window and assert within a stated tolerance. Nothing sleeps to wait for a server.
"""

import re
import statistics
import threading
import time

import pytest

from tests.integration.netutil import Client, build, rss_kib
from tests.configutil import JUJU_PROXY, JUJU_ROUTER, PROXY, RL, SF_ITEM, SVC
from tests.support import Proxy, config, ep, free_port, get


FLOOD_KEYS = 20_000
FLOOD_MAX_CLIENTS = 1000
# RSS growth allowed over the flood (measured: +4 KiB bounded; ~+4.8 MiB unbounded since long keys are
# stored as 16-byte digests, ~+9.6 MiB before)
FLOOD_RSS_BOUND_KIB = 3 * 1024


def lim(path, url=None, **extra):
    return ep(path, url or "/ok" + path.split("{")[0].rstrip("/"), extra_config=extra)


@pytest.fixture(scope="module")
def px(up, tmp_path_factory):
    endpoints = [
        lim("/ep", **{RL: {"max_rate": 1, "every": "1m", "capacity": 3}}),
        lim("/ip", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 2, "strategy": "ip"}}),
        lim("/hdr", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 2, "strategy": "header",
                            "key": "X-Api-Key"}}),
        lim("/param/{id}", "/ok/param/{id}", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 2,
                                                     "strategy": "param", "key": "id"}}),
        lim("/code", **{RL: {"max_rate": 1, "every": "1m", "capacity": 1, "status_code": 429}}),
        lim("/juju", **{JUJU_ROUTER: {"maxRate": 1, "clientMaxRate": 1, "strategy": "header", "key": "X-Juju"}}),
        ep("/juju-proxy", "/ok/juju-proxy", backend={"extra_config": {JUJU_PROXY: {"maxRate": 1, "capacity": 1}}}),
        ep("/backend", "/ok/backend", backend={"extra_config": {PROXY: {"max_rate": 1, "every": "1m", "capacity": 2}}}),
        ep("/free", "/ok/free"),
        lim("/xff", "/echo/xff", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 1, "strategy": "ip"}}),
        lim("/spike", **{RL: {"max_rate": 20, "capacity": 1}}),
        lim("/acct", **{RL: {"max_rate": 50, "capacity": 10}}),
        # every new key spends its client token, then the empty endpoint bucket refuses it (503):
        # the table fills with non-full buckets, its worst case, and the backend is not involved
        lim("/flood", **{RL: {"max_rate": 1, "every": "1m", "capacity": 1, "client_max_rate": 1,
                              "strategy": "header", "key": "X-Client", "max_clients": FLOOD_MAX_CLIENTS}}),
        # the control: the same flood against the default bound (100,000 clients) must show up in RSS
        lim("/flood-wide", **{RL: {"max_rate": 1, "every": "1m", "capacity": 1, "client_max_rate": 1,
                                   "strategy": "header", "key": "X-Client"}}),
    ]
    p = Proxy(config(up, endpoints, listen_ip="127.0.0.1"), tmp_path_factory.mktemp("rl"))
    yield p
    p.stop()


def hits(up, url):
    return sum(1 for r in list(up.requests) if r["url"] == url)


def retry_after(headers) -> int:
    value = headers["retry-after"]
    assert value.isdigit(), value
    return int(value)


def codes(port, path, n, headers=None):
    with Client(port) as c:
        return [c.request("GET", path, headers).status for _ in range(n)]


# -- each namespace and strategy ----------------------------------------------------------------
def test_endpoint_limit_503_with_retry_after_and_upstream_not_hit(px, up):
    assert codes(px.port, "/ep", 3) == [200, 200, 200]
    status, h, body = get(px.port, "/ep")
    assert status == 503
    assert 55 <= retry_after(h) <= 60  # one token a minute
    assert hits(up, "/ok/ep") == 3


def test_client_limit_ip_strategy_429(px, up):
    assert codes(px.port, "/ip", 3) == [200, 200, 429]
    status, h, _ = get(px.port, "/ip")
    assert status == 429 and 55 <= retry_after(h) <= 60
    assert hits(up, "/ok/ip") == 2


def test_client_limit_header_strategy_429_per_key_and_missing_key_refused(px, up):
    assert codes(px.port, "/hdr", 3, {"X-Api-Key": "alice"}) == [200, 200, 429]
    assert codes(px.port, "/hdr", 1, {"x-api-key": "alice"}) == [429]
    assert codes(px.port, "/hdr", 2, {"X-Api-Key": "bob"}) == [200, 200]
    status, h, _ = get(px.port, "/hdr")
    assert status == 429 and retry_after(h) >= 1
    assert hits(up, "/ok/hdr") == 4


def test_client_limit_param_strategy_429_per_placeholder_value(px, up):
    assert codes(px.port, "/param/c1", 3) == [200, 200, 429]
    assert codes(px.port, "/param/c2", 1) == [200]
    status, h, _ = get(px.port, "/param/c1")
    assert status == 429 and 55 <= retry_after(h) <= 60
    assert get(px.port, "/param/")[0] == 404  # an empty placeholder never reaches the limiter
    assert hits(up, "/ok/param/c1") == 2 and hits(up, "/ok/param/c2") == 1


def test_status_code_override(px):
    assert codes(px.port, "/code", 2) == [200, 429]
    status, h, _ = get(px.port, "/code")
    assert status == 429 and 55 <= retry_after(h) <= 60


def test_juju_router_alias(px):
    # maxRate 1 and clientMaxRate 1 per second, capacity = rate = 1; the three requests take a few ms
    with Client(px.port) as c:
        t0 = time.monotonic()
        a1 = c.request("GET", "/juju", {"X-Juju": "a"})
        a2 = c.request("GET", "/juju", {"X-Juju": "a"})
        b1 = c.request("GET", "/juju", {"X-Juju": "b"})
        elapsed = time.monotonic() - t0
    assert elapsed < 0.9
    assert (a1.status, a2.status, b1.status) == (200, 429, 503)
    assert a2.header("Retry-After") == "1" and b1.header("Retry-After") == "1"


def test_juju_proxy_alias(px, up):
    with Client(px.port) as c:
        r1 = c.request("GET", "/juju-proxy")
        r2 = c.request("GET", "/juju-proxy")
    assert (r1.status, r2.status) == (200, 503)
    assert r2.header("Retry-After") == "1"
    assert hits(up, "/ok/juju-proxy") == 1


def test_backend_limit_503_with_retry_after_and_upstream_not_hit(px, up):
    with Client(px.port) as c:
        rs = [c.request("GET", "/backend") for _ in range(4)]
    assert [r.status for r in rs] == [200, 200, 503, 503]
    assert 55 <= int(rs[2].header("Retry-After")) <= 60
    assert hits(up, "/ok/backend") == 2
    assert rs[0].header("RateLimit-Policy") == '"backend";q=1;w=60'
    assert rs[0].header("RateLimit").startswith('"backend";r=1;t=')


# -- RateLimit headers --------------------------------------------------------------------------
def test_ratelimit_headers_on_a_limited_route_and_absent_on_an_unlimited_one(px):
    with Client(px.port) as c:
        ok = c.request("GET", "/spike")  # 20/s, capacity 1
        free = c.request("GET", "/free")
    assert ok.status == 200
    assert ok.header("RateLimit-Policy") == '"endpoint";q=20;w=1'
    assert ok.header("RateLimit") == '"endpoint";r=0;t=1'
    for name in ("RateLimit-Policy", "RateLimit"):
        assert SF_ITEM.match(ok.header(name)), ok.header(name)
        assert len(ok.all(name)) == 1
    assert free.status == 200
    assert not {"ratelimit", "ratelimit-policy", "retry-after"} & free.names()


def test_ratelimit_headers_on_a_rejection_say_nothing_remains(px):
    with Client(px.port) as c:
        rs = [c.request("GET", "/hdr", {"X-Api-Key": "headers"}) for _ in range(3)]
    assert [r.status for r in rs] == [200, 200, 429]
    assert rs[0].header("RateLimit-Policy") == '"client";q=1;w=60'
    assert re.fullmatch(r'"client";r=1;t=(59|60)', rs[0].header("RateLimit"))
    assert re.fullmatch(r'"client";r=0;t=(59|60)', rs[2].header("RateLimit"))
    assert rs[2].header("RateLimit-Policy") == '"client";q=1;w=60'


def test_ratelimit_headers_can_be_switched_off(up, tmp_path):
    cfg = config(up, [lim("/lim", **{RL: {"max_rate": 1, "every": "1m", "capacity": 1}})], listen_ip="127.0.0.1",
                 extra_config={"fastproxy": {"ratelimit_headers": False}})
    p = Proxy(cfg, tmp_path)
    try:
        with Client(p.port) as c:
            ok = c.request("GET", "/lim")
            no = c.request("GET", "/lim")
        assert (ok.status, no.status) == (200, 503)
        assert not {"ratelimit", "ratelimit-policy"} & (ok.names() | no.names())
        assert 55 <= int(no.header("Retry-After")) <= 60  # Retry-After is not optional
    finally:
        p.stop()


# -- service limit --------------------------------------------------------------------------------
def test_service_limit_covers_every_endpoint_instance_wide_and_per_client(up, tmp_path):
    cfg = config(up, [ep("/sa", "/ok/sa"), ep("/sb", "/ok/sb")], listen_ip="127.0.0.1",
                 extra_config={SVC: {"max_rate": 1, "every": "1m", "capacity": 3, "client_max_rate": 1,
                                     "client_capacity": 1, "strategy": "header", "key": "X-User"}})
    p = Proxy(cfg, tmp_path)
    try:
        with Client(p.port) as c:
            u1a = c.request("GET", "/sa", {"X-User": "u1"})
            u1b = c.request("GET", "/sb", {"X-User": "u1"})  # the client's bucket covers every endpoint
            u2b = c.request("GET", "/sb", {"X-User": "u2"})
            u3a = c.request("GET", "/sa", {"X-User": "u3"})  # u1's refusal spent no instance-wide token
            u4a = c.request("GET", "/sa", {"X-User": "u4"})  # 3 spent: the instance-wide bucket is empty
            anon = c.request("GET", "/sa")
        assert [r.status for r in (u1a, u1b, u2b, u3a, u4a, anon)] == [200, 429, 200, 200, 503, 429]
        for r in (u1b, u4a):
            assert 55 <= int(r.header("Retry-After")) <= 60
        assert anon.header("Retry-After") == "1"
        assert hits(up, "/ok/sa") == 2 and hits(up, "/ok/sb") == 1
        assert u2b.header("RateLimit-Policy") == '"service-client";q=1;w=60'  # its own bucket is the tightest
        assert u2b.header("RateLimit").startswith('"service-client";r=0;t=')
    finally:
        p.stop()


# -- client IP ------------------------------------------------------------------------------------
def test_x_forwarded_for_is_ignored_for_the_ip_strategy_without_trusted_proxies(px, up):
    import json

    status, _, body = get(px.port, "/xff", {"X-Forwarded-For": "1.1.1.1"})
    assert status == 200
    seen = dict((k.lower(), v) for k, v in json.loads(body)["headers"])
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the client's own header is discarded
    assert get(px.port, "/xff", {"X-Forwarded-For": "2.2.2.2"})[0] == 429  # same peer, same bucket
    assert get(px.port, "/xff", {"X-Real-IP": "3.3.3.3"})[0] == 429


def test_x_forwarded_for_from_a_trusted_proxy_gives_separate_buckets(up, tmp_path):
    cfg = config(up, [lim("/xff", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 1,
                                          "strategy": "ip"}})], listen_ip="127.0.0.1",
                 extra_config={"router": {"trusted_proxies": ["127.0.0.1"]}})
    p = Proxy(cfg, tmp_path)
    try:
        def status(xff=None):
            return get(p.port, "/xff", {"X-Forwarded-For": xff} if xff else None)[0]

        assert status("1.1.1.1") == 200
        assert status("2.2.2.2") == 200  # another client behind the trusted proxy
        assert status("1.1.1.1") == 429
        assert status("1.1.1.1, 3.3.3.3") == 200  # right to left: 3.3.3.3 is the client
        assert status("9.9.9.9, 3.3.3.3") == 429
        assert status("3.3.3.3, 127.0.0.1") == 429  # trusted hops are skipped
        assert status() == 200  # no header: the peer itself
        assert status() == 429
    finally:
        p.stop()


# -- timing: spike arrest and accounting ----------------------------------------------------------
def test_spike_arrest_after_the_burst_requests_pass_1_over_rate_apart(px):
    # max_rate 20/s, capacity 1: a burst of 1, then one request per 50 ms; a tight loop for ~1 s
    time.sleep(0.06)  # let the bucket refill after the header test (1/20 s)
    admitted = []
    statuses = set()
    with Client(px.port) as c:
        t0 = time.monotonic()
        for _ in range(1_000_000):  # ~30 us a refused request: the 1 s bound ends the loop
            t = time.monotonic()
            if t - t0 >= 1.0:
                break
            r = c.request("GET", "/spike")
            statuses.add(r.status)
            if r.status == 200:
                admitted.append(t)
        window = time.monotonic() - t0
    assert statuses == {200, 503}
    expected = 1 + 20 * window
    gaps = [b - a for a, b in zip(admitted, admitted[1:])]
    print(f"spike: {len(admitted)} admitted in {window:.3f}s (ideal {expected:.1f}); "
          f"gaps min {min(gaps):.4f} median {statistics.median(gaps):.4f}")
    assert expected - 5 <= len(admitted) <= expected + 1
    assert min(gaps) >= 0.035  # never two within one interval (client-side timing jitter allowed)
    assert 0.045 <= statistics.median(gaps) <= 0.065


def test_accounting_ok_plus_limited_is_total_and_upstream_sees_exactly_ok(px, up):
    # max_rate 50/s, capacity 10; six keep-alive connections hammer it for ~0.6 s
    before = hits(up, "/ok/acct")
    counts = []
    stop = time.monotonic() + 0.6
    t0 = time.monotonic()

    def worker():
        n = {}
        with Client(px.port) as c:
            for _ in range(1_000_000):
                if time.monotonic() >= stop:
                    break
                s = c.request("GET", "/acct").status
                n[s] = n.get(s, 0) + 1
        counts.append(n)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    window = time.monotonic() - t0
    total = sum(sum(n.values()) for n in counts)
    ok = sum(n.get(200, 0) for n in counts)
    limited = sum(n.get(503, 0) for n in counts)
    print(f"accounting: total {total}, ok {ok}, limited {limited}, window {window:.3f}s")
    assert len(counts) == 6
    assert ok + limited == total
    assert limited > 0
    assert hits(up, "/ok/acct") - before == ok
    assert ok <= 10 + 50 * window + 1
    assert ok >= 10 + 50 * 0.6 * 0.75


# -- memory under a flood of distinct clients -------------------------------------------------------
def test_client_key_flood_keeps_memory_flat(px):
    pid = px.proc.pid  # one worker: the process itself serves
    pad = "k" * 200
    batch = 250  # ~70 KiB a batch: large pipelined reads must not trip the head-size bound

    def flood(start, n, path="/flood"):
        statuses = {}
        with Client(px.port, timeout=10) as c:
            for b in range(start, start + n, batch):
                c.send(b"".join(build("GET", path, {"X-Client": f"{i:08d}-{pad}"})
                                for i in range(b, min(b + batch, start + n))))
                for _ in range(min(batch, start + n - b)):
                    s = c.response().status
                    statuses[s] = statuses.get(s, 0) + 1
        return statuses

    # spend the endpoint token first: every flood request is then answered by the proxy itself
    assert codes(px.port, "/flood", 1, {"X-Client": "first"}) == [200]
    warm = flood(0, 3 * FLOOD_MAX_CLIENTS)  # fill the table past its bound once: allocator warm
    base = rss_kib(pid)
    t0 = time.monotonic()
    got = flood(10**6, FLOOD_KEYS)
    elapsed = time.monotonic() - t0
    after = rss_kib(pid)
    assert sum(warm.values()) == 3 * FLOOD_MAX_CLIENTS
    assert got == {503: FLOOD_KEYS}  # each new key: client token spent, endpoint bucket empty
    # the most recent keys are still tracked: their spent token is remembered
    last = f"{10**6 + FLOOD_KEYS - 1:08d}-{pad}"
    assert codes(px.port, "/flood", 1, {"X-Client": last}) == [429]
    # control: the same keys where the table may hold them all; RSS must see that
    assert codes(px.port, "/flood-wide", 1, {"X-Client": "first"}) == [200]
    assert flood(0, FLOOD_KEYS, "/flood-wide") == {503: FLOOD_KEYS}
    wide = rss_kib(pid)
    print(f"flood: {FLOOD_KEYS} keys in {elapsed:.2f}s, RSS {base} -> {after} KiB (+{after - base}) with "
          f"max_clients {FLOOD_MAX_CLIENTS}; control without the bound: +{wide - after} KiB")
    assert after - base <= FLOOD_RSS_BOUND_KIB
    assert wide - after > FLOOD_RSS_BOUND_KIB  # the measurement would have caught an unbounded table


# -- two workers ------------------------------------------------------------------------------------
R, C = 20, 9  # endpoint max_rate and capacity: each of 2 workers holds R/2 = 10/s and ceil(C/2) = 5


@pytest.fixture(scope="module")
def px2(up, tmp_path_factory):
    endpoints = [
        lim("/w", **{RL: {"max_rate": R, "capacity": C}}),
        lim("/wc", **{RL: {"client_max_rate": 1, "every": "1m", "client_capacity": 6, "strategy": "header",
                           "key": "X-C"}}),
    ]
    p = Proxy(config(up, endpoints, listen_ip="127.0.0.1"), tmp_path_factory.mktemp("rl2"), workers=2,
              port=free_port())
    yield p
    p.stop()


def worker_conns(port, per_worker, limit=400):
    """Keep-alive connections grouped by the worker pid that serves them (from /__health)."""
    import json

    by_pid: dict = {}
    extra = []
    for _ in range(limit):
        c = Client(port)
        pid = json.loads(c.request("GET", "/__health").body)["pid"]
        conns = by_pid.setdefault(pid, [])
        if len(conns) < per_worker:
            conns.append(c)
        else:
            extra.append(c)
        if len(by_pid) == 2 and all(len(v) == per_worker for v in by_pid.values()):
            break
    for c in extra:
        c.close()
    assert len(by_pid) == 2 and all(len(v) == per_worker for v in by_pid.values()), \
        f"the kernel did not spread {limit} connections over both workers: {[len(v) for v in by_pid.values()]}"
    return by_pid


def test_two_workers_split_the_endpoint_limit(px2, up):
    by_pid = worker_conns(px2.port, per_worker=6)
    before = hits(up, "/ok/w")
    admitted = {pid: 0 for pid in by_pid}
    other = []
    lock = threading.Lock()
    start = threading.Barrier(sum(len(v) for v in by_pid.values()) + 1)
    duration = 2.0

    def hammer(pid, c):
        start.wait()
        stop = time.monotonic() + duration
        n = 0
        for _ in range(1_000_000):
            if time.monotonic() >= stop:
                break
            s = c.request("GET", "/w").status
            if s == 200:
                n += 1
            elif s != 503:
                other.append(s)
        with lock:
            admitted[pid] += n
        c.close()

    threads = [threading.Thread(target=hammer, args=(pid, c)) for pid, cs in by_pid.items() for c in cs]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(15)
    window = time.monotonic() - t0
    total = sum(admitted.values())
    per_worker_expected = -(-C // 2) + R / 2 * window
    expected = 2 * per_worker_expected
    print(f"2 workers: admitted {admitted} total {total} in {window:.3f}s; "
          f"expected {per_worker_expected:.1f} per worker, {expected:.1f} total (C + R*t = {C + R * window:.1f})")
    assert not other
    assert hits(up, "/ok/w") - before == total
    for pid, n in admitted.items():
        assert abs(n - per_worker_expected) <= max(3, 0.15 * per_worker_expected), (pid, n)
    assert abs(total - expected) <= max(4, 0.12 * expected)
    # not one whole limit per worker (that would be 2*C + 2*R*t)
    assert total < 0.75 * (2 * C + 2 * R * window)


def test_two_workers_keep_per_client_limits_whole(px2):
    by_pid = worker_conns(px2.port, per_worker=1)
    (pa, (a,)), (pb, (b,)) = by_pid.items()
    try:
        # one keep-alive connection lives on one worker, which holds the client's whole bucket
        assert [a.request("GET", "/wc", {"X-C": "solo"}).status for _ in range(8)] == [200] * 6 + [429] * 2
        # documented: a client spreading connections over k workers gets up to k times its limit
        assert [a.request("GET", "/wc", {"X-C": "spread"}).status for _ in range(7)] == [200] * 6 + [429]
        assert [b.request("GET", "/wc", {"X-C": "spread"}).status for _ in range(7)] == [200] * 6 + [429]
    finally:
        a.close()
        b.close()

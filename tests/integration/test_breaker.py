"""Circuit breakers over real sockets (SPEC §3.8, §3.4, §4).

Every test starts its own fastproxy (one worker, so one set of breakers) in front of its own
backends, so breaker state never leaks between tests. `Backend` answers every path the same
way, switchable from the test (`mode`, `delay`) and counts what reaches it (`hits`). Breaker
`timeout` is 1 s where a test waits for half-open; the waits poll the proxy, bounded.
"""

import asyncio
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.netutil import Client, wait_for
from tests.support import Proxy, Upstream, config, ep, free_port, get


class Backend(Upstream):
    """Every request: wait `delay` seconds, then answer `mode` ("ok" → 200, or an int status).

    `abandoned` counts answers dropped because the proxy had closed the connection meanwhile."""

    def __init__(self) -> None:
        self.mode: object = "ok"
        self.delay = 0.0
        self.hits = 0
        self.abandoned = 0  # answers not sent because the proxy had gone
        super().__init__()

    async def answer(self, proto, req):  # type: ignore[override]
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        t = proto.transport
        if t.is_closing():
            self.abandoned += 1
            return
        status = 200 if self.mode == "ok" else int(self.mode)  # type: ignore[call-overload]
        body = b"ok" if status == 200 else b"fail %d" % status
        t.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))


@pytest.fixture
def env(tmp_path):
    """`env.backend()` and `env.proxy(cfg)` start things; all of them stop at the end."""

    class Env:
        def __init__(self) -> None:
            self.backends: list = []
            self.proxies: list = []
            self.n = 0

        def backend(self, cls=Backend):
            b = cls()
            self.backends.append(b)
            return b

        def proxy(self, endpoints, hosts, **fastproxy):
            self.n += 1
            cfg = config(hosts, endpoints, listen_ip="127.0.0.1", timeout="2s",
                         extra_config={"fastproxy": {"access_log": True, **fastproxy}})
            p = Proxy(cfg, tmp_path, name=f"fastproxy{self.n}.json")
            self.proxies.append(p)
            return p

    e = Env()
    yield e
    for p in e.proxies:
        p.stop()
    for b in e.backends:
        try:
            b.stop()
        except RuntimeError:
            pass  # already stopped by the test


def cb(max_errors=0, timeout=60, interval=0, **kw) -> dict:
    return {"qos/circuit-breaker": {"max_errors": max_errors, "timeout": timeout, "interval": interval, **kw}}


def breaker_ep(path, hosts, extra, url="/b", **kw) -> dict:
    return ep(path, url, backend={"host": hosts, "extra_config": extra}, **kw)


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connect refused


def wait_for_probe(port, path, deadline=5.0):
    """Poll `path` until the breaker admits a request (anything but its 503); return that answer.

    Each refused poll answers at once and reaches no backend, so polling cannot disturb the
    count of probes."""
    end = time.monotonic() + deadline
    while True:
        status, headers, body = get(port, path)
        if status != 503 or "retry-after" not in headers:
            return status, headers, body
        assert time.monotonic() < end, "the breaker never went half-open"
        time.sleep(0.02)


def assert_open(port, path, retry_after="1"):
    status, headers, _ = get(port, path)
    assert status == 503, status
    assert headers.get("retry-after") == retry_after, headers


# ------------------------------------------------------------------ one breaker per host

def test_refusing_host_is_skipped_and_clients_never_see_it(env):
    good = env.backend()
    dead = dead_url()
    p = env.proxy([breaker_ep("/two", [dead, good.url], cb(max_errors=2, log_status_change=True))], [good.url])
    errors = [s for s in (get(p.port, "/two")[0] for _ in range(40)) if s != 200]
    # every connect failure is retried once on the healthy host: nothing reaches the client
    assert errors == []
    assert good.hits == 40
    wait_for(lambda: f"for {dead}: closed -> open" in p.stderr())
    # the dead host is now skipped outright: no more "retrying on another host" log lines
    retries = p.stderr().count("retrying on another host")
    assert retries == 3  # max_errors + 1 connect failures, then the breaker opened
    for _ in range(20):
        assert get(p.port, "/two")[0] == 200
    assert p.stderr().count("retrying on another host") == retries


def test_host_answering_500_costs_exactly_max_errors_plus_one_client_errors(env):
    bad, good = env.backend(), env.backend()
    bad.mode = 500
    max_errors = 2
    p = env.proxy([breaker_ep("/two", [bad.url, good.url], cb(max_errors=max_errors))], [good.url])
    statuses = [get(p.port, "/two")[0] for _ in range(60)]
    trip = max(i for i, s in enumerate(statuses) if s != 200)
    before, after = statuses[:trip + 1], statuses[trip + 1:]
    errors_before = sum(1 for s in before if s != 200)
    errors_after = sum(1 for s in after if s != 200)
    print(f"500-host: client errors before trip {errors_before}, after {errors_after} ({len(after)} requests)")
    assert errors_before == max_errors + 1
    assert set(before) == {200, 500}
    assert errors_after == 0 and len(after) > 40
    assert bad.hits == max_errors + 1  # the open host is not even tried
    assert good.hits == 60 - bad.hits


# ------------------------------------------------------------------ thresholds and windows

def test_breaker_trips_on_failure_max_errors_plus_one_and_a_success_resets_the_count(env):
    b = env.backend()
    p = env.proxy([breaker_ep("/m", [b.url], cb(max_errors=2))], [b.url])
    b.mode = 500
    assert [get(p.port, "/m")[0] for _ in range(2)] == [500, 500]
    b.mode = "ok"
    assert get(p.port, "/m")[0] == 200  # consecutive count back to 0
    b.mode = 500
    assert [get(p.port, "/m")[0] for _ in range(3)] == [500, 500, 500]  # the 3rd (max_errors+1) trips
    hits = b.hits
    status, headers, _ = get(p.port, "/m")
    assert status == 503 and headers["retry-after"] == "60"
    b.mode = "ok"
    assert get(p.port, "/m")[0] == 503
    assert b.hits == hits


def test_max_errors_zero_trips_on_the_first_failure(env):
    b = env.backend()
    b.mode = 502
    p = env.proxy([breaker_ep("/z", [b.url], cb(max_errors=0))], [b.url])
    assert get(p.port, "/z")[0] == 502
    assert get(p.port, "/z")[0] == 503
    assert b.hits == 1


def test_interval_clears_the_failure_count_while_closed(env):
    b = env.backend()
    b.mode = 500
    p = env.proxy([breaker_ep("/i", [b.url], cb(max_errors=1, interval=1))], [b.url])
    t0 = time.monotonic()
    assert get(p.port, "/i")[0] == 500
    time.sleep(max(0.0, t0 + 1.3 - time.monotonic()))  # the counting window is 1 s
    assert get(p.port, "/i")[0] == 500  # first failure of a new window
    assert get(p.port, "/i")[0] == 500  # second: trips
    assert get(p.port, "/i")[0] == 503


# ------------------------------------------------------------------ open, half-open, probe

def test_all_hosts_open_gives_503_with_retry_after(env):
    a, b = env.backend(), env.backend()
    a.mode = b.mode = 500
    p = env.proxy([breaker_ep("/all", [a.url, b.url], cb(max_errors=0, timeout=1))], [a.url])
    assert [get(p.port, "/all")[0] for _ in range(2)] == [500, 500]
    assert (a.hits, b.hits) == (1, 1)
    for _ in range(3):
        assert_open(p.port, "/all", "1")
    assert (a.hits, b.hits) == (1, 1)
    log = [line for line in p.stderr().splitlines() if '"status":503' in line]
    assert log and all('"reason":"circuit open"' in line for line in log)


def test_half_open_admits_exactly_one_probe_and_its_success_closes(env):
    b = env.backend()
    b.mode = 500
    p = env.proxy([breaker_ep("/p", [b.url], cb(max_errors=0, timeout=1))], [b.url])
    assert get(p.port, "/p")[0] == 500
    assert_open(p.port, "/p")
    b.mode, b.delay = "ok", 0.5  # the probe will take a while
    result: list = []
    poller = threading.Thread(target=lambda: result.append(wait_for_probe(p.port, "/p")))
    poller.start()
    wait_for(lambda: b.hits == 2, timeout=5)  # the probe reached the backend and is in flight
    with ThreadPoolExecutor(6) as pool:
        others = list(pool.map(lambda _: get(p.port, "/p"), range(6)))
    assert [s for s, _, _ in others] == [503] * 6  # half-open: everyone else is refused
    assert all("retry-after" in h for _, h, _ in others)
    poller.join(5)
    assert result and result[0][0] == 200
    assert b.hits == 2  # exactly one probe
    b.delay = 0
    assert [get(p.port, "/p")[0] for _ in range(5)] == [200] * 5  # closed again
    assert b.hits == 7


def test_failed_probe_reopens_for_a_full_timeout(env):
    b = env.backend()
    b.mode = 503
    p = env.proxy([breaker_ep("/f", [b.url], cb(max_errors=0, timeout=1, log_status_change=True))], [b.url])
    assert get(p.port, "/f")[0] == 503  # the backend's own 503 (no Retry-After)
    assert_open(p.port, "/f")
    status, headers, body = wait_for_probe(p.port, "/f")
    assert (status, body) == (503, b"fail 503")  # the probe got the backend's answer
    assert b.hits == 2
    t_reopen = time.monotonic()
    b.mode = "ok"
    assert_open(p.port, "/f")  # reopened at once...
    assert b.hits == 2
    status, _, _ = wait_for_probe(p.port, "/f")  # ...for a whole timeout again
    assert status == 200 and time.monotonic() - t_reopen >= 0.9
    # the probe's answer reaches the client before its outcome is logged: wait for the line
    changes = ("closed -> open", "open -> half-open", "half-open -> open", "half-open -> closed")
    wait_for(lambda: all(c in p.stderr() for c in changes))


# ------------------------------------------------------------------ what counts as a failure

def test_4xx_is_not_a_failure_by_default_but_5xx_is(env):
    u = env.backend(Upstream)
    p = env.proxy([ep("/s/{n}", "/status/{n}", backend={"extra_config": cb(max_errors=0)})], [u.url])
    for code in (404, 400, 429, 418, 404):
        assert get(p.port, f"/s/{code}")[0] == code
    assert get(p.port, "/s/200")[0] == 200
    assert get(p.port, "/s/500")[0] == 500
    assert get(p.port, "/s/200")[0] == 503


@pytest.mark.parametrize("http_first", [False, True])
def test_valid_status_codes_decide_what_counts(env, http_first):
    u = env.backend(Upstream)
    extra = {"qos/circuit-breaker/http": {"valid_status_codes": [200, 500]}, **cb(max_errors=0)}
    if not http_first:
        extra = dict(reversed(list(extra.items())))
    p = env.proxy([ep("/v/{n}", "/status/{n}", backend={"extra_config": extra})], [u.url])
    for _ in range(3):
        assert get(p.port, "/v/500")[0] == 500  # listed: a success
    assert get(p.port, "/v/200")[0] == 200
    assert get(p.port, "/v/404")[0] == 404  # not listed: a failure
    assert get(p.port, "/v/200")[0] == 503


def test_backend_rate_limit_rejection_is_not_a_host_failure(env):
    b = env.backend()
    extra = {"qos/ratelimit/proxy": {"max_rate": 2, "capacity": 1}, **cb(max_errors=0, name="limited")}
    p = env.proxy([breaker_ep("/rl", [b.url], extra)], [b.url])
    statuses = [get(p.port, "/rl") for _ in range(6)]
    assert statuses[0][0] == 200
    rejected = [s for s in statuses[1:] if s[0] == 503]
    assert len(rejected) >= 4 and all("retry-after" in h for _, h, _ in rejected)
    hits = b.hits
    # the bucket refills in 0.5 s; an open breaker would refuse for 60 s
    end = time.monotonic() + 3
    while (s := get(p.port, "/rl")[0]) != 200:
        assert s == 503 and time.monotonic() < end
        time.sleep(0.05)
    assert b.hits == hits + 1
    log = p.stderr()
    assert "circuit breaker 'limited'" not in log
    assert '"reason":"circuit open"' not in log


FAILING_KINDS = [
    # (name, url pattern, endpoint timeout, status the client gets, backend)
    ("refused", "/echo", "2s", 502, "dead"),
    ("reset", "/reset", "2s", 502, "upstream"),
    ("hang", "/hang", "300ms", 504, "upstream"),
    ("garbage", "/garbage", "2s", 502, "upstream"),
]


@pytest.mark.parametrize("kind,url,timeout,status,which", FAILING_KINDS, ids=[k[0] for k in FAILING_KINDS])
def test_failure_kinds_count(env, kind, url, timeout, status, which):
    u = env.backend(Upstream)
    host = dead_url() if which == "dead" else u.url
    p = env.proxy([ep("/k", url, timeout=timeout, backend={"host": [host], "extra_config": cb(max_errors=0)})],
                  [u.url])
    assert get(p.port, "/k")[0] == status
    assert len(u.requests) <= 2  # /reset of a reused connection may be retried once fresh
    seen = len(u.requests)
    assert_open(p.port, "/k", "60")
    assert len(u.requests) == seen
    assert f"circuit breaker 'GET /k' for {host}: closed -> open" in p.stderr()


def test_reset_on_a_fresh_connection_is_counted(env):
    u = env.backend(Upstream)
    p = env.proxy([ep("/ok", "/", backend={"extra_config": cb(max_errors=1)}),
                   ep("/k", "/reset", backend={"extra_config": cb(max_errors=1)})], [u.url])
    assert get(p.port, "/k")[0] == 502
    assert get(p.port, "/k")[0] == 502
    assert get(p.port, "/k")[0] == 503
    assert get(p.port, "/ok")[0] == 200  # another route's breaker on the same host is untouched


def rst_close(c: Client) -> None:
    """Hang up hard (RST): a plain close is a half-close the proxy still answers (SPEC §4)."""
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()


def test_client_hanging_up_before_the_answer_counts_as_neither(env):
    b = env.backend()
    b.mode = 500
    p = env.proxy([breaker_ep("/c", [b.url], cb(max_errors=1))], [b.url])
    assert get(p.port, "/c")[0] == 500  # one failure counted
    # the abandoned requests would succeed: counted as a success they would reset the count,
    # counted as a failure they would trip the breaker
    b.mode, b.delay = "ok", 0.3
    for i in range(3):
        c = Client(p.port)
        c.send(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_for(lambda: b.hits == 2 + i)
        rst_close(c)
    wait_for(lambda: b.abandoned == 3)  # the proxy dropped the backend side of each
    b.mode, b.delay = 500, 0
    assert get(p.port, "/c")[0] == 500  # second consecutive failure: trips (max_errors 1)
    assert_open(p.port, "/c", "60")


def test_client_hanging_up_mid_body_counts_as_neither(env):
    u = env.backend(Upstream)
    p = env.proxy([ep("/drip/{n}/{ms}", backend={"extra_config": cb(max_errors=0)})], [u.url])
    for _ in range(3):
        c = Client(p.port)
        c.send(b"GET /drip/40/30 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.sock.recv(10)  # the streamed answer has started
        rst_close(c)
    r = get(p.port, "/drip/2/1")
    assert r[0] == 200 and len(r[2]) == 2048
    assert "closed -> open" not in p.stderr()


def _unanswering_listener():
    """A host whose connects hang: a listener that never accepts, its accept queue full."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fill = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(ls.getsockname())
        except BlockingIOError:
            pass
        fill.append(s)
    return ls, fill


def test_client_hanging_up_while_the_probe_connects_frees_the_probe(env):
    ls, fill = _unanswering_listener()
    try:
        host = f"http://127.0.0.1:{ls.getsockname()[1]}"
        p = env.proxy([breaker_ep("/pc", [host], cb(max_errors=0, timeout=1))], [host], connect_timeout="500ms")
        assert get(p.port, "/pc")[0] == 504  # connect timeout: counted, open
        assert_open(p.port, "/pc")
        end = time.monotonic() + 5
        while True:  # poll until a request is admitted (no instant 503): the probe, connecting
            c = Client(p.port, timeout=0.15)
            c.send(b"GET /pc HTTP/1.1\r\nHost: t\r\n\r\n")
            try:
                assert c.response().status == 503
                c.close()
            except socket.timeout:
                rst_close(c)
                break
            assert time.monotonic() < end
            time.sleep(0.02)
        # the cancelled probe tells nothing: the next caller must get to probe (a 504 after the
        # connect timeout), not a 503 from a breaker stuck half-open
        end = time.monotonic() + 2.5  # a freed slot is taken within ~0.6 s
        while (r := get(p.port, "/pc"))[0] == 503:
            if time.monotonic() > end:
                raise AssertionError("breaker stuck half-open after a cancelled probe")
            time.sleep(0.1)
        assert r[0] == 504
    finally:
        for s in fill + [ls]:
            s.close()


# ------------------------------------------------------------------ logging and legacy form

def test_log_status_change_names_the_breaker_and_the_host(env):
    b = env.backend()
    b.mode = 500
    p = env.proxy([breaker_ep("/log", [b.url], cb(max_errors=0, timeout=1, name="payments",
                                                     log_status_change=True))], [b.url])
    assert get(p.port, "/log")[0] == 500
    wait_for(lambda: f"circuit breaker 'payments' for {b.url}: closed -> open" in p.stderr())
    b.mode = "ok"
    assert wait_for_probe(p.port, "/log")[0] == 200
    wait_for(lambda: f"'payments' for {b.url}: open -> half-open" in p.stderr())
    wait_for(lambda: f"'payments' for {b.url}: half-open -> closed" in p.stderr())


def test_without_log_status_change_only_the_opening_is_logged(env):
    b = env.backend()
    b.mode = 500
    p = env.proxy([breaker_ep("/quiet", [b.url], cb(max_errors=0, timeout=1, name="quiet"))], [b.url])
    assert get(p.port, "/quiet")[0] == 500
    wait_for(lambda: "'quiet'" in p.stderr() and "closed -> open" in p.stderr())
    b.mode = "ok"
    assert wait_for_probe(p.port, "/quiet")[0] == 200
    assert get(p.port, "/quiet")[0] == 200
    assert "half-open" not in p.stderr()


def test_legacy_gobreaker_namespace_with_camel_case_fields(env):
    b = env.backend()
    b.mode = 500
    legacy = {"github.com/devopsfaith/krakend-circuitbreaker/gobreaker": {
        "interval": 60, "timeout": 1, "maxErrors": 1, "name": "legacy-cb", "logStatusChange": True}}
    p = env.proxy([breaker_ep("/legacy", [b.url], legacy)], [b.url])
    assert [get(p.port, "/legacy")[0] for _ in range(2)] == [500, 500]  # trips on failure 2
    assert_open(p.port, "/legacy", "1")
    assert b.hits == 2
    wait_for(lambda: f"circuit breaker 'legacy-cb' for {b.url}: closed -> open" in p.stderr())
    b.mode = "ok"
    assert wait_for_probe(p.port, "/legacy")[0] == 200
    wait_for(lambda: "'legacy-cb'" in p.stderr() and "half-open -> closed" in p.stderr())


# ------------------------------------------------------------------ a host dies under load

def _load(port, n, clients, on_request):
    """`n` GETs spread round robin over `clients` keep-alive connections; returns the failures."""
    conns = [Client(port) for _ in range(clients)]
    failures = []
    try:
        for i in range(n):
            on_request(i)
            c = conns[i % clients]
            try:
                r = c.request("GET", f"/load?i={i}")
                ok = r.status == 200
                if not ok:
                    failures.append((i, r.status))
                if r.header("connection") == "close":
                    c.close()
                    conns[i % clients] = Client(port)
            except (OSError, EOFError, ValueError) as exc:
                failures.append((i, repr(exc)))
                c.close()
                conns[i % clients] = Client(port)
    finally:
        for c in conns:
            c.close()
    return failures


@pytest.mark.parametrize("max_errors", [3])
def test_one_of_two_hosts_killed_while_load_runs(env, max_errors):
    a, b = env.backend(Upstream), env.backend(Upstream)
    extra = cb(max_errors=max_errors, name="load", log_status_change=True)
    p = env.proxy([ep("/load", "/", timeout="500ms", backend={"host": [a.url, b.url], "extra_config": extra})],
                  [a.url])
    total = 600

    def on_request(i):
        if i == total // 3:
            b.stop()

    failures = _load(p.port, total, 4, on_request)
    print(f"\none host killed under load: {len(failures)} client-visible errors of {total} "
          f"(bound max_errors+1 = {max_errors + 1}): {failures}")
    assert len(failures) <= max_errors + 1
    assert f"circuit breaker 'load' for {b.url}: closed -> open" in p.stderr()
    # after the trip every request goes to the surviving host
    served_a = len(a.requests)
    assert served_a >= total - total // 3 - max_errors - 1


class Killable(Upstream):
    """`kill()` is what the kernel does to a dead process: listener gone, every connection reset."""

    def __init__(self) -> None:
        self.transports: list = []
        super().__init__()

    async def answer(self, proto, req):  # type: ignore[override]
        if proto.transport not in self.transports:
            self.transports.append(proto.transport)
        await super().answer(proto, req)

    def kill(self) -> None:
        def _kill() -> None:
            self.server.close()
            for t in self.transports:
                sock = t.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                t.abort()

        done = threading.Event()
        self.loop.call_soon_threadsafe(lambda: (_kill(), done.set()))
        done.wait(5)


def test_one_of_two_hosts_reset_while_load_runs(env):
    max_errors = 3
    a, b = env.backend(Upstream), env.backend(Killable)
    extra = cb(max_errors=max_errors, name="killed")
    p = env.proxy([ep("/load", "/", timeout="500ms", backend={"host": [a.url, b.url], "extra_config": extra})],
                  [a.url])
    total = 600

    def on_request(i):
        if i == total // 3:
            b.kill()

    failures = _load(p.port, total, 4, on_request)
    print(f"\none host reset under load: {len(failures)} client-visible errors of {total}: {failures}")
    assert len(failures) <= max_errors + 1
    wait_for(lambda: re.search(rf"'killed' for {re.escape(b.url)}: closed -> open", p.stderr()))

"""Admin listener: /__health and /metrics over real sockets, one worker and two."""

import time

from tests.integration.netutil import Client
from tests.support import Proxy, config, ep, free_port, get


def _metrics(port: int) -> str:
    status, _, body = get(port, "/metrics")
    assert status == 200
    return body.decode()


def _value(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix + " ") or line == line_prefix:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_prefix} not in metrics:\n{text}")


def test_metrics_count_requests_rejections_latency_and_breakers(upstream, tmp_path):
    admin = free_port()
    cfg = config(upstream, [
        ep("/ok", "/ok", backend={"extra_config": {"qos/circuit-breaker": {"interval": 60, "timeout": 10, "max_errors": 3}}}),
        ep("/limited", "/ok", extra_config={"qos/ratelimit/router": {"max_rate": 1, "capacity": 1}}),
    ], extra_config={"fastproxy": {"admin": {"port": admin}}})
    px = Proxy(cfg, tmp_path)
    try:
        for _ in range(3):
            assert get(px.port, "/ok")[0] == 200
        assert [get(px.port, "/limited")[0] for _ in range(2)] == [200, 503]
        assert get(px.port, "/nope")[0] == 404
        text = _metrics(admin)
        assert _value(text, 'fastproxy_requests_total{route="/ok",status="200"}') == 3
        assert _value(text, 'fastproxy_requests_total{route="/limited",status="503"}') == 1
        assert _value(text, 'fastproxy_requests_total{route="",status="404"}') == 1
        assert _value(text, 'fastproxy_rejections_total{route="/limited",reason="endpoint rate limit"}') == 1
        assert _value(text, 'fastproxy_policy_passes_total{route="/limited"}') == 1
        assert "# TYPE fastproxy_upstream_latency_seconds histogram" in text
        assert _value(text, 'fastproxy_upstream_latency_seconds_count{route="/ok"}') == 3
        assert _value(text, 'fastproxy_upstream_latency_seconds_bucket{route="/ok",le="+Inf"}') == 3
        assert _value(text, f'fastproxy_breaker_state{{breaker="GET /ok",host="{upstream.url}"}}') == 0
        assert _value(text, "fastproxy_connections_open") >= 0
        status, headers, body = get(admin, "/__health")
        assert status == 200 and b'"ok"' in body
    finally:
        px.stop()


def test_metrics_sum_the_workers(upstream, tmp_path):
    admin = free_port()
    cfg = config(upstream, [ep("/ok", "/ok")], extra_config={"fastproxy": {"admin": {"port": admin}}})
    px = Proxy(cfg, tmp_path, workers=2, port=free_port())
    try:
        pids = set()
        for _ in range(40):  # fresh connections: the kernel spreads them over both workers
            status, _, body = get(px.port, "/__health")
            pids.add(body)
            assert get(px.port, "/ok")[0] == 200
        assert len(pids) == 2, "both workers should have served"
        deadline = time.monotonic() + 5
        total = 0.0
        while time.monotonic() < deadline:  # workers publish once a second
            total = _value(_metrics(admin), 'fastproxy_requests_total{route="/ok",status="200"}')
            if total == 40:
                break
            time.sleep(0.2)
        assert total == 40
    finally:
        px.stop()


def test_metrics_count_backend_failures_and_open_breakers(upstream, tmp_path):
    admin = free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = config([dead], [
        ep("/dead", "/ok", backend={"extra_config": {"qos/circuit-breaker": {"interval": 60, "timeout": 30, "max_errors": 0}}}),
    ], extra_config={"fastproxy": {"admin": {"port": admin}}})
    px = Proxy(cfg, tmp_path)
    try:
        assert [get(px.port, "/dead")[0] for _ in range(2)] == [502, 503]
        text = _metrics(admin)
        host = dead
        assert _value(text, f'fastproxy_upstream_errors_total{{host="{host}",kind="connect"}}') == 1
        assert _value(text, 'fastproxy_rejections_total{route="/dead",reason="circuit open"}') == 1
        assert _value(text, f'fastproxy_breaker_state{{breaker="GET /dead",host="{host}"}}') == 2
        assert _value(text, f'fastproxy_breaker_transitions_total{{breaker="GET /dead",host="{host}",state="open"}}') == 1
    finally:
        px.stop()


def test_latency_histogram_is_ascending_and_measured_below_the_millisecond(upstream, tmp_path):
    admin = free_port()
    cfg = config(upstream, [ep("/ok", "/ok")], extra_config={"fastproxy": {"admin": {"port": admin}}})
    px = Proxy(cfg, tmp_path)
    try:
        with Client(px.port) as c:
            for _ in range(20):
                assert c.request("GET", "/ok").status == 200
        text = _metrics(admin)
        prefix = 'fastproxy_upstream_latency_seconds_bucket{route="/ok",le="'
        rows = [line for line in text.splitlines() if line.startswith(prefix)]
        labels = [line[len(prefix):].split('"')[0] for line in rows]
        assert labels[-1] == "+Inf", labels
        bounds = [float(le) for le in labels[:-1]]
        assert bounds == sorted(bounds), labels
        assert bounds[:3] == [0.0001, 0.00025, 0.0005]
        counts = [float(line.rsplit(" ", 1)[1]) for line in rows]
        assert counts == sorted(counts) and counts[-1] == 20
        total = _value(text, 'fastproxy_upstream_latency_seconds_sum{route="/ok"}')
        # timed on a whole-millisecond clock, 20 samples would sum to a multiple of 0.001
        assert 0 < total < 20 * 2.0
        assert abs(total * 1000 - round(total * 1000)) > 1e-6, total
    finally:
        px.stop()

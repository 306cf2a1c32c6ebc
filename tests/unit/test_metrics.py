"""The Prometheus text exposition (fastproxy.metrics): histogram buckets in the order the format
requires, sub-millisecond resolution, and workers' snapshots summed."""

from fastproxy.metrics import LATENCY_BUCKETS, Metrics, render


def _buckets(text: str, route: str) -> list:
    prefix = f'fastproxy_upstream_latency_seconds_bucket{{route="{route}",le="'
    return [(line[len(prefix):].split('"')[0], float(line.rsplit(" ", 1)[1]))
            for line in text.splitlines() if line.startswith(prefix)]


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} not in:\n{text}")


def test_histogram_buckets_are_ascending_with_inf_last_and_cumulative():
    m = Metrics()
    for seconds in (0.00009, 0.0003, 0.0003, 0.004, 0.2, 30.0):
        m.upstream("/a", seconds)
    text = render([m.snapshot()]).decode()
    buckets = _buckets(text, "/a")
    labels = [le for le, _ in buckets]
    assert labels[-1] == "+Inf"
    bounds = [float(le) for le in labels[:-1]]
    assert bounds == sorted(bounds) == list(LATENCY_BUCKETS)
    counts = dict(buckets)
    assert counts["0.0001"] == 1
    assert counts["0.00025"] == 1
    assert counts["0.0005"] == 3
    assert counts["0.005"] == 4
    assert counts["0.25"] == 5
    assert counts["10.0"] == 5
    assert counts["+Inf"] == 6
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
    assert _value(text, 'fastproxy_upstream_latency_seconds_count{route="/a"}') == 6


def test_latency_buckets_start_below_a_millisecond():
    assert LATENCY_BUCKETS[:3] == (0.0001, 0.00025, 0.0005)
    assert list(LATENCY_BUCKETS) == sorted(LATENCY_BUCKETS)


def test_latency_sum_keeps_sub_millisecond_precision():
    m = Metrics()
    m.upstream("/a", 0.0001234)
    m.upstream("/a", 0.0000567)
    text = render([m.snapshot()]).decode()
    assert abs(_value(text, 'fastproxy_upstream_latency_seconds_sum{route="/a"}') - 0.0001801) < 1e-12


def test_buckets_of_several_routes_and_workers_are_summed_and_stay_in_order():
    a, b = Metrics(), Metrics()
    a.upstream("/x", 0.0002)
    b.upstream("/x", 0.002)
    b.upstream("/y", 1.5)
    text = render([a.snapshot(), b.snapshot()]).decode()
    for route, total in (("/x", 2), ("/y", 1)):
        buckets = _buckets(text, route)
        assert [le for le, _ in buckets] == [str(v) for v in LATENCY_BUCKETS] + ["+Inf"]
        assert buckets[-1][1] == total
    assert dict(_buckets(text, "/x"))["0.00025"] == 1
    lines = [line for line in text.splitlines() if line.startswith("fastproxy_upstream_latency_seconds_bucket")]
    # one route's buckets together, routes in order
    assert [line.split('route="')[1].split('"')[0] for line in lines] == ["/x"] * 17 + ["/y"] * 17

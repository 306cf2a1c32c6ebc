"""Per-worker counters and their Prometheus text exposition.

Counters are plain dicts keyed by label tuples, bumped on the request path (one dict update per
request) and rendered only when `/metrics` is scraped. With several workers the admin listener
sums the workers' snapshots.
"""

from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastproxy.server.exchange import Exchange

# Upper bounds in seconds. A backend on loopback answers in about 100 µs, so the scale starts
# at 0.1 ms; Prometheus' default buckets (from 5 ms) would put every such answer in the first one.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
LATENCY_LABELS = tuple(str(b) for b in LATENCY_BUCKETS) + ("+Inf",)

# One series of a snapshot: (label names, label values, value). A snapshot read back from another
# worker's JSON file has lists where these are tuples; `render` makes them tuples again.
LabelValues = tuple[str | int, ...]
Series = tuple[tuple[str, ...], LabelValues, float]
Snapshot = dict[str, list[Series]]


class Metrics:
    __slots__ = ("requests", "rejections", "upstream_errors", "breaker_transitions", "redis_switches",
                 "connections_open", "connections_total", "evicted", "gauges", "upstream_latency", "passed",
                 "tunnels_open", "tunnels_total", "tunnel_up", "tunnel_down")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}  # (route, status)
        self.rejections: dict[tuple[str, str], int] = {}  # (route, reason)
        self.upstream_errors: dict[tuple[str, str], int] = {}  # (host, kind)
        self.breaker_transitions: dict[tuple[str, str, str], int] = {}  # (breaker, host, state)
        self.redis_switches: dict[tuple[str, str], int] = {}  # (limit, to)
        self.connections_open = 0
        self.connections_total = 0
        self.evicted = 0  # connections closed at the cap to admit a new one
        self.gauges: dict[str, Callable[[], list[Series]]] = {}  # name -> its series, read at scrape
        self.upstream_latency: dict[str, list[float]] = {}  # route -> [bucket counts (+Inf last)..., sum]
        self.passed: dict[str, int] = {}  # route -> requests that passed every policy of the route
        self.tunnels_open = 0  # upgrade tunnels (server.tunnel)
        self.tunnels_total = 0
        self.tunnel_up = 0  # bytes through tunnels, client to backend
        self.tunnel_down = 0  # and backend to client

    def request(self, x: "Exchange") -> None:
        route = x.route.name if x.route is not None else ""
        key = (route, x.status)
        r = self.requests
        r[key] = r.get(key, 0) + 1

    def upstream(self, route: str, seconds: float) -> None:
        """Time from the request going to the backend connection to the backend's response head."""
        h = self.upstream_latency.get(route)
        if h is None:
            h = self.upstream_latency[route] = [0] * (len(LATENCY_BUCKETS) + 2)
        h[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        h[-1] += seconds

    def policy_passed(self, route: str) -> None:
        p = self.passed
        p[route] = p.get(route, 0) + 1

    def rejected(self, route: str, reason: str) -> None:
        key = (route, reason)
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def upstream_error(self, target: str, kind: str) -> None:
        key = (target, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def tunnel_opened(self) -> None:
        self.tunnels_open += 1
        self.tunnels_total += 1

    def tunnel_closed(self) -> None:
        self.tunnels_open -= 1

    def breaker_transition(self, name: str, target: str, new: str) -> None:
        key = (name, target, new)
        self.breaker_transitions[key] = self.breaker_transitions.get(key, 0) + 1

    def snapshot(self) -> Snapshot:
        """Plain data (for summing across workers)."""
        out: Snapshot = {
            "fastproxy_requests_total": [(("route", "status"), k, v) for k, v in self.requests.items()],
            "fastproxy_rejections_total": [(("route", "reason"), k, v) for k, v in self.rejections.items()],
            "fastproxy_upstream_errors_total": [(("host", "kind"), k, v) for k, v in self.upstream_errors.items()],
            "fastproxy_breaker_transitions_total": [(("breaker", "host", "state"), k, v)
                                                    for k, v in self.breaker_transitions.items()],
            "fastproxy_redis_switches_total": [(("limit", "to"), k, v) for k, v in self.redis_switches.items()],
            "fastproxy_connections_open": [((), (), self.connections_open)],
            "fastproxy_connections_total": [((), (), self.connections_total)],
            "fastproxy_connections_evicted_total": [((), (), self.evicted)],
            "fastproxy_tunnels_open": [((), (), self.tunnels_open)],
            "fastproxy_tunnels_total": [((), (), self.tunnels_total)],
            "fastproxy_tunnel_bytes_total": [(("direction",), ("up",), self.tunnel_up),
                                             (("direction",), ("down",), self.tunnel_down)],
        }
        out["fastproxy_policy_passes_total"] = [(("route",), (k,), v) for k, v in self.passed.items()]
        rows: list[Series] = []
        for route, h in self.upstream_latency.items():
            cum: float = 0
            for le, n in zip(LATENCY_LABELS, h[:-1], strict=True):
                cum += n
                rows.append((("route", "le"), (route, le), cum))
        out["fastproxy_upstream_latency_seconds_bucket"] = rows
        out["fastproxy_upstream_latency_seconds_sum"] = [(("route",), (r,), h[-1])
                                                         for r, h in self.upstream_latency.items()]
        out["fastproxy_upstream_latency_seconds_count"] = [(("route",), (r,), sum(h[:-1]))
                                                           for r, h in self.upstream_latency.items()]
        for name, fn in self.gauges.items():
            out[name] = fn()
        return out


HELP = {
    "fastproxy_requests_total": ("counter", "Requests answered, by route and status."),
    "fastproxy_rejections_total": ("counter", "Requests refused by a policy (limit, filter, breaker), by reason."),
    "fastproxy_upstream_errors_total": ("counter", "Backend failures by host and kind."),
    "fastproxy_breaker_transitions_total": ("counter", "Circuit-breaker state changes."),
    "fastproxy_breaker_state": ("gauge", "Circuit-breaker state: 0 closed, 1 half-open, 2 open."),
    "fastproxy_redis_switches_total": ("counter", "Switches of a Redis limit between Redis and its local fallback."),
    "fastproxy_connections_open": ("gauge", "Open client connections."),
    "fastproxy_policy_passes_total": ("counter", "Requests that passed every policy (limits, filters) of a route."),
    "fastproxy_upstream_latency_seconds": ("histogram", "Backend time to response head, by route."),
    "fastproxy_connections_total": ("counter", "Client connections accepted."),
    "fastproxy_connections_evicted_total": ("counter", "Connections without a request in flight closed at "
                                            "max_connections to admit a new one."),
    "fastproxy_tunnels_open": ("gauge", "Open upgrade (WebSocket) tunnels."),
    "fastproxy_tunnels_total": ("counter", "Upgrade (WebSocket) tunnels opened."),
    "fastproxy_tunnel_bytes_total": ("counter", "Bytes through upgrade tunnels: up is client to backend, down "
                                     "backend to client."),
}


SUMMED_GAUGES = frozenset(("fastproxy_connections_open", "fastproxy_tunnels_open"))  # per worker: summed


def _esc(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _series_order(item: tuple[tuple[tuple[str, ...], LabelValues], float]) -> tuple[tuple[int, float | str], ...]:
    """Series sorted by their label values, except a histogram's `le`, which sorts by its number
    (so buckets come out ascending with `+Inf` last, as the text format requires)."""
    (labels, values), _ = item
    key: list[tuple[int, float | str]] = []
    for label, value in zip(labels, values, strict=True):
        if label == "le":
            key.append((1, float(value)))  # float("+Inf") is infinity
        else:
            key.append((0, str(value)))
    return tuple(key)


def render(snapshots: list[Snapshot]) -> bytes:
    """Sum several workers' snapshots and write Prometheus text format 0.0.4."""
    merged: dict[str, dict[tuple[tuple[str, ...], LabelValues], float]] = {}
    for snap in snapshots:
        for name, rows in snap.items():
            m = merged.setdefault(name, {})
            for labels, values, v in rows:
                key = (tuple(labels), tuple(values))
                if HELP.get(name, ("counter",))[0] == "gauge" and name not in SUMMED_GAUGES:
                    m[key] = v
                else:
                    m[key] = m.get(key, 0) + v
    lines = []
    done_families: set[str] = set()
    for name in sorted(merged):
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and HELP.get(name[: -len(suffix)], ("",))[0] == "histogram":
                family = name[: -len(suffix)]
        if family not in done_families:
            done_families.add(family)
            kind, text = HELP.get(family, ("gauge", family))
            lines.append(f"# HELP {family} {text}")
            lines.append(f"# TYPE {family} {kind}")
        for (labels, values), v in sorted(merged[name].items(), key=_series_order):
            if labels:
                lab = ",".join(f'{k}="{_esc(val)}"' for k, val in zip(labels, values, strict=True))
                lines.append(f"{name}{{{lab}}} {v}")
            else:
                lines.append(f"{name} {v}")
    return ("\n".join(lines) + "\n").encode()

"""Per-worker counters and their Prometheus text exposition.

Counters are plain dicts keyed by label tuples, bumped on the request path (one dict update per
request) and rendered only when `/metrics` is scraped. With several workers the admin listener
sums the workers' snapshots.
"""

from typing import Any


class Metrics:
    __slots__ = ("requests", "rejections", "upstream_errors", "breaker_transitions", "redis_switches",
                 "connections_open", "connections_total", "gauges", "upstream_latency")

    def __init__(self) -> None:
        self.requests: dict = {}
        self.rejections: dict = {}
        self.upstream_errors: dict = {}
        self.breaker_transitions: dict = {}
        self.redis_switches: dict = {}
        self.connections_open = 0
        self.connections_total = 0
        self.gauges: dict = {}  # name -> callable returning [(labels, value)]
        self.upstream_latency: dict = {}  # route -> [count, sum]

    def request(self, x: Any) -> None:
        route = x.route.name if x.route is not None else ""
        key = (route, x.status)
        r = self.requests
        r[key] = r.get(key, 0) + 1

    def rejected(self, route: str, reason: str) -> None:
        key = (route, reason)
        self.rejections[key] = self.rejections.get(key, 0) + 1

    def upstream_error(self, target: str, kind: str) -> None:
        key = (target, kind)
        self.upstream_errors[key] = self.upstream_errors.get(key, 0) + 1

    def breaker_transition(self, name: str, target: str, new: str) -> None:
        key = (name, target, new)
        self.breaker_transitions[key] = self.breaker_transitions.get(key, 0) + 1

    def snapshot(self) -> dict:
        """Plain data (for summing across workers)."""
        out = {
            "fastproxy_requests_total": [(("route", "status"), k, v) for k, v in self.requests.items()],
            "fastproxy_rejections_total": [(("route", "reason"), k, v) for k, v in self.rejections.items()],
            "fastproxy_upstream_errors_total": [(("host", "kind"), k, v) for k, v in self.upstream_errors.items()],
            "fastproxy_breaker_transitions_total": [(("breaker", "host", "state"), k, v)
                                                    for k, v in self.breaker_transitions.items()],
            "fastproxy_redis_switches_total": [(("limit", "to"), k, v) for k, v in self.redis_switches.items()],
            "fastproxy_connections_open": [((), (), self.connections_open)],
            "fastproxy_connections_total": [((), (), self.connections_total)],
        }
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
    "fastproxy_connections_total": ("counter", "Client connections accepted."),
}


def _esc(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(snapshots: list) -> bytes:
    """Sum several workers' snapshots and write Prometheus text format 0.0.4."""
    merged: dict = {}
    for snap in snapshots:
        for name, rows in snap.items():
            m = merged.setdefault(name, {})
            for labels, values, v in rows:
                key = (tuple(labels), tuple(values))
                if HELP.get(name, ("counter",))[0] == "gauge" and name != "fastproxy_connections_open":
                    m[key] = v
                else:
                    m[key] = m.get(key, 0) + v
    lines = []
    for name in sorted(merged):
        kind, text = HELP.get(name, ("gauge", name))
        lines.append(f"# HELP {name} {text}")
        lines.append(f"# TYPE {name} {kind}")
        for (labels, values), v in sorted(merged[name].items(), key=lambda kv: str(kv[0])):
            if labels:
                lab = ",".join(f'{k}="{_esc(val)}"' for k, val in zip(labels, values))
                lines.append(f"{name}{{{lab}}} {v}")
            else:
                lines.append(f"{name} {v}")
    return ("\n".join(lines) + "\n").encode()

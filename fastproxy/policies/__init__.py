"""Request policies: what every policy object shares, and the order they run in.

A policy object has an `order` (SPEC §3's evaluation order) and `check(x, now)`, which passes
(returns None), refuses (raises Rejection) or must wait (returns a future; the server then calls
its `complete(x, result, now)`). Which namespace compiles into which policies is the explicit
table of `registry.py`; a route whose namespaces are absent gets an empty chain and runs no
policy code at all.
"""

from typing import Any

# SPEC §3: IP filter → geofence → bot detector (service, then endpoint) → service rate limit →
# tiered limit → endpoint client limit → endpoint limit → backend rate limit → circuit breaker.
ORDER_IP_FILTER = 10
ORDER_GEOFENCE = 20
ORDER_BOT_SERVICE = 30
ORDER_BOT_ENDPOINT = 31
ORDER_SERVICE_LIMIT = 40
ORDER_TIERED = 50
ORDER_CLIENT_LIMIT = 60
ORDER_ENDPOINT_LIMIT = 70
ORDER_BACKEND_LIMIT = 80


class Rejection(Exception):
    """A policy's refusal: the status and headers the client gets, and why (for logs, metrics)."""

    __slots__ = ("status", "headers", "reason")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # tuple of (name bytes, value bytes)


class CompileContext:
    """What every handler of one compile sees: where problems go, the decoded root, router and
    fastproxy settings (handlers read settings from here, never from the raw dict)."""

    def __init__(self, problems: Any, raw_root: dict[str, Any], root: Any, router: Any, settings: Any,
                 redis_timeout: float) -> None:
        self.problems = problems
        self.raw_root = raw_root
        self.root = root
        self.router = router
        self.settings = settings
        self.redis_timeout = redis_timeout  # seconds, validated once by compile
        self.state: dict[str, Any] = {}  # stable id -> stateful object (buckets, breakers), carried on reload
        self.client_ip: Any = None
        self.current_path = ""  # the namespace being compiled, for errors found across handlers
        self.shared: dict[str, Any] = {}  # objects several handlers share in one compile (GeoIP readers, Redis pools)
        self.ignore: frozenset[str] = frozenset()  # the fastproxy setting ignore_unsupported


def order(checks: list[Any]) -> tuple[Any, ...]:
    return tuple(sorted(checks, key=lambda c: c.order))


def carry_state(previous: Any, snap: Any) -> None:
    """Give the new snapshot the live state objects of limits whose configuration is unchanged."""
    for key, obj in previous.state.items():
        new = snap.state.get(key)
        if new is not None and hasattr(new, "adopt"):
            new.adopt(obj)
    for obj in previous.state.values():  # what nobody adopted and holds I/O is closed
        if hasattr(obj, "retire_unless_adopted"):
            obj.retire_unless_adopted(snap.state.values())

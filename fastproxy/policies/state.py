"""The runtime state of one worker: what its requests change, kept apart from the snapshot.

Owns: the live objects one worker process runs for a compiled snapshot — token buckets and
bucket tables of the limits, circuit breakers, Redis stores, the IP filter's verdict cache, and
each route's round-robin position — built by the worker from the (frozen, shared) snapshot.

Rules it keeps:
- The snapshot never changes after compile; everything a request changes lives here, per worker
  (no locks, no sharing between processes).
- The request path reaches its route's live objects with one lookup:
  `state.routes[route.index]`, a `RouteState` (checks, backend checks, breakers, round robin).
- A piece of state that outlives a reload is an *entry*, keyed by the fingerprint of the policy
  that owns it: its stable id (endpoint, method, level) and the settings that shape its state,
  not those that only shape its answers (a status code). A reload builds a new State from the
  previous one, which hands over every entry whose fingerprint is unchanged: an unchanged limit
  keeps its spent tokens, an unchanged breaker its state, an unchanged Redis pool its
  connections. Entries the new State did not take and that hold I/O are closed (`retire`).
- A compiled policy shared by several routes (a service limit) is bound once: its routes share
  one live object.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar, cast

from fastproxy.policies import Check, Policy
from fastproxy.upstream.breakers import BreakerSet

if TYPE_CHECKING:
    from fastproxy.config.compile import Snapshot
    from fastproxy.metrics import Series

T = TypeVar("T")


class Binder:
    """What a policy's `bind` sees while one State is built: the clock, the worker count (limits
    split over workers), the metrics, and the entries of the previous State."""

    __slots__ = ("now", "workers", "metrics", "entries", "closers", "_previous", "_live")

    def __init__(self, now: float, workers: int, metrics: Any, previous: Optional["State"]) -> None:
        self.now = now
        self.workers = workers
        self.metrics = metrics  # fastproxy.metrics.Metrics, or None (tests)
        self.entries: dict[bytes, object] = {}
        self.closers: dict[bytes, Callable[[], None]] = {}
        self._previous: dict[bytes, object] = previous.entries if previous is not None else {}
        self._live: dict[int, tuple[Policy, Check]] = {}

    def entry(self, fingerprint: bytes, make: Callable[[], T], close: Optional[Callable[[T], None]] = None) -> T:
        """The state of the policy with this fingerprint: the previous State's, else `make()`.
        `close` releases its I/O when a later State no longer takes it."""
        obj = self.entries.get(fingerprint)
        if obj is None:
            obj = self._previous.get(fingerprint)
            if obj is None:
                obj = make()
            self.entries[fingerprint] = obj
            if close is not None:
                done = cast(T, obj)
                self.closers[fingerprint] = lambda: close(done)
        return cast(T, obj)

    def bind(self, policy: Policy) -> Check:
        """The live check of `policy`, once per compiled object."""
        found = self._live.get(id(policy))
        if found is not None:
            return found[1]
        live = policy.bind(self)
        self._live[id(policy)] = (policy, live)  # the policy is held: its id stays unique
        return live

    def chain(self, policies: tuple[Policy, ...]) -> tuple[Check, ...]:
        return tuple(self.bind(p) for p in policies)


class RouteState:
    """The live objects of one route in one worker."""

    __slots__ = ("checks", "backend_checks", "breakers", "rr")

    def __init__(self, checks: tuple[Check, ...], backend_checks: tuple[Check, ...],
                 breakers: Optional[BreakerSet]) -> None:
        self.checks = checks  # SPEC §3 order, service and endpoint policies
        self.backend_checks = backend_checks
        self.breakers = breakers  # qos/circuit-breaker: one breaker per host, or None
        self.rr = 0  # round-robin position over the route's targets


class State:
    """One worker's runtime state for one snapshot; `previous` hands over unchanged entries."""

    __slots__ = ("routes", "entries", "closers", "breaker_sets")

    def __init__(self, snap: "Snapshot", now: float, metrics: Any = None, previous: Optional["State"] = None) -> None:
        b = Binder(now, snap.workers, metrics, previous)
        routes = []
        breaker_sets = []
        for route in snap.route_list:
            cfg = route.breaker_config
            bs = None
            if cfg is not None:
                bs = BreakerSet(cfg, b.entry(cfg.fingerprint, dict), metrics)
                breaker_sets.append(bs)
            routes.append(RouteState(b.chain(route.checks), b.chain(route.backend_checks), bs))
        self.routes: tuple[RouteState, ...] = tuple(routes)  # by Route.index
        self.entries = b.entries
        self.closers = b.closers
        self.breaker_sets: tuple[BreakerSet, ...] = tuple(breaker_sets)
        if previous is not None:
            previous.retire(self)

    def retire(self, successor: Optional["State"] = None) -> None:
        """Close the I/O of every entry `successor` did not take (all of them without one)."""
        kept = successor.entries if successor is not None else {}
        for fingerprint, close in self.closers.items():
            if kept.get(fingerprint) is not self.entries[fingerprint]:
                close()

    def breaker_states(self, now: float) -> "list[Series]":
        """The `fastproxy_breaker_state` gauge: one sample per host breaker."""
        out: list[Series] = []
        for bs in self.breaker_sets:
            out.extend(bs.states(now))
        return out

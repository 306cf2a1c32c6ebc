"""`qos/circuit-breaker` on a backend: one breaker per host of that backend, per worker.

KrakenD keeps one breaker per backend entry, so one dead host trips the breaker for its healthy
siblings; fastproxy keeps one per host (in the worker's `policies.state`, as a `BreakerSet` made
from the compiled, frozen `BreakerConfig`), and the load balancer skips hosts whose breaker is open
(`BreakerSet.for_target`). Failures (SPEC §3.8): connect error, reset, timeout, malformed
response, and failing statuses — 5xx by default (KrakenD CE under no-op never sees statuses), or
every status not in `qos/circuit-breaker/http` `valid_status_codes` (KrakenD enterprise).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

import msgspec

from fastproxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker
from fastproxy.policies import CompileContext, Handler, Policy, RouteDraft

log = logging.getLogger("fastproxy")
STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class BreakerBlock(msgspec.Struct, frozen=True):
    interval: int = 0
    timeout: int = 0
    max_errors: int = 0
    name: str = ""
    log_status_change: bool = False


class LegacyBreakerBlock(msgspec.Struct, frozen=True,
                         rename={"max_errors": "maxErrors", "log_status_change": "logStatusChange"}):
    """KrakenD 1.x `github.com/devopsfaith/krakend-circuitbreaker/gobreaker`: camelCase in the
    file, the same attribute names as BreakerBlock in Python (msgspec renames only a class's own
    fields, so they are declared again)."""

    interval: int = 0
    timeout: int = 0
    max_errors: int = 0
    name: str = ""
    log_status_change: bool = False


class HttpBlock(msgspec.Struct, frozen=True):
    valid_status_codes: list[int] = []


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The compiled `qos/circuit-breaker` of one backend. The breakers are per worker
    (`BreakerSet`); `fingerprint` is their identity across reloads."""

    name: str
    route_name: str
    max_errors: int
    interval: float
    timeout: float
    log_changes: bool
    valid: Optional[frozenset[int]]
    fingerprint: bytes


class BreakerSet:
    """The breakers of one backend in one worker, keyed by host. `breakers` is the state a reload
    hands over when the configuration's fingerprint is unchanged (`policies.state`)."""

    __slots__ = ("name", "max_errors", "interval", "timeout", "log_changes", "valid", "breakers", "metrics")

    def __init__(self, cfg: BreakerConfig, breakers: dict[str, CircuitBreaker], metrics: Any = None) -> None:
        self.name = cfg.name
        self.max_errors = cfg.max_errors
        self.interval = cfg.interval
        self.timeout = cfg.timeout
        self.log_changes = cfg.log_changes
        self.valid = cfg.valid
        self.breakers = breakers
        self.metrics = metrics  # fastproxy.metrics.Metrics, or None
        for b in breakers.values():  # handed over by a reload: report through this configuration
            b.on_change = self._on_change

    def ok(self, status: int) -> bool:
        valid = self.valid
        if valid is None:
            return status < 500
        return status in valid

    def for_target(self, target: Any) -> CircuitBreaker:
        b = self.breakers.get(target.key)
        if b is None:
            b = CircuitBreaker(self.max_errors, self.interval, self.timeout, name=target.key,
                               on_change=self._on_change)
            self.breakers[target.key] = b
        return b

    def _on_change(self, breaker: CircuitBreaker, old: str, new: str, now: float) -> None:
        if self.log_changes or new == OPEN:
            log.warning("circuit breaker %r for %s: %s -> %s", self.name, breaker.name, old, new)
        if self.metrics is not None:
            self.metrics.breaker_transition(self.name, breaker.name, new)

    def states(self, now: float) -> list[tuple[tuple[str, str], tuple[str, str], int]]:
        return [(("breaker", "host"), (self.name, key), STATE_VALUE[b.state(now)]) for key, b in self.breakers.items()]


MAX_SECONDS = 86400  # interval and timeout are seconds; beyond a day is a unit mistake


def _compile(ctx: CompileContext, path: str, route: RouteDraft, interval: int, timeout: int, max_errors: int,
             name: str, log_changes: bool) -> Sequence[Policy]:
    p = ctx.problems
    for field, value in (("interval", interval), ("timeout", timeout), ("max_errors", max_errors)):
        if value < 0:
            p.error(f"{path}.{field}", f"expected an integer >= 0, found {value}")
        elif field != "max_errors" and value > MAX_SECONDS:
            p.error(f"{path}.{field}", f"expected at most {MAX_SECONDS} seconds (a day), found {value}")
    valid = route.valid_statuses  # set by qos/circuit-breaker/http if it came first
    key = f"breaker:{route.method}:{route.name}"
    name = name or f"{route.method} {route.name}"
    fp = msgspec.json.encode([key, interval, timeout, max_errors, name, sorted(valid) if valid else None])
    route.breaker = BreakerConfig(name, route.name, max_errors, float(interval), float(timeout), log_changes, valid, fp)
    return []


def _handler(block_type: type[BreakerBlock] | type[LegacyBreakerBlock]) -> Handler:
    def handler(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
        b = ctx.problems.control_block(raw, block_type, path)
        if b is None:
            return []
        assert route is not None  # a backend-level handler
        return _compile(ctx, path, route, b.interval, b.timeout, b.max_errors, b.name, b.log_status_change)

    return handler


compile_breaker = _handler(BreakerBlock)
compile_legacy_breaker = _handler(LegacyBreakerBlock)


def compile_valid_statuses(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    b = ctx.problems.control_block(raw, HttpBlock, path)
    if b is None:
        return []
    assert route is not None  # a backend-level handler
    for i, code in enumerate(b.valid_status_codes):
        if not 100 <= code <= 599:
            ctx.problems.error(f"{path}.valid_status_codes[{i}]", f"expected an HTTP status 100-599, found {code}")
    valid = frozenset(b.valid_status_codes)
    route.valid_statuses = valid  # picked up by qos/circuit-breaker if it comes next
    cfg = route.breaker
    if cfg is not None:
        route.breaker = replace(cfg, valid=valid, fingerprint=cfg.fingerprint + msgspec.json.encode(sorted(valid)))
    return []

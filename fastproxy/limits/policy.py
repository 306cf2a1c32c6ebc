"""Stateless rate limits as request policies: `qos/ratelimit/router`, `qos/ratelimit/service`,
`qos/ratelimit/proxy`, and KrakenD 1.x's juju aliases.

Each compiled limit is a frozen policy object with an `order` (SPEC §3); `bind` gives its live
form in one worker (`LiveLimit`, `LiveClientLimit`), whose `check(x, now)` passes or raises
Rejection. A route without limits has no such object in its chain, so it runs no limiter code.
Buckets live in the worker process that owns them (`policies.state`): no locks, no sharing, and
a reload that leaves a limit's fingerprint unchanged keeps its bucket.

Workers (`-w N`): limits that cover everybody (endpoint `max_rate`, service `max_rate`, backend
`max_rate`) are split N ways — each worker gets `max_rate / N` and `ceil(capacity / N)` — so the
instance as a whole admits the configured rate when the kernel spreads connections evenly.
Per-client limits are not split: a client's connection lives on one worker, which holds the
client's whole bucket; a client spreading connections over k workers can get up to k times its
limit. `bind` applies the split when the worker builds its state (after `-w` is known).

Rejections: endpoint-wide and service-wide 503, per client 429 (KrakenD's codes), backend 503
(KrakenD says 500; a limiter refusal is not an internal error); `status_code` overrides the
first two. Every rejection carries `Retry-After` with the time until the bucket has a token.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import msgspec

from fastproxy import policies
from fastproxy.config.durations import MAX_EVERY
from fastproxy.limits.bucket import BucketTable, TokenBucket, default_capacity
from fastproxy.limits.headers import policy_item, retry_after_value
from fastproxy.policies import CompileContext, Policy, Rejection, RouteDraft

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder

STRATEGIES = ("ip", "header", "param")
MAX_CLIENTS = 100_000


class RouterLimitBlock(msgspec.Struct, frozen=True):
    """`qos/ratelimit/router` and `qos/ratelimit/service` (same fields)."""

    max_rate: float = 0
    capacity: int = 0
    every: str = "1s"
    client_max_rate: float = 0
    client_capacity: int = 0
    strategy: Optional[str] = None
    key: str = ""
    status_code: Optional[int] = None
    client_status_code: Optional[int] = None
    max_clients: int = MAX_CLIENTS


class JujuRouterBlock(msgspec.Struct, frozen=True):
    maxRate: float = 0
    clientMaxRate: float = 0
    strategy: Optional[str] = None
    key: str = ""


class ProxyLimitBlock(msgspec.Struct, frozen=True):
    max_rate: float = 0
    capacity: int = 0
    every: str = "1s"


class JujuProxyBlock(msgspec.Struct, frozen=True):
    maxRate: float = 0
    capacity: int = 0


KNOWN_IGNORED = {"num_shards", "cleanup_period", "cleanup_threads"}
L = TypeVar("L", "Limit", "ClientLimit")


@dataclass(frozen=True, slots=True)
class _Limit:
    """What both kinds of limit are compiled into."""

    order: int
    name: str
    max_rate: float
    every: float
    capacity: int
    status: int
    reason: str
    fingerprint: bytes  # the bucket's identity across reloads (not the status: that only shapes answers)
    headers_on: bool  # RateLimit headers wanted (the fastproxy setting)
    policy: bytes = field(init=False)  # the RateLimit-Policy item

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy", policy_item(self.name, self.max_rate, self.every))


@dataclass(frozen=True, slots=True)
class Limit(_Limit):
    """One bucket for everybody (endpoint, service or backend `max_rate`). The bucket itself is
    per worker: `bind` takes it from the worker's State."""

    def bind(self, binder: "Binder") -> "LiveLimit":
        workers, now = binder.workers, binder.now
        share = max(1, math.ceil(self.capacity / workers))
        bucket = binder.entry(self.fingerprint, lambda: TokenBucket(self.max_rate / self.every / workers, share, now))
        return LiveLimit(self, bucket)


@dataclass(frozen=True, slots=True)
class ClientLimit(_Limit):
    """One bucket per client (strategy ip, header or param), bounded table per worker."""

    strategy: str
    key: str
    max_clients: int

    def bind(self, binder: "Binder") -> "LiveClientLimit":
        table = binder.entry(self.fingerprint,
                             lambda: BucketTable(self.max_rate / self.every, self.capacity, self.max_clients))
        return LiveClientLimit(self, table)


class LiveLimit:
    """A Limit in one worker: its answers (copied: read per request) and its bucket."""

    __slots__ = ("limit", "policy", "status", "reason", "headers_on", "bucket")

    def __init__(self, limit: Limit, bucket: TokenBucket) -> None:
        self.limit = limit
        self.policy = limit.policy
        self.status = limit.status
        self.reason = limit.reason
        self.headers_on = limit.headers_on
        self.bucket = bucket

    def check(self, x: Any, now: float) -> None:
        _decide(self, self.bucket, x, now)


class LiveClientLimit:
    """A ClientLimit in one worker: its answers, its key and its table of client buckets."""

    __slots__ = ("limit", "policy", "status", "reason", "headers_on", "table", "strategy", "key", "lkey")

    def __init__(self, limit: ClientLimit, table: BucketTable) -> None:
        self.limit = limit
        self.policy = limit.policy
        self.status = limit.status
        self.reason = limit.reason
        self.headers_on = limit.headers_on
        self.table = table
        self.strategy = limit.strategy
        self.key = limit.key
        self.lkey = limit.key.lower().encode()

    def client_key(self, x: Any) -> Any:
        s = self.strategy
        if s == "ip":
            return x.client_ip or None
        if s == "header":
            lkey = self.lkey
            for lname, _, value in x.headers:
                if lname == lkey:
                    return value or None
            return None
        params = x.params
        return params.get(self.key) if params else None

    def check(self, x: Any, now: float) -> None:
        key = self.client_key(x)
        if key is None:
            raise Rejection(self.status, f"{self.reason}: no client key ({self.strategy})",
                            ((b"Retry-After", b"1"),))
        _decide(self, self.table.bucket(key, now), x, now)


def _decide(limit: LiveLimit | LiveClientLimit, b: TokenBucket, x: Any, now: float) -> None:
    """Take a token or raise the limit's Rejection; remember the tightest limit for headers."""
    if not b.take(now):
        wait = b.retry_after(now)
        x.rl = (limit.policy, 0, wait)
        raise Rejection(limit.status, limit.reason, ((b"Retry-After", retry_after_value(wait)),))
    if limit.headers_on:
        rem = b.remaining(now)
        rl = x.rl
        if rl is None or rem < rl[1]:
            x.rl = (limit.policy, rem, b.reset_after(now))


def _every(ctx: CompileContext, raw: Any, path: str) -> float:
    return ctx.problems.duration(raw, path, 1.0, positive=True, maximum=MAX_EVERY)


def _capacity(ctx: CompileContext, capacity: int, max_rate: float, every: float, path: str) -> int:
    if capacity < 0:
        ctx.problems.error(path, f"expected an integer >= 0 (0 means the default), found {capacity}")
        return 1
    return capacity or default_capacity(max_rate, every)


def check_fields(ctx: CompileContext, raw: Any, path: str, typ: type[msgspec.Struct] = RouterLimitBlock) -> None:
    """Each field of a limit block that `typ` does not read: a warning, or an error when it
    misspells a field (`clinet_max_rate`), whose limit would silently be off."""
    ctx.problems.fields(raw, typ, path, known_ignored=frozenset(KNOWN_IGNORED))


def _fp(*parts: Any) -> bytes:
    return msgspec.json.encode([str(p) for p in parts])


def compile_router_block(block: RouterLimitBlock, path: str, ctx: CompileContext, scope: str,
                         route: Optional[RouteDraft], shared_key: str) -> list[Limit | ClientLimit]:
    """Shared by the router (endpoint) and service levels."""
    p = ctx.problems
    out: list[Limit | ClientLimit] = []
    if block.max_rate < 0:
        p.error(f"{path}.max_rate", f"expected a rate >= 0, found {block.max_rate}")
    if block.client_max_rate < 0:
        p.error(f"{path}.client_max_rate", f"expected a rate >= 0, found {block.client_max_rate}")
    if block.max_rate <= 0 and block.client_max_rate <= 0:
        p.error(path, "expected max_rate or client_max_rate above 0, found neither")
        return out
    for name, code in (("status_code", block.status_code), ("client_status_code", block.client_status_code)):
        if code is not None and not 400 <= code <= 599:
            p.error(f"{path}.{name}", f"expected an HTTP error status 400-599, found {code}")
    every = _every(ctx, block.every, f"{path}.every")
    service = scope == "service"
    if block.max_rate > 0:
        cap = _capacity(ctx, block.capacity, block.max_rate, every, f"{path}.capacity")
        # the service-wide bucket runs after the service client limit, as the endpoint one after the
        # endpoint client limit: a request one client's limit refuses spends nobody else's token
        limit = Limit(policies.ORDER_SERVICE_LIMIT + 1 if service else policies.ORDER_ENDPOINT_LIMIT,
                      "service" if service else "endpoint", block.max_rate, every, cap,
                      block.status_code or 503, f"{scope} rate limit",
                      _fp(shared_key, "all", block.max_rate, every, cap), ctx.settings.ratelimit_headers)
        out.append(_register(ctx, f"{shared_key}:all", limit))
    if block.strategy is not None and block.strategy.lower() not in STRATEGIES:
        p.error(f"{path}.strategy", f"expected one of ip, header, param, found {block.strategy!r}")
        return out
    if block.client_max_rate > 0:
        strategy = block.strategy
        if strategy is None:
            msg = "not set: using 'ip' (the client address, see trusted_proxies)"
            if route is not None:
                p.note("strategy not set", f"{path}.strategy", msg, f"{route.method} {route.name}")
            else:
                p.warn(f"{path}.strategy", msg)
            strategy = "ip"
        strategy = strategy.lower()
        if strategy not in STRATEGIES:
            p.error(f"{path}.strategy", f"expected one of ip, header, param, found {block.strategy!r}")
            return out
        if strategy in ("header", "param") and not block.key:
            what = "header" if strategy == "header" else "parameter"
            p.error(f"{path}.key", f"strategy {strategy!r} needs a key (the {what} name), found none")
            return out
        if strategy == "ip" and block.key:
            p.warn(f"{path}.key", "ignored with strategy 'ip': the client address comes from the socket "
                                  "or from trusted proxies (extra_config.router.trusted_proxies)")
        if strategy == "param":
            if route is None:
                p.error(f"{path}.strategy", "strategy 'param' is only meaningful on an endpoint")
                return out
            if block.key not in _params_of(route):
                p.error(f"{path}.key", f"expected a parameter of the endpoint {route.name!r}, found {block.key!r}")
                return out
        if block.max_clients < 1:
            p.error(f"{path}.max_clients", f"expected an integer >= 1, found {block.max_clients}")
            return out
        ccap = _capacity(ctx, block.client_capacity, block.client_max_rate, every, f"{path}.client_capacity")
        climit = ClientLimit(policies.ORDER_SERVICE_LIMIT if service else policies.ORDER_CLIENT_LIMIT,
                             "service-client" if service else "client", block.client_max_rate, every, ccap,
                             block.client_status_code or block.status_code or 429, f"{scope} client rate limit",
                             _fp(shared_key, "client", block.client_max_rate, every, ccap, strategy, block.key,
                                 block.max_clients), ctx.settings.ratelimit_headers, strategy, block.key,
                             block.max_clients)
        out.append(_register(ctx, f"{shared_key}:client", climit))
    return out


def _params_of(route: RouteDraft) -> set[str]:
    from fastproxy.routing import parse_pattern

    segments, _ = parse_pattern(route.name)
    return {text for is_param, text in segments if is_param}


def _register(ctx: CompileContext, key: str, limit: L) -> L:
    if key in ctx.keys:
        ctx.problems.error(ctx.current_path, "the same limit is configured twice here (a namespace and its "
                                             "legacy alias?): keep one")
    ctx.keys.add(key)
    return limit


def compile_service(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    # compiled once per configuration; the same objects go into every route's chain
    block = ctx.problems.convert(raw, RouterLimitBlock, path)
    check_fields(ctx, raw, path)
    return [] if block is None else compile_router_block(block, path, ctx, "service", None, "service")


def compile_router(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.convert(raw, RouterLimitBlock, path)
    check_fields(ctx, raw, path)
    if block is None:
        return []
    assert route is not None  # an endpoint-level handler
    return compile_router_block(block, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")


def compile_juju_router(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.control_block(raw, JujuRouterBlock, path)
    if block is None:
        return []
    assert route is not None  # an endpoint-level handler
    # juju buckets had capacity = rate; keep that when migrating
    new = RouterLimitBlock(max_rate=block.maxRate, capacity=max(1, int(block.maxRate)) if block.maxRate > 0 else 0,
                           client_max_rate=block.clientMaxRate,
                           client_capacity=max(1, int(block.clientMaxRate)) if block.clientMaxRate > 0 else 0,
                           strategy=block.strategy, key=block.key)
    return compile_router_block(new, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")


def _proxy_limit(max_rate: float, capacity: int, every_raw: Any, path: str, ctx: CompileContext,
                 route: Optional[RouteDraft]) -> Sequence[Policy]:
    assert route is not None  # a backend-level handler
    p = ctx.problems
    if max_rate <= 0:
        p.error(f"{path}.max_rate", f"expected a rate above 0, found {max_rate}")
        return []
    every = _every(ctx, every_raw, f"{path}.every")
    cap = _capacity(ctx, capacity, max_rate, every, f"{path}.capacity")
    key = f"proxy:{route.method}:{route.name}"
    limit = Limit(policies.ORDER_BACKEND_LIMIT, "backend", max_rate, every, cap, 503, "backend rate limit",
                  _fp(key, max_rate, every, cap), ctx.settings.ratelimit_headers)
    return [_register(ctx, key, limit)]


def compile_proxy(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.convert(raw, ProxyLimitBlock, path)
    check_fields(ctx, raw, path, ProxyLimitBlock)
    return [] if block is None else _proxy_limit(block.max_rate, block.capacity, block.every, path, ctx, route)


def compile_juju_proxy(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.control_block(raw, JujuProxyBlock, path)
    if block is None:
        return []
    return _proxy_limit(block.maxRate, block.capacity or max(1, int(block.maxRate)), "1s", path, ctx, route)

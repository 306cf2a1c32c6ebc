"""Stateless rate limits as request policies: `qos/ratelimit/router`, `qos/ratelimit/service`,
`qos/ratelimit/proxy`, and KrakenD 1.x's juju aliases.

Each compiled limit is a policy object with an `order` (SPEC §3) and `check(x, now)`, which
passes or raises Rejection. A route without limits has no such object in its chain, so it runs
no limiter code. Buckets live in the worker process that owns them: no locks, no sharing.

Workers (`-w N`): limits that cover everybody (endpoint `max_rate`, service `max_rate`, backend
`max_rate`) are split N ways — each worker gets `max_rate / N` and `ceil(capacity / N)` — so the
instance as a whole admits the configured rate when the kernel spreads connections evenly.
Per-client limits are not split: a client's connection lives on one worker, which holds the
client's whole bucket; a client spreading connections over k workers can get up to k times its
limit. `start(now, workers)` applies the split when the worker starts (after `-w` is known).

Rejections: endpoint-wide and service-wide 503, per client 429 (KrakenD's codes), backend 503
(KrakenD says 500; a limiter refusal is not an internal error); `status_code` overrides the
first two. Every rejection carries `Retry-After` with the time until the bucket has a token.
"""

import math
from typing import Any, Optional

import msgspec

from fastproxy import policies
from fastproxy.config.durations import MAX_EVERY
from fastproxy.limits.bucket import BucketTable, TokenBucket, default_capacity
from fastproxy.limits.headers import policy_item, retry_after_value
from fastproxy.policies import Rejection

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


class Limit:
    """One bucket for everybody (endpoint, service or backend `max_rate`)."""

    __slots__ = ("order", "name", "max_rate", "every", "capacity", "status", "reason", "bucket", "policy",
                 "fingerprint", "headers_on")

    def __init__(self, order: int, name: str, max_rate: float, every: float, capacity: int, status: int,
                 reason: str, fingerprint: bytes) -> None:
        self.order = order
        self.name = name
        self.max_rate = max_rate
        self.every = every
        self.capacity = capacity
        self.status = status
        self.reason = reason
        self.bucket: Optional[TokenBucket] = None
        self.policy = policy_item(name, max_rate, every)
        self.fingerprint = fingerprint
        self.headers_on = True  # RateLimit headers wanted (the fastproxy setting); set at compile

    def start(self, now: float, workers: int, metrics: Any = None) -> None:
        if self.bucket is None:
            share = max(1, math.ceil(self.capacity / workers))
            self.bucket = TokenBucket(self.max_rate / self.every / workers, share, now)

    def adopt(self, old: "Limit") -> None:
        if old.fingerprint == self.fingerprint and old.bucket is not None:
            self.bucket = old.bucket

    def check(self, x: Any, now: float) -> None:
        _decide(self, self.bucket, x, now)


class ClientLimit(Limit):
    """One bucket per client (strategy ip, header or param), bounded table per worker."""

    __slots__ = ("table", "strategy", "key", "lkey", "max_clients")

    def __init__(self, order: int, name: str, max_rate: float, every: float, capacity: int, status: int,
                 reason: str, strategy: str, key: str, max_clients: int, fingerprint: bytes) -> None:
        super().__init__(order, name, max_rate, every, capacity, status, reason, fingerprint)
        self.strategy = strategy
        self.key = key
        self.lkey = key.lower().encode()
        self.max_clients = max_clients
        self.table: Optional[BucketTable] = None

    def start(self, now: float, workers: int, metrics: Any = None) -> None:
        if self.table is None:
            self.table = BucketTable(self.max_rate / self.every, self.capacity, self.max_clients)

    def adopt(self, old: "ClientLimit") -> None:
        if old.fingerprint == self.fingerprint and old.table is not None:
            self.table = old.table

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


def _decide(limit: Any, b: TokenBucket, x: Any, now: float) -> None:
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


def _every(ctx: Any, raw: Any, path: str) -> float:
    return ctx.problems.duration(raw, path, 1.0, positive=True, maximum=MAX_EVERY)


def _capacity(ctx: Any, capacity: int, max_rate: float, every: float, path: str) -> int:
    if capacity < 0:
        ctx.problems.error(path, f"expected an integer >= 0 (0 means the default), found {capacity}")
        return 1
    return capacity or default_capacity(max_rate, every)


def check_fields(ctx: Any, raw: Any, path: str, typ: type = RouterLimitBlock) -> None:
    """Each field of a limit block that `typ` does not read: a warning, or an error when it
    misspells a field (`clinet_max_rate`), whose limit would silently be off."""
    ctx.problems.fields(raw, typ, path, known_ignored=frozenset(KNOWN_IGNORED))


def _fp(*parts: Any) -> bytes:
    return msgspec.json.encode([str(p) for p in parts])


def compile_router_block(block: RouterLimitBlock, path: str, ctx: Any, scope: str, route: Any,
                         shared_key: str) -> list:
    """Shared by the router (endpoint) and service levels."""
    p = ctx.problems
    out: list = []
    if block.max_rate < 0:
        p.error(f"{path}.max_rate", f"expected a rate >= 0, found {block.max_rate}")
    if block.client_max_rate < 0:
        p.error(f"{path}.client_max_rate", f"expected a rate >= 0, found {block.client_max_rate}")
    if block.max_rate <= 0 and block.client_max_rate <= 0:
        p.error(path, "expected max_rate or client_max_rate above 0, found neither")
        return out
    for field, code in (("status_code", block.status_code), ("client_status_code", block.client_status_code)):
        if code is not None and not 400 <= code <= 599:
            p.error(f"{path}.{field}", f"expected an HTTP error status 400-599, found {code}")
    every = _every(ctx, block.every, f"{path}.every")
    service = scope == "service"
    if block.max_rate > 0:
        cap = _capacity(ctx, block.capacity, block.max_rate, every, f"{path}.capacity")
        # the service-wide bucket runs after the service client limit, as the endpoint one after the
        # endpoint client limit: a request one client's limit refuses spends nobody else's token
        limit = Limit(policies.ORDER_SERVICE_LIMIT + 1 if service else policies.ORDER_ENDPOINT_LIMIT,
                      "service" if service else "endpoint", block.max_rate, every, cap,
                      block.status_code or 503, f"{scope} rate limit",
                      _fp(shared_key, "all", block.max_rate, every, cap))
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
        limit = ClientLimit(policies.ORDER_SERVICE_LIMIT if service else policies.ORDER_CLIENT_LIMIT,
                            "service-client" if service else "client", block.client_max_rate, every, ccap,
                            block.client_status_code or block.status_code or 429, f"{scope} client rate limit",
                            strategy, block.key, block.max_clients,
                            _fp(shared_key, "client", block.client_max_rate, every, ccap, strategy, block.key,
                                block.max_clients))
        out.append(_register(ctx, f"{shared_key}:client", limit))
    return out


def _params_of(route: Any) -> set:
    from fastproxy.routing import parse_pattern

    segments, _ = parse_pattern(route.name)
    return {text for is_param, text in segments if is_param}


def _register(ctx: Any, key: str, obj: Any) -> Any:
    if isinstance(obj, Limit):
        obj.headers_on = ctx.settings.ratelimit_headers
    if key in ctx.state:
        ctx.problems.error(ctx.current_path, "the same limit is configured twice here (a namespace and its "
                                             "legacy alias?): keep one")
    ctx.state[key] = obj
    return obj


def compile_service(raw: Any, path: str, ctx: Any, route: Any) -> list:
    # compiled once per configuration; the same objects go into every route's chain
    block = ctx.problems.convert(raw, RouterLimitBlock, path)
    check_fields(ctx, raw, path)
    return [] if block is None else compile_router_block(block, path, ctx, "service", None, "service")


def compile_router(raw: Any, path: str, ctx: Any, route: Any) -> list:
    block = ctx.problems.convert(raw, RouterLimitBlock, path)
    check_fields(ctx, raw, path)
    if block is None:
        return []
    return compile_router_block(block, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")


def compile_juju_router(raw: Any, path: str, ctx: Any, route: Any) -> list:
    block = ctx.problems.control_block(raw, JujuRouterBlock, path)
    if block is None:
        return []
    # juju buckets had capacity = rate; keep that when migrating
    new = RouterLimitBlock(max_rate=block.maxRate, capacity=max(1, int(block.maxRate)) if block.maxRate > 0 else 0,
                           client_max_rate=block.clientMaxRate,
                           client_capacity=max(1, int(block.clientMaxRate)) if block.clientMaxRate > 0 else 0,
                           strategy=block.strategy, key=block.key)
    return compile_router_block(new, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")


def _proxy_limit(max_rate: float, capacity: int, every_raw: Any, path: str, ctx: Any, route: Any) -> list:
    p = ctx.problems
    if max_rate <= 0:
        p.error(f"{path}.max_rate", f"expected a rate above 0, found {max_rate}")
        return []
    every = _every(ctx, every_raw, f"{path}.every")
    cap = _capacity(ctx, capacity, max_rate, every, f"{path}.capacity")
    key = f"proxy:{route.method}:{route.name}"
    limit = Limit(policies.ORDER_BACKEND_LIMIT, "backend", max_rate, every, cap, 503, "backend rate limit",
                  _fp(key, max_rate, every, cap))
    return [_register(ctx, key, limit)]


def compile_proxy(raw: Any, path: str, ctx: Any, route: Any) -> list:
    block = ctx.problems.convert(raw, ProxyLimitBlock, path)
    check_fields(ctx, raw, path, ProxyLimitBlock)
    return [] if block is None else _proxy_limit(block.max_rate, block.capacity, block.every, path, ctx, route)


def compile_juju_proxy(raw: Any, path: str, ctx: Any, route: Any) -> list:
    block = ctx.problems.control_block(raw, JujuProxyBlock, path)
    if block is None:
        return []
    return _proxy_limit(block.maxRate, block.capacity or max(1, int(block.maxRate)), "1s", path, ctx, route)

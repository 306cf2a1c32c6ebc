"""Redis-backed limits (`qos/ratelimit/router/redis`, `qos/ratelimit/service/redis`) and tiered
limits (`qos/ratelimit/tiered`), as request policies.

A Redis limit is asynchronous: `check` returns a future (from `RedisStore.decide`) and the server
calls `complete(x, result, now)` when it resolves; `complete` raises Rejection or passes. When the
store answers FALLBACK (Redis slow or down), the decision is made by the local twin of the same
limit (`limits.policy.Limit` / `ClientLimit`, split per worker like any stateless limit), or
passes with `on_failure_allow`.

Tiered: the `tier_key` header picks the first matching tier (`literal`, `regex` with RE2, `*`);
its limits run; no match is 403.
"""

import asyncio
from typing import Any, Optional
from urllib.parse import urlsplit

import msgspec

from fastproxy import policies
from fastproxy.limits.headers import retry_after_value
from fastproxy.limits.policy import ClientLimit, RouterLimitBlock, compile_router_block, check_fields
from fastproxy.limits.redis_store import FALLBACK, PoolConfig, RedisStore
from fastproxy.policies import Rejection


class RedisLimitBlock(RouterLimitBlock, frozen=True):
    connection_name: str = ""
    connection_pool: str = ""
    on_failure_allow: bool = False


class PoolBlock(msgspec.Struct, frozen=True):
    name: str
    address: str
    db: int = 0
    pool_size: int = 10
    dial_timeout: str = "5s"
    user_name: Optional[str] = None
    password: Optional[str] = None


class RedisRoot(msgspec.Struct, frozen=True):
    connection_pools: list[Any] = []
    clusters: list[Any] = []


class StoreHandle:
    """Per-configuration handle of a Redis pool; the store itself is created per worker."""

    __slots__ = ("cfg", "timeout", "store", "fingerprint")

    def __init__(self, cfg: PoolConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.store: Optional[RedisStore] = None
        self.fingerprint = msgspec.json.encode([cfg.name, cfg.host, cfg.port, cfg.db, cfg.pool_size, cfg.dial_timeout,
                                                cfg.username, cfg.password, timeout])

    def start(self, now: float, workers: int, metrics: Any = None) -> None:
        if self.store is None:
            self.store = RedisStore(self.cfg, self.timeout)
        self.store.start(metrics)

    def adopt(self, old: "StoreHandle") -> None:
        if old.fingerprint == self.fingerprint and old.store is not None:
            self.store = old.store

    def retire_unless_adopted(self, new_state: Any) -> None:
        """After a reload: close this pool's connections unless a new handle took the store."""
        store = self.store
        if store is not None and not any(getattr(o, "store", None) is store for o in new_state):
            store.close()


class RedisLimit:
    """The shared twin of a local Limit/ClientLimit: same fields, counters in Redis."""

    __slots__ = ("order", "local", "handle", "prefix", "rate", "cap", "ttl_ms", "allow_on_failure", "client")

    def __init__(self, local: Any, handle: StoreHandle, prefix: bytes, allow_on_failure: bool) -> None:
        self.order = local.order
        self.local = local
        self.handle = handle
        self.prefix = prefix
        self.rate = local.max_rate / local.every
        self.cap = local.capacity
        self.ttl_ms = int(local.capacity / self.rate * 1000) + 1000  # full again: the key may go
        self.allow_on_failure = allow_on_failure
        self.client = isinstance(local, ClientLimit)

    def _key(self, x: Any) -> Optional[bytes]:
        if not self.client:
            return self.prefix
        k = self.local.client_key(x)
        if k is None:
            return None
        if k.__class__ is str:
            k = k.encode()
        return self.prefix + k

    def check(self, x: Any, now: float) -> Optional[asyncio.Future]:
        key = self._key(x)
        if key is None:
            return self.local.check(x, now)  # rejects: no client key
        fut = self.handle.store.decide(key, self.rate, self.cap, self.ttl_ms)
        if fut is None:
            return self._fallback(x, now)
        return fut

    def complete(self, x: Any, result: Any, now: float) -> None:
        if result is FALLBACK:
            self._fallback(x, now)
            return
        allowed, remaining, wait, reset = result
        local = self.local
        if not allowed:
            x.rl = (local.policy, 0, wait)
            raise Rejection(local.status, local.reason, ((b"Retry-After", retry_after_value(wait)),))
        rl = x.rl
        if rl is None or remaining < rl[1]:
            x.rl = (local.policy, remaining, reset)

    def _fallback(self, x: Any, now: float) -> None:
        if not self.allow_on_failure:
            self.local.check(x, now)


def _pools(ctx: Any) -> dict:
    cached = ctx.shared.get("redis_pools")
    if cached is not None:
        return cached
    pools: dict = {}
    ctx.shared["redis_pools"] = pools
    raw = ctx.root.extra_config.get("redis")
    if raw is None:
        return pools
    path = '$.extra_config["redis"]'
    root = ctx.problems.convert(raw, RedisRoot, path)
    if root is None:
        return pools
    if root.clusters:
        ctx.problems.warn(f"{path}.clusters", "Redis clusters are not implemented by fastproxy: ignored")
    settings = ctx.root.extra_config.get("fastproxy", {})
    timeout = ctx.problems.duration(settings.get("redis_timeout", "50ms") if isinstance(settings, dict) else "50ms",
                                    '$.extra_config["fastproxy"].redis_timeout', 0.05, True)
    for i, rawp in enumerate(root.connection_pools):
        ppath = f"{path}.connection_pools[{i}]"
        p = ctx.problems.convert(rawp, PoolBlock, ppath)
        if p is None:
            continue
        addr = p.address if "://" in p.address else f"redis://{p.address}"
        try:
            u = urlsplit(addr)
            host, port = u.hostname, u.port or 6379
        except ValueError:
            host = None
        if not host:
            ctx.problems.error(f"{ppath}.address", f"expected 'host:port', found {p.address!r}")
            continue
        if p.pool_size < 1:
            ctx.problems.error(f"{ppath}.pool_size", f"expected an integer >= 1, found {p.pool_size}")
            continue
        dial = ctx.problems.duration(p.dial_timeout, f"{ppath}.dial_timeout", 5.0, True)
        if p.name in pools:
            ctx.problems.error(f"{ppath}.name", f"pool {p.name!r} is defined twice")
            continue
        handle = StoreHandle(PoolConfig(p.name, host, port, p.db, p.pool_size, dial, p.user_name, p.password), timeout)
        ctx.state[f"redis:{p.name}"] = handle
        pools[p.name] = handle
    return pools


def compile_redis(raw: Any, path: str, ctx: Any, scope: str, route: Any, shared_key: str) -> list:
    block = ctx.problems.convert(raw, RedisLimitBlock, path)
    check_fields(ctx, raw, path, RedisLimitBlock)
    if block is None:
        return []
    name = block.connection_name or block.connection_pool
    pools = _pools(ctx)
    if not name:
        ctx.problems.error(f"{path}.connection_name", "expected the name of a pool in extra_config.redis, found none")
        return []
    handle = pools.get(name)
    if handle is None:
        known = ", ".join(sorted(pools)) or "none defined"
        ctx.problems.error(f"{path}.connection_name", f"expected a pool of extra_config.redis ({known}), found {name!r}")
        return []
    local = compile_router_block(block, path, ctx, scope, route, shared_key + ":fallback")
    return [RedisLimit(l, handle, f"fp:{shared_key}:{'c' if isinstance(l, ClientLimit) else 'a'}:".encode(),
                       block.on_failure_allow) for l in local]


@policies.register("service", "qos/ratelimit/service/redis")
def _service_redis(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return compile_redis(raw, path, ctx, "service", None, "service")


@policies.register("endpoint", "qos/ratelimit/router/redis")
def _router_redis(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return compile_redis(raw, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")


# -- tiered -----------------------------------------------------------------------------------

class TierBlock(msgspec.Struct, frozen=True):
    tier_value: str = ""
    tier_value_as: str = "literal"
    ratelimit: Optional[dict] = None
    ratelimit_redis: Optional[dict] = None


class TieredBlock(msgspec.Struct, frozen=True):
    tier_key: str
    tiers: list[Any]


class Tier:
    __slots__ = ("kind", "value", "regex", "checks", "name")

    def __init__(self, kind: str, value: bytes, regex: Any, checks: tuple, name: str) -> None:
        self.kind = kind
        self.value = value
        self.regex = regex
        self.checks = checks
        self.name = name

    def matches(self, value: Optional[bytes]) -> bool:
        if self.kind == "*":
            return True
        if value is None:
            return False
        if self.kind == "literal":
            return value == self.value
        return self.regex.search(value) is not None


def select_tier(tiers: tuple, value: Optional[bytes]) -> Optional[Tier]:
    for tier in tiers:
        if tier.matches(value):
            return tier
    return None


class TieredCheck:
    __slots__ = ("order", "key", "tiers")

    def __init__(self, key: bytes, tiers: tuple) -> None:
        self.order = policies.ORDER_TIERED
        self.key = key
        self.tiers = tiers

    def check(self, x: Any, now: float) -> Optional[asyncio.Future]:
        value = None
        key = self.key
        for lname, _, v in x.headers:
            if lname == key:
                value = v
                break
        tier = select_tier(self.tiers, value)
        if tier is None:
            raise Rejection(403, "no matching tier")
        return _run(x, tier.checks, 0, now)

    def complete(self, x: Any, result: Any, now: float) -> None:
        if result is not None:
            raise result


def _run(x: Any, checks: tuple, i: int, now: float) -> Optional[asyncio.Future]:
    """Run `checks[i:]`; None when all passed synchronously (raises Rejection), else a future of
    None or the Rejection."""
    while i < len(checks):
        c = checks[i]
        i += 1
        r = c.check(x, now)
        if r is not None:
            loop = asyncio.get_running_loop()
            outer = loop.create_future()

            def done(f: asyncio.Future, c: Any = c, i: int = i) -> None:
                t = loop.time()
                try:
                    c.complete(x, f.result(), t)
                    nxt = _run(x, checks, i, t)
                except Rejection as rej:
                    outer.set_result(rej)
                    return
                if nxt is None:
                    outer.set_result(None)
                else:
                    nxt.add_done_callback(lambda f2: outer.set_result(f2.result()))

            r.add_done_callback(done)
            return outer
    return None


def _tiered(raw: Any, path: str, ctx: Any, route: Any, scope: str) -> list:
    from fastproxy.security.botdetector import _options  # RE2 options shared with the bot detector
    import re2

    block = ctx.problems.convert(raw, TieredBlock, path)
    if block is None:
        return []
    if not block.tiers:
        ctx.problems.error(f"{path}.tiers", "expected at least one tier, found none")
        return []
    base = f"tiered:{scope}" + (f":{route.method}:{route.name}" if route is not None else "")
    check_fields(ctx, raw, path, TieredBlock)
    tiers = []
    for i, rawt in enumerate(block.tiers):
        tpath = f"{path}.tiers[{i}]"
        t = ctx.problems.convert(rawt, TierBlock, tpath)
        if t is None:
            continue
        kind = t.tier_value_as
        regex = None
        check_fields(ctx, rawt, tpath, TierBlock)
        if tiers and tiers[-1].kind == "*":
            ctx.problems.warn(tpath, "never reached: a '*' tier before it matches every request")
        if kind == "policy":
            ctx.problems.error(f"{tpath}.tier_value_as", "KrakenD's 'policy' matcher (a security-policies "
                               "expression) is not implemented by fastproxy: expected literal, regex or *")
            continue
        if kind not in ("literal", "regex", "*"):
            ctx.problems.error(f"{tpath}.tier_value_as", f"expected literal, regex or *, found {kind!r}")
            continue
        if kind == "regex":
            try:
                regex = re2.compile(t.tier_value.encode(), _options())
            except re2.error as exc:
                ctx.problems.error(f"{tpath}.tier_value", f"invalid regular expression {t.tier_value!r}: {exc}")
                continue
        if (t.ratelimit is None) == (t.ratelimit_redis is None):
            ctx.problems.error(tpath, "expected exactly one of ratelimit or ratelimit_redis")
            continue
        key = f"{base}:{i}"
        if t.ratelimit is not None:
            rpath = f"{tpath}.ratelimit"
            b = ctx.problems.convert(t.ratelimit, RouterLimitBlock, rpath)
            check_fields(ctx, t.ratelimit, rpath)
            checks = [] if b is None else compile_router_block(b, rpath, ctx, scope, route, key)
        else:
            checks = compile_redis(t.ratelimit_redis, f"{tpath}.ratelimit_redis", ctx, scope, route, key)
        tiers.append(Tier(kind, t.tier_value.encode(), regex, policies.order(checks), t.tier_value))
    if not block.tier_key:
        ctx.problems.error(f"{path}.tier_key", "expected a header name, found none")
        return []
    return [TieredCheck(block.tier_key.lower().encode(), tuple(tiers))]


@policies.register("service", "qos/ratelimit/tiered")
def _tiered_service(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return _tiered(raw, path, ctx, None, "service")


@policies.register("endpoint", "qos/ratelimit/tiered")
def _tiered_endpoint(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return _tiered(raw, path, ctx, route, "endpoint")

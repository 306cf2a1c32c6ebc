"""Redis-backed limits (`qos/ratelimit/router/redis`, `qos/ratelimit/service/redis`) as request
policies, and the root `redis` block's connection pools.

A Redis limit is asynchronous: `check` returns a future (from `RedisStore.decide`) and the server
calls `complete(x, result, now)` when it resolves; `complete` raises Rejection or passes. When the
store answers FALLBACK (Redis slow or down), the decision is made by the local twin of the same
limit (`limits.policy.Limit` / `ClientLimit`, split per worker like any stateless limit), or
passes with `on_failure_allow`. The store (I/O) is `redis_store.py`.
"""

import asyncio
from typing import Any, Optional
from urllib.parse import urlsplit

import msgspec

from fastproxy.limits.headers import retry_after_value
from fastproxy.limits.policy import ClientLimit, RouterLimitBlock, check_fields, compile_router_block
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
    timeout = ctx.redis_timeout
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
        ctx.problems.error(f"{path}.connection_name",
                           f"expected a pool of extra_config.redis ({known}), found {name!r}")
        return []
    local = compile_router_block(block, path, ctx, scope, route, shared_key + ":fallback")
    return [RedisLimit(limit, handle, f"fp:{shared_key}:{'c' if isinstance(limit, ClientLimit) else 'a'}:".encode(),
                       block.on_failure_allow) for limit in local]


def compile_service(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return compile_redis(raw, path, ctx, "service", None, "service")


def compile_endpoint(raw: Any, path: str, ctx: Any, route: Any) -> list:
    return compile_redis(raw, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")

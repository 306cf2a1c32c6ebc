"""Redis-backed limits (`qos/ratelimit/router/redis`, `qos/ratelimit/service/redis`) as request
policies, and the root `redis` block's connection pools and clusters (`connection_name` names
either: a pool is a `RedisStore`, a cluster a `ClusterStore` with a store per master).

A Redis limit is asynchronous: the `check` of its live form returns a future (from
`RedisStore.decide`) and the server calls `complete(x, result, now)` when it resolves; `complete`
raises Rejection or passes. When the store answers FALLBACK (Redis slow or down), the decision is
made by the local twin of the same limit (`limits.policy.Limit` / `ClientLimit`, split per worker
like any stateless limit), or passes with `on_failure_allow`. The store (I/O) is
`redis_store.py`; each worker has its own per pool, kept across a reload that leaves the pool
unchanged and closed when a reload changes or drops it (`policies.state`).
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

import msgspec

from fastproxy.limits.headers import retry_after_value
from fastproxy.limits.policy import ClientLimit, Limit, RouterLimitBlock, check_fields, compile_router_block
from fastproxy.limits.redis_cluster import ClusterConfig, ClusterStore, parse_address
from fastproxy.limits.redis_store import FALLBACK, PoolConfig, RedisStore
from fastproxy.policies import CompileContext, Policy, Rejection, RouteDraft

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder


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


class ClusterBlock(msgspec.Struct, frozen=True):
    name: str
    addresses: list[str]
    max_redirects: int = 3
    pool_size: int = 10
    dial_timeout: str = "5s"
    user_name: Optional[str] = None
    password: Optional[str] = None


class RedisRoot(msgspec.Struct, frozen=True):
    connection_pools: list[Any] = []
    clusters: list[Any] = []


@dataclass(frozen=True, slots=True)
class StoreHandle:
    """One Redis pool of the configuration; the store (its connections) is per worker."""

    cfg: PoolConfig
    timeout: float
    fingerprint: bytes = field(init=False)  # the store's identity across reloads

    def __post_init__(self) -> None:
        cfg = self.cfg
        object.__setattr__(self, "fingerprint", msgspec.json.encode(
            ["redis", cfg.name, cfg.host, cfg.port, cfg.db, cfg.pool_size, cfg.dial_timeout, cfg.username,
             cfg.password, self.timeout]))

    def bind(self, binder: "Binder") -> RedisStore:
        """This worker's store: the previous State's when the pool is unchanged (its connections
        survive the reload), else a new one; a store no later State takes is closed."""
        store = binder.entry(self.fingerprint, lambda: RedisStore(self.cfg, self.timeout), RedisStore.close)
        store.start(binder.metrics)
        return store


@dataclass(frozen=True, slots=True)
class ClusterHandle:
    """One Redis Cluster of the configuration; its stores (per node) are per worker."""

    cfg: ClusterConfig
    timeout: float
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        cfg = self.cfg
        object.__setattr__(self, "fingerprint", msgspec.json.encode(
            ["redis-cluster", cfg.name, cfg.addresses, cfg.max_redirects, cfg.pool_size, cfg.dial_timeout,
             cfg.username, cfg.password, self.timeout]))

    def bind(self, binder: "Binder") -> ClusterStore:
        store = binder.entry(self.fingerprint, lambda: ClusterStore(self.cfg, self.timeout), ClusterStore.close)
        store.start(binder.metrics)
        return store


@dataclass(frozen=True, slots=True)
class RedisLimit:
    """The shared twin of a local Limit/ClientLimit: same fields, counters in Redis."""

    local: Limit | ClientLimit
    handle: StoreHandle | ClusterHandle
    prefix: bytes
    allow_on_failure: bool
    order: int = field(init=False)
    rate: float = field(init=False)
    cap: int = field(init=False)
    ttl_ms: int = field(init=False)

    def __post_init__(self) -> None:
        local = self.local
        rate = local.max_rate / local.every
        object.__setattr__(self, "order", local.order)
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "cap", local.capacity)
        object.__setattr__(self, "ttl_ms", int(local.capacity / rate * 1000) + 1000)  # full again: the key may go

    def bind(self, binder: "Binder") -> "LiveRedisLimit":
        return LiveRedisLimit(self, binder.bind(self.local), self.handle.bind(binder))


class LiveRedisLimit:
    """A RedisLimit in one worker: its store and its local twin (the fallback)."""

    __slots__ = ("local", "store", "prefix", "rate", "cap", "ttl_ms", "allow_on_failure", "client", "status",
                 "reason", "policy")

    def __init__(self, limit: RedisLimit, local: Any, store: RedisStore | ClusterStore) -> None:
        self.local = local  # LiveLimit or LiveClientLimit
        self.store = store
        self.prefix = limit.prefix
        self.rate = limit.rate
        self.cap = limit.cap
        self.ttl_ms = limit.ttl_ms
        self.allow_on_failure = limit.allow_on_failure
        self.client = isinstance(limit.local, ClientLimit)
        self.status = limit.local.status
        self.reason = limit.local.reason
        self.policy = limit.local.policy

    def _key(self, x: Any) -> Optional[bytes]:
        if not self.client:
            return self.prefix
        k = self.local.client_key(x)
        if k is None:
            return None
        if k.__class__ is str:
            k = k.encode()
        return self.prefix + k  # type: ignore[no-any-return]

    def check(self, x: Any, now: float) -> "Optional[asyncio.Future[Any]]":
        key = self._key(x)
        if key is None:
            self.local.check(x, now)  # rejects: no client key
            return None
        fut = self.store.decide(key, self.rate, self.cap, self.ttl_ms)
        if fut is None:
            self._fallback(x, now)
            return None
        return fut

    def complete(self, x: Any, result: Any, now: float) -> None:
        if result is FALLBACK:
            self._fallback(x, now)
            return
        allowed, remaining, wait, reset = result
        if not allowed:
            x.rl = (self.policy, 0, wait)
            raise Rejection(self.status, self.reason, ((b"Retry-After", retry_after_value(wait)),))
        rl = x.rl
        if rl is None or remaining < rl[1]:
            x.rl = (self.policy, remaining, reset)

    def _fallback(self, x: Any, now: float) -> None:
        if not self.allow_on_failure:
            self.local.check(x, now)


def _pools(ctx: CompileContext) -> dict[str, StoreHandle | ClusterHandle]:
    cached: Optional[dict[str, StoreHandle | ClusterHandle]] = ctx.shared.get("redis_pools")
    if cached is not None:
        return cached
    pools: dict[str, StoreHandle | ClusterHandle] = {}
    ctx.shared["redis_pools"] = pools
    raw = ctx.root.extra_config.get("redis")
    if raw is None:
        return pools
    path = '$.extra_config["redis"]'
    root = ctx.problems.convert(raw, RedisRoot, path)
    if root is None:
        return pools
    timeout = ctx.redis_timeout
    for i, rawp in enumerate(root.connection_pools):
        ppath = f"{path}.connection_pools[{i}]"
        p = ctx.problems.convert(rawp, PoolBlock, ppath)
        if p is None:
            continue
        address = parse_address(p.address)
        if address is None:
            ctx.problems.error(f"{ppath}.address", f"expected 'host:port', found {p.address!r}")
            continue
        host, port = address
        if p.pool_size < 1:
            ctx.problems.error(f"{ppath}.pool_size", f"expected an integer >= 1, found {p.pool_size}")
            continue
        dial = ctx.problems.duration(p.dial_timeout, f"{ppath}.dial_timeout", 5.0, True)
        if p.name in pools:
            ctx.problems.error(f"{ppath}.name", f"pool {p.name!r} is defined twice")
            continue
        pools[p.name] = StoreHandle(PoolConfig(p.name, host, port, p.db, p.pool_size, dial, p.user_name, p.password),
                                    timeout)
    for i, rawc in enumerate(root.clusters):
        cpath = f"{path}.clusters[{i}]"
        c = ctx.problems.convert(rawc, ClusterBlock, cpath)
        if c is None:
            continue
        addresses = []
        for j, a in enumerate(c.addresses):
            addr = parse_address(a)
            if addr is None:
                ctx.problems.error(f"{cpath}.addresses[{j}]", f"expected 'host:port', found {a!r}")
            else:
                addresses.append(addr)
        if not c.addresses:
            ctx.problems.error(f"{cpath}.addresses", "expected the 'host:port' of at least one cluster node, "
                                                     "found none")
        if c.pool_size < 1:
            ctx.problems.error(f"{cpath}.pool_size", f"expected an integer >= 1, found {c.pool_size}")
        if c.max_redirects < 0:
            ctx.problems.error(f"{cpath}.max_redirects", f"expected an integer >= 0, found {c.max_redirects}")
        elif isinstance(rawc, dict) and "max_redirects" in rawc:
            ctx.problems.warn(f"{cpath}.max_redirects", "fastproxy follows no redirect within a decision: a MOVED or "
                              "ASK reply makes that decision local and refreshes the slot map")
        dial = ctx.problems.duration(c.dial_timeout, f"{cpath}.dial_timeout", 5.0, True)
        if c.name in pools:
            ctx.problems.error(f"{cpath}.name", f"{c.name!r} already names a pool or cluster: names must be unique")
            continue
        if len(addresses) != len(c.addresses) or not addresses or c.pool_size < 1 or c.max_redirects < 0:
            continue
        pools[c.name] = ClusterHandle(ClusterConfig(c.name, addresses, c.max_redirects, c.pool_size, dial,
                                                    c.user_name, c.password), timeout)
    return pools


def compile_redis(raw: Any, path: str, ctx: CompileContext, scope: str, route: Optional[RouteDraft],
                  shared_key: str) -> Sequence[Policy]:
    block = ctx.problems.convert(raw, RedisLimitBlock, path)
    check_fields(ctx, raw, path, RedisLimitBlock)
    if block is None:
        return []
    name = block.connection_name or block.connection_pool
    pools = _pools(ctx)
    if not name:
        ctx.problems.error(f"{path}.connection_name",
                           "expected the name of a pool or cluster in extra_config.redis, found none")
        return []
    handle = pools.get(name)
    if handle is None:
        known = ", ".join(sorted(pools)) or "none defined"
        ctx.problems.error(f"{path}.connection_name",
                           f"expected a pool or cluster of extra_config.redis ({known}), found {name!r}")
        return []
    local = compile_router_block(block, path, ctx, scope, route, shared_key + ":fallback")
    # `{` `}` escaped: a route's `{param}` would be a cluster hash tag, every key of the limit in one slot
    name = shared_key.replace("{", "%7B").replace("}", "%7D")
    return [RedisLimit(limit, handle, f"fp:{name}:{'c' if isinstance(limit, ClientLimit) else 'a'}:".encode(),
                       block.on_failure_allow) for limit in local]


def compile_service(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    return compile_redis(raw, path, ctx, "service", None, "service")


def compile_endpoint(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    assert route is not None  # an endpoint-level handler
    return compile_redis(raw, path, ctx, "endpoint", route, f"router:{route.method}:{route.name}")

"""Shared limits on a Redis Cluster (root `redis.clusters`, KrakenD enterprise).

One `ClusterStore` per cluster per worker. It keeps the cluster's slot map (through redis-py's
cluster client: `CLUSTER SHARDS`/`SLOTS` from any node that answers) and one `RedisStore` per
master node, so everything a single Redis does holds per node: decisions batched per event-loop
tick (one pipeline per node and tick), answered within `redis_timeout`, the local fallback
while a node is down, and no double spend (the deadline in each script call).

- A decision goes to the master of its key's slot (CRC16 of the key, as Redis Cluster). The keys
  of one limit carry no hash tag, so a client limit's keys spread over every slot and master.
- A master that dies or stops answering: its node's store times out and falls back to the
  local bucket, exactly as a single Redis; the other masters' slots go on being shared. The
  slot map is refreshed in the background (at most every `REFRESH_EVERY`) whenever a node
  fails or answers MOVED/ASK/CLUSTERDOWN, so once the cluster has a master for the slot again
  (a replica promoted, or the node back) its decisions are shared again.
- Before the first slot map arrives (the first decisions of a worker), decisions wait for it
  within the same `redis_timeout` budget, then fall back.
"""

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional

from redis.crc import key_slot as _crc_slot

from fastproxy.limits.redis_store import FALLBACK, PoolConfig, RedisStore, Result

if TYPE_CHECKING:
    from redis.asyncio.cluster import RedisCluster

    from fastproxy.metrics import Metrics

log = logging.getLogger("fastproxy")

REFRESH_EVERY = 0.5  # s between two refreshes of the slot map while something is wrong
SLOTS = 16384


class ClusterConfig:
    __slots__ = ("name", "addresses", "max_redirects", "pool_size", "dial_timeout", "username", "password")

    def __init__(self, name: str, addresses: list[tuple[str, int]], max_redirects: int, pool_size: int,
                 dial_timeout: float, username: Optional[str], password: Optional[str]) -> None:
        self.name = name
        self.addresses = addresses
        self.max_redirects = max_redirects
        self.pool_size = pool_size
        self.dial_timeout = dial_timeout
        self.username = username
        self.password = password


class ClusterStore:
    """A Redis Cluster's stores, per master node, in one worker; `decide` as `RedisStore`."""

    def __init__(self, cfg: ClusterConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.metrics: Optional[Metrics] = None
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.client: Optional[RedisCluster] = None
        self.slots: list[Optional[str]] = []  # slot -> "host:port" of its master ([] until known)
        self.nodes: dict[str, RedisStore] = {}  # "host:port" -> the store of that master
        self.waiting: list[tuple[bytes, float, int, int, asyncio.Future[Result], float]] = []
        self._refresh: Optional[asyncio.Task[None]] = None
        self._last_refresh = -1e9
        self._again = False  # a refresh was asked while one ran
        self.closed = False

    def start(self, metrics: "Metrics") -> None:
        self.metrics = metrics
        for store in self.nodes.values():
            store.start(metrics)

    # -- decisions ---------------------------------------------------------------------------
    def decide(self, key: bytes, rate: float, cap: int, ttl_ms: int,
               now: Optional[float] = None) -> "Optional[asyncio.Future[Result]]":
        if self.closed:
            return None
        loop = self.loop
        if loop is None:
            self.loop = loop = asyncio.get_running_loop()
        slots = self.slots
        if not slots:  # no map yet: wait for it within the decision's budget
            fut: asyncio.Future[Result] = loop.create_future()
            self.waiting.append((key, rate, cap, ttl_ms, fut, loop.time()))
            if len(self.waiting) == 1:
                loop.call_later(self.timeout, self._expire_waiting)
            self.refresh()
            return fut
        node = slots[key_slot(key)]
        if node is None:  # no master serves the slot (a failed node without a replica)
            self.refresh()
            return None
        decided = self.nodes[node].decide(key, rate, cap, ttl_ms, now)
        if decided is None:  # that master is down: decided locally, and the map looked at again soon
            self.refresh()
        return decided

    def _expire_waiting(self) -> None:
        loop = self.loop
        assert loop is not None
        now = loop.time()
        keep = []
        for item in self.waiting:
            if now - item[5] >= self.timeout - 0.001:
                if not item[4].done():
                    item[4].set_result(FALLBACK)
            else:
                keep.append(item)
        self.waiting = keep
        if keep:
            loop.call_later(self.timeout - (now - keep[0][5]), self._expire_waiting)

    def _release_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for key, rate, cap, ttl_ms, fut, asked in waiting:
            if fut.done():
                continue
            node = self.slots[key_slot(key)]
            if node is None or self.nodes[node].decide(key, rate, cap, ttl_ms, fut=fut, asked=asked) is None:
                fut.set_result(FALLBACK)

    # -- the slot map ------------------------------------------------------------------------
    def refresh(self) -> None:
        """Fetch the slot map again in the background (at most every REFRESH_EVERY)."""
        loop = self.loop
        if loop is None or self.closed:
            return
        if self._refresh is not None:
            self._again = True
            return
        wait = self._last_refresh + REFRESH_EVERY - loop.time()
        self._refresh = loop.create_task(self._fetch(max(0.0, wait) if self.slots else 0.0))

    def _client(self) -> "RedisCluster":
        if self.client is None:
            from redis.asyncio.cluster import ClusterNode, RedisCluster
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            c = self.cfg
            self.client = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in c.addresses],
                                       username=c.username, password=c.password,
                                       socket_connect_timeout=c.dial_timeout,
                                       socket_timeout=max(0.5, self.timeout * 10),
                                       require_full_coverage=False, max_connections=2,
                                       retry=Retry(NoBackoff(), 0))
        return self.client

    async def _fetch(self, delay: float) -> None:
        loop = self.loop
        assert loop is not None
        try:
            while True:
                if delay:
                    await asyncio.sleep(delay)
                self._last_refresh = loop.time()
                self._again = False
                try:
                    slots = await asyncio.wait_for(self._slot_map(), max(1.0, self.cfg.dial_timeout))
                except Exception as exc:  # noqa: BLE001 - no node answers: keep the map we had
                    log.warning("redis cluster %r: slot map unavailable (%s): %s", self.cfg.name,
                                type(exc).__name__, exc)
                    slots = None
                if slots is not None:
                    self._install(slots)
                if self.waiting and self.slots:
                    self._release_waiting()
                # again while something was reported meanwhile, a slot has no master, or a
                # master of the map is down (a replica may be promoted in its place)
                if self.closed or not (self._again or self._troubled()):
                    break
                delay = REFRESH_EVERY
        finally:
            self._refresh = None

    def _troubled(self) -> bool:
        used = set(self.slots)
        return None in used or any(not self.nodes[n].up for n in used if n is not None)

    async def _slot_map(self) -> list[Optional[str]]:
        client = self._client()
        manager = client.nodes_manager
        await manager.initialize()
        slots: list[Optional[str]] = [None] * SLOTS
        for slot, nodes in manager.slots_cache.items():
            if nodes:
                slots[slot] = f"{nodes[0].host}:{nodes[0].port}"  # the primary first
        return slots

    def _install(self, slots: list[Optional[str]]) -> None:
        changed = slots != self.slots
        for node in set(slots):
            if node is not None and node not in self.nodes:
                host, _, port = node.rpartition(":")
                c = self.cfg
                store = RedisStore(PoolConfig(c.name, host, int(port), 0, c.pool_size, c.dial_timeout, c.username,
                                              c.password), self.timeout)
                store.label = f"redis cluster {c.name!r} node {node}"
                store.on_trouble = self.refresh
                if self.metrics is not None:
                    store.start(self.metrics)
                self.nodes[node] = store
        used = set(slots)
        for node in [n for n in self.nodes if n not in used]:  # no longer a master: its store goes
            self.nodes.pop(node).close()
        if changed and self.slots:
            masters = sorted({n for n in slots if n is not None})
            missing = slots.count(None)
            log.warning("redis cluster %r: slot map changed: masters %s%s", self.cfg.name, ", ".join(masters),
                        f"; {missing} slots without a master (decided locally)" if missing else "")
        self.slots = slots

    def close(self) -> None:
        """A reload replaced this cluster: stop its stores and the topology client."""
        self.closed = True
        for store in self.nodes.values():
            store.close()
        if self._refresh is not None:
            self._refresh.cancel()
        for item in self.waiting:
            if not item[4].done():
                item[4].set_result(FALLBACK)
        self.waiting = []
        if self.client is not None and self.loop is not None:
            self.loop.create_task(self.client.aclose())


def key_slot(key: bytes) -> int:
    """The cluster slot of a key (CRC16/XMODEM mod 16384, with `{hash tags}`), as Redis."""
    return int(_crc_slot(key))


def parse_address(raw: Any) -> Optional[tuple[str, int]]:
    """`host:port` (or `redis://host:port`) as a pair; None when it is not one."""
    from urllib.parse import urlsplit

    if not isinstance(raw, str) or not raw:
        return None
    addr = raw if "://" in raw else f"redis://{raw}"
    try:
        u = urlsplit(addr)
        host, port = u.hostname, u.port or 6379
    except ValueError:
        return None
    return (host, port) if host else None

"""Shared limits on Redis: one atomic script per decision, batched per event-loop tick, with a
local fallback when Redis is slow or down.

Owns the I/O of the stateful limiters (SPEC §3.6), at the edge of the limits package:
- The decision is a token bucket evaluated inside Redis by one Lua script (`SCRIPT`), with the
  same semantics as `bucket.TokenBucket` (starts full, continuous refill, capped, a refused
  take changes nothing). The clock is Redis's own `TIME`, so instances with skewed clocks agree;
  tests may pass a clock instead. Keys expire once the bucket would be full again (lossless).
- Decisions made during one loop tick go to Redis in one pipeline: one round trip for many
  requests.
- Each decision is answered within `timeout` (default 50 ms) of being asked. When Redis fails
  or is too slow, the decision falls back to the local bucket of the same limit (or is allowed,
  with `on_failure_allow`); the store marks itself down, logs the switch, counts it, stops
  asking Redis and probes it in the background; once a probe answers, it logs and switches back.
- No double spend: a decision that timed out was made locally, so Redis must not spend a token
  for it when it runs the command later (a paused Redis runs what it had queued once it
  resumes). Every script call carries its deadline on Redis's clock, and the script refuses to
  touch the bucket after it. The store knows Redis's clock as an offset from its own wall clock,
  a lower bound measured on every reply (Redis's time minus the local time the reply arrived),
  so the deadline it sends is never later than the local one; it is sent `DEADLINE_MARGIN`
  earlier still, for the reply's way back.
"""

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal, Optional

from fastproxy.limits.resp import Command, RespConnection

if TYPE_CHECKING:
    from fastproxy.metrics import Metrics

log = logging.getLogger("fastproxy")

# KEYS[1]: bucket. ARGV: rate (tokens/s), capacity, ttl (ms), n (requests asking at once),
# deadline (s on Redis's clock, 0: none), [now (s) — tests only]. Returns {admitted (<= n),
# remaining, retry_after, reset_after, now}: the same as n single takes at one instant; or
# {-1, 0, 0, 0, now} past the deadline, with the bucket untouched.
SCRIPT = """
local now
if ARGV[6] then
  now = tonumber(ARGV[6])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local deadline = tonumber(ARGV[5])
if deadline > 0 and now > deadline then
  return {-1, 0, '0', '0', string.format('%.17g', now)}
end
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local n = tonumber(ARGV[4])
local interval = 1.0 / rate
local EPS = 1e-9
local v = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = tonumber(v[1])
local last = tonumber(v[2])
if tokens == nil or last == nil then
  tokens = cap
  last = now
end
-- n takes of bucket.TokenBucket.take at one instant, with the same float operations (its
-- earliest-ready time, its EPS in seconds), so both admit exactly the same; stops at the first
-- refusal (a refused take changes nothing), so it runs at most capacity + 1 times
local k = 0
while k < n do
  local t
  if now >= last + (1.0 - tokens) * interval - EPS then
    t = tokens + (now - last) * rate
    if t > cap then
      t = cap
    elseif now < last then
      t = tokens
    end
  elseif tokens >= 1.0 then
    t = tokens
  else
    break
  end
  tokens = t - 1.0
  last = now
  k = k + 1
end
if k > 0 then
  -- %.17g: tostring() keeps 14 digits, which at epoch times (1.7e9 s) is 0.1 ms of clock
  redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'l', string.format('%.17g', last))
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
-- TokenBucket.retry_after / remaining / reset_after at now
local ready = last + (1.0 - tokens) * interval - EPS
local wait = 0
local remaining
if now < ready and tokens < 1.0 then
  wait = ready - now
  remaining = 0
else
  local held = tokens
  if now > last then held = held + (now - last) * rate end
  remaining = math.floor(held + EPS * rate)
  if remaining > cap then remaining = cap elseif remaining < 1 then remaining = 1 end
end
local reset = 0
if tokens < cap then
  reset = last + (cap - tokens) * interval - now
  if reset < 0 then reset = 0 end
end
return {k, remaining, string.format('%.17g', wait), string.format('%.17g', reset), string.format('%.17g', now)}
"""

class _Fallback(enum.Enum):
    FALLBACK = "fallback"


FALLBACK: Final = _Fallback.FALLBACK  # a decision Redis could not make in time

Decision = tuple[int, int, float, float]  # (allowed, remaining, retry_after, reset_after)
Result = Decision | Literal[_Fallback.FALLBACK]
_Args = tuple[float | str, ...]  # rate, capacity, ttl (ms)[, now]
DEADLINE_MARGIN: Final = 0.005  # s: a script call's deadline is this much before the local one (capped at timeout/10)
_Group = tuple[_Args, list["asyncio.Future[Result]"], float]  # (args, futures, first asked at)


_REDIRECTS: Final = ("MOVED ", "ASK ", "TRYAGAIN", "CLUSTERDOWN")


def _is_redirect(err: BaseException) -> bool:
    """A reply of a cluster node that does not (or no longer) serve the key's slot."""
    return str(err).startswith(_REDIRECTS)


class PoolConfig:
    __slots__ = ("name", "host", "port", "db", "pool_size", "dial_timeout", "username", "password")

    def __init__(self, name: str, host: str, port: int, db: int, pool_size: int, dial_timeout: float,
                 username: Optional[str], password: Optional[str]) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.db = db
        self.pool_size = pool_size
        self.dial_timeout = dial_timeout
        self.username = username
        self.password = password


class RedisStore:
    """One Redis connection pool per worker, shared by every limit naming it."""

    def __init__(self, cfg: PoolConfig, timeout: float) -> None:
        self.cfg = cfg
        self.timeout = timeout
        self.up = True
        self.pending: dict[bytes, _Group] = {}
        self.in_flight = 0
        self.flush_scheduled = False
        # set together by the first decision (_ensure), before any batch; the loop is then
        # passed to what runs on it
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.conn: Optional[RespConnection] = None
        self.sha: Optional[str] = None
        self.metrics: Optional[Metrics] = None
        self._probe_task: Optional[asyncio.Task[None]] = None
        # Redis's clock minus ours (time.time()), a lower bound from the last replies; None
        # until measured (the first batch asks TIME first)
        self.offset: Optional[float] = None
        self.expired = 0  # script calls Redis ran past their deadline (not spent: decided locally)
        # a cluster node's store: told when MOVED/ASK is seen or the node goes down
        self.on_trouble: Optional[Callable[[], None]] = None
        self.label = f"redis {cfg.name!r} at {cfg.host}:{cfg.port}"

    def start(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def _ensure(self) -> asyncio.AbstractEventLoop:
        loop = self.loop
        if self.conn is None or loop is None:
            c = self.cfg
            self.loop = loop = asyncio.get_running_loop()
            # one pipelined connection: batches in flight share it, in order (`resp`); no
            # retries or backoff: a failure must reach the fallback at once
            self.conn = RespConnection(c.host, c.port, c.dial_timeout, c.db, c.username, c.password)
            self.sha = None
        return loop

    def decide(self, key: bytes, rate: float, cap: int, ttl_ms: int, now: Optional[float] = None,
               fut: "Optional[asyncio.Future[Result]]" = None,
               asked: float = 0.0) -> "Optional[asyncio.Future[Result]]":
        """A future of (allowed, remaining, retry_after, reset_after) or FALLBACK; None when down.

        Decisions on one key within a tick share one script call asking for n tokens. (`fut`
        and `asked`: a decision that waited elsewhere first, a cluster's topology, answered
        here within `timeout` of when it was first asked.)
        """
        if not self.up:
            return None
        loop = self._ensure()
        if fut is None:
            fut = loop.create_future()
        group = self.pending.get(key)
        if group is None:
            args: _Args = (rate, cap, ttl_ms) if now is None else (rate, cap, ttl_ms, repr(now))
            self.pending[key] = (args, [fut], asked or loop.time())
        else:
            group[1].append(fut)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush, loop)
        return fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self.flush_scheduled = False
        if not self.pending:
            return
        if self.in_flight >= self.cfg.pool_size:
            return  # the next finishing batch flushes again
        batch, self.pending = list(self.pending.items()), {}
        self.in_flight += 1
        conn = self.conn
        if conn is None or not conn.ready() or self.sha is None or self.offset is None:
            loop.create_task(self._run(loop, batch))  # connect, load the script, read the clock first
            return
        # the common case, without a task: the batch's replies and its timeout are callbacks
        budget = self.timeout - (loop.time() - min(g[2] for _, g in batch))
        if budget <= 0:
            self._down(loop, TimeoutError())
            self._answer(loop, batch, [])
            return
        try:
            fut = conn.send(self._commands(batch, budget))
        except ConnectionError as exc:
            self._down(loop, exc)
            self._answer(loop, batch, [])
            return
        timer = loop.call_later(budget, self._expired, loop, batch, fut)
        fut.add_done_callback(lambda f: self._replied(loop, batch, f, timer))

    def _expired(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, _Group]],
                 fut: "asyncio.Future[list[Any]]") -> None:
        if fut.done():
            return
        fut.cancel()  # its replies, when they come, are read and dropped
        self._down(loop, TimeoutError())
        self._answer(loop, batch, [])

    def _replied(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, _Group]],
                 fut: "asyncio.Future[list[Any]]", timer: asyncio.TimerHandle) -> None:
        if fut.cancelled():
            return  # timed out: answered by _expired
        timer.cancel()
        exc = fut.exception()
        if exc is not None:
            self._down(loop, exc)
            self._answer(loop, batch, [])
        else:
            results = fut.result()
            self._check_scripts(results)
            self._answer(loop, batch, results)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, _Group]]) -> None:
        results: list[Any] = []
        try:
            budget = self.timeout - (loop.time() - min(g[2] for _, g in batch))
            try:
                if budget <= 0:
                    raise TimeoutError
                results = await asyncio.wait_for(self._execute(batch, budget), budget)
            except Exception as exc:  # noqa: BLE001 - any Redis failure means: decide locally
                self._down(loop, exc)
                results = []
        finally:
            self._answer(loop, batch, results)

    def _answer(self, loop: asyncio.AbstractEventLoop, batch: list[tuple[bytes, _Group]], results: list[Any]) -> None:
        """Each decision of `batch` from its script reply; FALLBACK for those without one."""
        try:
            arrived = time.time()
            offset: Optional[float] = None
            redirected = False
            for i, (_, (args, futs, _)) in enumerate(batch):
                r = results[i] if i < len(results) else None
                if r is None or isinstance(r, Exception):
                    if r is not None and _is_redirect(r):
                        redirected = True
                    continue  # FALLBACK, below
                if len(args) == 3:  # on Redis's clock (not an injected one)
                    sample = float(r[4]) - arrived
                    offset = sample if offset is None else max(offset, sample)
                admitted = int(r[0])
                if admitted < 0:  # run past its deadline: Redis spent nothing, decided locally
                    self.expired += 1
                    continue
                remaining, wait, reset = int(r[1]), float(r[2]), float(r[3])
                for j, fut in enumerate(futs):
                    if not fut.done():
                        if j < admitted:
                            # the j-th admitted of this tick sees what the later ones left
                            fut.set_result((1, remaining + admitted - 1 - j, 0.0, reset))
                        else:
                            fut.set_result((0, 0, wait, reset))
            if offset is not None:
                self.offset = offset
            if redirected and self.on_trouble is not None:
                self.on_trouble()  # the slot moved: the cluster refreshes its map
        finally:
            # every decision is answered, whatever happened above
            for _, (_, futs, _) in batch:
                for fut in futs:
                    if not fut.done():
                        fut.set_result(FALLBACK)
            self.in_flight -= 1
            if self.pending and not self.flush_scheduled:
                self.flush_scheduled = True
                loop.call_soon(self._flush, loop)

    def _commands(self, batch: list[tuple[bytes, _Group]], budget: float) -> list[Command]:
        """The batch's script calls, each with the deadline `budget` from now on Redis's clock."""
        assert self.offset is not None and self.sha is not None
        deadline = repr(time.time() + self.offset + budget - min(DEADLINE_MARGIN, self.timeout / 10))
        sha = self.sha
        commands: list[Command] = []
        for key, (args, futs, _) in batch:
            # an injected clock (tests) has no deadline: its times are not Redis's
            commands.append(("EVALSHA", sha, 1, key, args[0], args[1], args[2], len(futs),
                             deadline if len(args) == 3 else "0", *args[3:]))
        return commands

    async def _execute(self, batch: list[tuple[bytes, _Group]], budget: float) -> list[Any]:
        """The script's replies (or the error reply of each failed call), in batch order."""
        conn = self.conn
        assert conn is not None  # made with the loop, before the first batch
        started = time.monotonic()
        if self.offset is None:  # Redis's clock, once: every reply refreshes it from then on
            (now,) = await conn.call([("TIME",)])
            if isinstance(now, Exception):
                raise now
            self.offset = int(now[0]) + int(now[1]) / 1e6 - time.time()
        if self.sha is None:
            (sha,) = await conn.call([("SCRIPT", "LOAD", SCRIPT)])
            if isinstance(sha, Exception):
                raise sha
            self.sha = sha.decode() if isinstance(sha, bytes) else str(sha)
        results = await conn.call(self._commands(batch, budget - (time.monotonic() - started)))
        self._check_scripts(results)
        return results

    def _check_scripts(self, results: list[Any]) -> None:
        if any(isinstance(r, Exception) and str(r).startswith("NOSCRIPT") for r in results):
            self.sha = None  # the server lost its scripts (restart): load again next batch

    def close(self) -> None:
        """Stop probing and close the pool (a reload replaced this store); decisions still
        pending are answered by the local fallback."""
        self.up = False
        if self._probe_task is not None:
            self._probe_task.cancel()
        if self.conn is not None:
            self.conn.close()

    def _down(self, loop: asyncio.AbstractEventLoop, exc: BaseException) -> None:
        if not self.up:
            return
        self.up = False
        why = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
        log.warning("%s unavailable (%s): limits fall back to local buckets", self.label, why)
        self._count("fallback")
        if self.on_trouble is not None:
            self.on_trouble()
        if self._probe_task is None:
            self._probe_task = loop.create_task(self._probe())

    async def _probe(self) -> None:
        conn = self.conn
        assert conn is not None  # the store went down after asking Redis
        try:
            while not self.up:
                await asyncio.sleep(0.5)
                try:
                    # connections opened before the failure are dead (no client-side retries
                    # would hide it): drop them all, then probe on a fresh one
                    conn.close()
                    # the script and the clock too, here, outside any decision's budget (a
                    # restarted server has no scripts; a slow one must not spend two round
                    # trips of a decision on them)
                    pong, sha, now = await asyncio.wait_for(
                        conn.call([("PING",), ("SCRIPT", "LOAD", SCRIPT), ("TIME",)]), max(0.5, self.timeout * 4))
                    if any(isinstance(r, Exception) for r in (pong, sha, now)):  # LOADING, ...
                        continue
                except Exception:  # noqa: BLE001
                    continue
                self.sha = sha.decode() if isinstance(sha, bytes) else str(sha)
                self.offset = int(now[0]) + int(now[1]) / 1e6 - time.time()  # (a lower bound, as on replies)
                self.up = True
                log.warning("%s answers again: limits are shared again", self.label)
                self._count("redis")
        finally:
            self._probe_task = None

    def _count(self, to: str) -> None:
        if self.metrics is not None:
            key = (self.cfg.name, to)
            self.metrics.redis_switches[key] = self.metrics.redis_switches.get(key, 0) + 1

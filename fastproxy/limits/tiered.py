"""Tiered limits (`qos/ratelimit/tiered`, root or endpoint) as a request policy.

The `tier_key` header picks the first matching tier (`literal`, `regex` with RE2: unanchored
search, `*`: any request); that tier's limits run, local (`ratelimit`) or shared through Redis
(`ratelimit_redis`); a request that matches no tier is refused with 403. A tier's limits may
wait on Redis, so the tier runs its own chain (`_run`) and resumes it when a decision arrives.
The compiled `TieredCheck` is frozen; `bind` gives its live form (`LiveTiered`), whose tiers
hold the live checks of their limits.
"""

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import msgspec

from fastproxy import policies
from fastproxy.limits.policy import RouterLimitBlock, check_fields, compile_router_block
from fastproxy.limits.redis import compile_redis
from fastproxy.policies import Check, CompileContext, Policy, Rejection, RouteDraft, chain

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder


class TierBlock(msgspec.Struct, frozen=True):
    tier_value: str = ""
    tier_value_as: str = "literal"
    ratelimit: Optional[dict[str, Any]] = None
    ratelimit_redis: Optional[dict[str, Any]] = None


class TieredBlock(msgspec.Struct, frozen=True):
    tier_key: str
    tiers: list[Any]


class _Matcher:
    """How a tier matches the `tier_key` value: `*` any request, `literal` equal, `regex` RE2 search."""

    __slots__ = ()
    kind: str
    value: bytes
    regex: Any

    def matches(self, value: Optional[bytes]) -> bool:
        if self.kind == "*":
            return True
        if value is None:
            return False
        if self.kind == "literal":
            return value == self.value
        return self.regex.search(value) is not None


@dataclass(frozen=True, slots=True)
class Tier(_Matcher):
    kind: str
    value: bytes
    regex: Any  # a compiled re2 pattern, or None
    checks: tuple[Policy, ...]
    name: str


M = TypeVar("M", bound=_Matcher)


def select_tier(tiers: Sequence[M], value: Optional[bytes]) -> Optional[M]:
    for tier in tiers:
        if tier.matches(value):
            return tier
    return None


@dataclass(frozen=True, slots=True)
class TieredCheck:
    key: bytes
    tiers: tuple[Tier, ...]
    order: int = policies.ORDER_TIERED

    def bind(self, binder: "Binder") -> "LiveTiered":
        return LiveTiered(self.key, tuple(LiveTier(t.kind, t.value, t.regex, binder.chain(t.checks))
                                          for t in self.tiers))


class LiveTier(_Matcher):
    __slots__ = ("kind", "value", "regex", "checks")

    def __init__(self, kind: str, value: bytes, regex: Any, checks: tuple[Check, ...]) -> None:
        self.kind = kind
        self.value = value
        self.regex = regex
        self.checks = checks


class LiveTiered:
    __slots__ = ("key", "tiers")

    def __init__(self, key: bytes, tiers: tuple[LiveTier, ...]) -> None:
        self.key = key
        self.tiers = tiers

    def check(self, x: Any, now: float) -> "Optional[asyncio.Future[Any]]":
        value = None
        key = self.key
        for lname, _, v in x.headers:
            if lname == key:
                value = v
                break
        tier = select_tier(self.tiers, value)
        if tier is None:
            raise Rejection(403, "no matching tier")
        return _run(x, tier.checks, now)

    def complete(self, x: Any, result: Any, now: float) -> None:
        if result is not None:
            raise result


def _run(x: Any, checks: tuple[Check, ...], now: float) -> "Optional[asyncio.Future[Any]]":
    """Run a tier's chain: None when all passed synchronously (raises Rejection), else a
    future of None or the Rejection."""
    pending = chain.run(checks, x, 0, now)
    if pending is None:
        return None
    loop = asyncio.get_running_loop()
    outer: asyncio.Future[Any] = loop.create_future()

    def done(err: Optional[BaseException]) -> None:
        if isinstance(err, Rejection) or err is None:
            outer.set_result(err)
        else:
            outer.set_exception(err)

    chain.follow(checks, x, pending, loop.time, done)
    return outer


def _tiered(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft], scope: str) -> Sequence[Policy]:
    import re2

    from fastproxy.security.botdetector import _options  # RE2 options shared with the bot detector

    block = ctx.problems.convert(raw, TieredBlock, path)
    if block is None:
        return []
    if not block.tiers:
        ctx.problems.error(f"{path}.tiers", "expected at least one tier, found none")
        return []
    base = f"tiered:{scope}" + (f":{route.method}:{route.name}" if route is not None else "")
    check_fields(ctx, raw, path, TieredBlock)
    tiers: list[Tier] = []
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
            checks: Sequence[Policy] = [] if b is None else compile_router_block(b, rpath, ctx, scope, route, key)
        else:
            checks = compile_redis(t.ratelimit_redis, f"{tpath}.ratelimit_redis", ctx, scope, route, key)
        tiers.append(Tier(kind, t.tier_value.encode(), regex, policies.order(checks), t.tier_value))
    if not block.tier_key:
        ctx.problems.error(f"{path}.tier_key", "expected a header name, found none")
        return []
    return [TieredCheck(block.tier_key.lower().encode(), tuple(tiers))]


def compile_service(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    return _tiered(raw, path, ctx, None, "service")


def compile_endpoint(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    return _tiered(raw, path, ctx, route, "endpoint")

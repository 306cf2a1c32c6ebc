"""Security namespaces as request policies: client IP (root `router`), `security/ip-filter`,
`security/geofence`, `security/bot-detector`, and KrakenD enterprise's `plugin/http-server`
forms of `ip-filter` and `geoip`.

All rejections are 403 with an empty body, counted per reason. The policies are the pure
objects of this package; this module only compiles blocks into them (frozen policy objects) and
adapts them to the request (`check(x, now)`). The IP filter's verdict cache is per worker
(`LiveIPFilter`); the others have no state of their own and are their own live form.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, TypeVar

import msgspec

from fastproxy import policies
from fastproxy.policies import CompileContext, Policy, Rejection, RouteDraft
from fastproxy.security.botdetector import BotDetector, check_pattern
from fastproxy.security.cidr import parse_network
from fastproxy.security.clientip import ClientIPResolver
from fastproxy.security.geo import GeoDB, Geofence, check_country
from fastproxy.security.ipfilter import IPFilter

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder

T = TypeVar("T")


class IPFilterBlock(msgspec.Struct, frozen=True):
    CIDR: list[str] = []
    allow: bool = False
    client_ip_headers: Optional[list[str]] = None
    trusted_proxies: Optional[list[str]] = None


class BotBlock(msgspec.Struct, frozen=True):
    allow: list[str] = []
    deny: list[str] = []
    patterns: list[str] = []
    cache_size: int = 0
    empty_user_agent_is_bot: bool = False


class GeofenceBlock(msgspec.Struct, frozen=True):
    db_path: str = ""
    allow_countries: Optional[list[str]] = None
    deny_countries: Optional[list[str]] = None
    unknown: str = "allow"


class GeoIPBlock(msgspec.Struct, frozen=True):
    citydb_path: str = ""


@dataclass(frozen=True, slots=True)
class IPFilterCheck:
    order: int
    filter: IPFilter
    resolver: Optional[ClientIPResolver]
    reason: str

    def bind(self, binder: "Binder") -> "LiveIPFilter":
        return LiveIPFilter(self)


class LiveIPFilter:
    """An IPFilterCheck in one worker. Verdicts are cached per address (bounded: cleared when
    full), since clients repeat; the cache starts empty with each configuration."""

    __slots__ = ("filter", "resolver", "reason", "verdicts")
    CACHE = 10_000

    def __init__(self, compiled: IPFilterCheck) -> None:
        self.filter = compiled.filter
        self.resolver = compiled.resolver
        self.reason = compiled.reason
        self.verdicts: dict[Optional[str], bool] = {}

    def check(self, x: Any, now: float) -> None:
        r = self.resolver
        ip = x.client_ip if r is None else r.resolve(x.conn.peer, x.headers)
        ok = self.verdicts.get(ip)
        if ok is None:
            ok = self.filter.permits(ip)
            if len(self.verdicts) >= self.CACHE:
                self.verdicts.clear()
            self.verdicts[ip] = ok
        if not ok:
            raise Rejection(403, self.reason)


@dataclass(frozen=True, slots=True)
class GeofenceCheck:
    order: int
    fence: Geofence
    reason: str

    def bind(self, binder: "Binder") -> "GeofenceCheck":
        return self  # no state of its own (the database's cache is the reader's)

    def check(self, x: Any, now: float) -> None:
        if not self.fence.permits(x.client_ip):
            raise Rejection(403, self.reason)


@dataclass(frozen=True, slots=True)
class BotCheck:
    order: int
    detector: BotDetector
    reason: str

    def bind(self, binder: "Binder") -> "BotCheck":
        return self  # no state of its own (the verdict cache is the detector's)

    def check(self, x: Any, now: float) -> None:
        if self.detector.is_bot(x.ua):
            raise Rejection(403, self.reason)


@dataclass(frozen=True, slots=True)
class GeoIPHeader:
    """Never rejects: adds `X-Geoip` (the JSON record of the client IP) to the upstream request."""

    db: GeoDB
    order: int = policies.ORDER_IP_FILTER - 1

    def bind(self, binder: "Binder") -> "GeoIPHeader":
        return self

    def check(self, x: Any, now: float) -> None:
        headers = x.headers
        for h in headers:
            if h[0] == b"x-geoip":
                # the header is ours: a client's own X-Geoip never reaches the backend (with
                # `input_headers` naming it or `*` it would otherwise pass, spoofing the record)
                x.headers = [h for h in headers if h[0] != b"x-geoip"]
                break
        value = self.db.geoip_header(x.client_ip) if x.client_ip else None
        if value is not None:
            x.up_extra = (x.up_extra or b"") + b"X-Geoip: " + value + b"\r\n"


def _guard(ctx: CompileContext, path: str, fn: Callable[..., T], *args: Any, **kw: Any) -> Optional[T]:
    try:
        return fn(*args, **kw)
    except ValueError as exc:
        ctx.problems.error(path, str(exc))
        return None


def _ip_filter(block: IPFilterBlock, path: str, ctx: CompileContext) -> list[Policy]:
    if not block.CIDR:
        ctx.problems.error(f"{path}.CIDR", "expected a list of networks or addresses, found none")
        return []
    ok = ctx.problems.each(block.CIDR, f"{path}.CIDR", parse_network)
    if block.trusted_proxies is not None:
        ok = ctx.problems.each(block.trusted_proxies, f"{path}.trusted_proxies", parse_network) and ok
    if not ok:
        return []
    flt = _guard(ctx, f"{path}.CIDR", IPFilter, block.CIDR, block.allow)
    resolver = None
    if block.trusted_proxies is not None or block.client_ip_headers is not None:
        trusted = block.trusted_proxies if block.trusted_proxies is not None else list(ctx.router.trusted_proxies)
        resolver = _guard(ctx, path, ClientIPResolver, trusted,
                          block.client_ip_headers if block.client_ip_headers is not None
                          else list(ctx.router.remote_ip_headers))
    if flt is None:
        return []
    return [IPFilterCheck(policies.ORDER_IP_FILTER, flt, resolver, "ip filter")]


def compile_ip_filter(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.control_block(raw, IPFilterBlock, path)
    return [] if block is None else _ip_filter(block, path, ctx)


def compile_bot_detector(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.control_block(raw, BotBlock, path)
    if block is None or not ctx.problems.each(block.patterns, f"{path}.patterns", check_pattern):
        return []
    det = _guard(ctx, path, BotDetector, block.allow, block.deny, block.patterns, block.cache_size,
                 block.empty_user_agent_is_bot)
    if det is None:
        return []
    order = policies.ORDER_BOT_ENDPOINT if route is not None else policies.ORDER_BOT_SERVICE
    return [BotCheck(order, det, "bot detector")]


def compile_geofence(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    block = ctx.problems.control_block(raw, GeofenceBlock, path)
    if block is None:
        return []
    if block.allow_countries is not None and block.deny_countries is not None:
        ctx.problems.error(path, "expected allow_countries or deny_countries, found both: give one")
        return []
    listed = "allow_countries" if block.allow_countries is not None else "deny_countries"
    if not ctx.problems.each(getattr(block, listed) or [], f"{path}.{listed}", check_country):
        return []
    if not block.db_path:
        ctx.problems.error(f"{path}.db_path", "expected the path of a MaxMind database, found none")
        return []
    if block.unknown not in ("allow", "deny"):
        ctx.problems.error(f"{path}.unknown", f"expected 'allow' or 'deny', found {block.unknown!r}")
        return []
    db = _geodb_at(ctx, block.db_path, f"{path}.db_path")
    if db is None:
        return []
    fence = _guard(ctx, path, Geofence, db, block.allow_countries, block.deny_countries, block.unknown)
    return [] if fence is None else [GeofenceCheck(policies.ORDER_GEOFENCE, fence, "geofence")]


def _geodb_at(ctx: CompileContext, db_path: str, path: str) -> Optional[GeoDB]:
    cache: dict[str, Optional[GeoDB]] = ctx.shared.setdefault("geodbs", {})
    if db_path not in cache:
        cache[db_path] = _guard(ctx, path, GeoDB, db_path)
    return cache[db_path]


def compile_http_server(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    if not isinstance(raw, dict):
        ctx.problems.error(path, f"expected an object, found {type(raw).__name__}")
        return []
    names = raw.get("name", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        names = []  # unreadable: config.namespaces.fail_closed refuses it
    out: list[Policy] = []
    for n in names:
        if n == "ip-filter":
            block = ctx.problems.control_block(raw.get("ip-filter", {}), IPFilterBlock, f'{path}["ip-filter"]')
            if block is not None:
                out.extend(_ip_filter(block, f'{path}["ip-filter"]', ctx))
        elif n == "geoip":
            block = ctx.problems.convert(raw.get("geoip", {}), GeoIPBlock, f"{path}.geoip")
            if block is None:
                continue
            if not block.citydb_path:
                ctx.problems.error(f"{path}.geoip.citydb_path", "expected the path of a MaxMind database, found none")
                continue
            db = _geodb_at(ctx, block.citydb_path, f"{path}.geoip.citydb_path")
            if db is not None:
                out.append(GeoIPHeader(db))
        # any other plugin: an error (or accepted) in config.namespaces.fail_closed
    return out


def client_ip_resolver(ctx: CompileContext) -> Optional[ClientIPResolver]:
    """Root `router`: trusted_proxies / remote_ip_headers / forwarded_by_client_ip (SPEC §3.9)."""
    r = ctx.router
    if not r.trusted_proxies or r.forwarded_by_client_ip is False:
        return None
    if not ctx.problems.each(r.trusted_proxies, '$.extra_config["router"].trusted_proxies', parse_network):
        return None
    return _guard(ctx, '$.extra_config["router"].trusted_proxies', ClientIPResolver, list(r.trusted_proxies),
                  list(r.remote_ip_headers))

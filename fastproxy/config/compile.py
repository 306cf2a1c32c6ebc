"""Compile decoded configuration into one immutable runtime Snapshot.

Owns every check of meaning (durations, ranges, patterns, hosts, namespaces) and collects all
problems before failing, so `fastproxy check` lists every error at once, each with its JSON path.
Nothing here runs per request: the server reaches the compiled route table, the per-route
backend templates and policy chains through the Snapshot, and a reload swaps that reference.

Extension: a namespace in `extra_config` is compiled by the handler registered for its level in
`policies.py`; handlers add policy objects to the route's chain in SPEC order.
"""

from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import msgspec

from fastproxy.config import schema
from fastproxy.config.durations import parse_duration
from fastproxy.config.load import ConfigError, load_file
from fastproxy.routing import PatternError, RouteTable, parse_pattern

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}


class Problems:
    """Collects errors and warnings, each prefixed with its JSON path."""

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, msg: str) -> None:
        self.errors.append(f"{path}: {msg}")

    def warn(self, path: str, msg: str) -> None:
        self.warnings.append(f"{path}: {msg}")

    def convert(self, raw: Any, typ: type, path: str) -> Any:
        """msgspec.convert with the error re-rooted at `path`; None when invalid."""
        try:
            return msgspec.convert(raw, typ, strict=False)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            where = path
            if " - at `$" in msg:
                msg, _, rest = msg.rpartition(" - at `$")
                where = path + rest.rstrip("`")
            self.error(where, _expected_found(msg))
            return None

    def duration(self, raw: Any, path: str, default: float, positive: bool = False) -> float:
        if raw is None:
            return default
        try:
            value = parse_duration(raw)
        except ValueError as exc:
            self.error(path, str(exc))
            return default
        if value < 0 or (positive and value == 0):
            self.error(path, f"expected a {'positive' if positive else 'non-negative'} duration, found {raw!r}")
            return default
        return value

    def positive_int(self, value: int, path: str, minimum: int = 1) -> int:
        if value < minimum:
            self.error(path, f"expected an integer >= {minimum}, found {value}")
        return value


def _expected_found(msg: str) -> str:
    # msgspec says "Expected `int`, got `str`": keep its facts, in our words.
    if msg.startswith("Expected `") and ", got `" in msg:
        exp, _, got = msg.partition(", got ")
        return f"expected {exp[len('Expected '):].strip('`')}, found {got.strip('`')}"
    if msg.startswith("Object missing required field `"):
        return f"required field '{msg.split('`')[1]}' is missing"
    if msg.startswith("Object contains unknown field `"):
        return f"unknown field '{msg.split('`')[1]}'"
    return msg[:1].lower() + msg[1:]


@dataclass(frozen=True)
class Target:
    """One backend host: where to connect and what to send as Host."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    key: str  # "scheme://host:port", the pool and breaker identity


@dataclass(frozen=True)
class Protocol:
    """Protocol limits and timeouts of SPEC §4 (seconds, bytes)."""

    max_request_line: int
    max_header_size: int
    max_head_size: int
    max_headers: int
    max_body_size: int
    max_connections: int
    read_header_timeout: float
    idle_timeout: float
    connect_timeout: float
    upstream_idle_timeout: float
    max_idle_per_host: int
    drain_timeout: float
    access_log: bool
    ratelimit_headers: bool
    return_error_msg: bool


class Route:
    """What one (endpoint, method) needs per request, all precomputed."""

    __slots__ = ("name", "method", "timeout", "targets", "upstream_method", "template",
                 "forward_headers", "header_names", "query_mode", "query_names", "wildcard",
                 "checks", "backend_checks", "breakers", "rr", "path_prefix")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


QUERY_NONE, QUERY_ALL, QUERY_LIST = 0, 1, 2


@dataclass
class Snapshot:
    source: str
    listen_ip: str
    port: int
    workers: int
    admin_ip: str
    admin_port: int
    protocol: Protocol
    routes: RouteTable
    route_list: list
    targets: dict  # key -> Target
    client_ip: Any  # ClientIPResolver or None
    warnings: list = field(default_factory=list)
    state: dict = field(default_factory=dict)  # named limiter/breaker state, kept across reloads


def _parse_host(raw: str, path: str, problems: Problems) -> Optional[Target]:
    if not isinstance(raw, str) or "://" not in raw:
        problems.error(path, f"expected 'scheme://host:port', found {raw!r}")
        return None
    u = urlsplit(raw)
    if u.scheme not in ("http", "https"):
        problems.error(path, f"expected an http:// or https:// host, found {raw!r}")
        return None
    if not u.hostname or (u.path not in ("", "/")) or u.query:
        problems.error(path, f"expected 'scheme://host:port' with no path, found {raw!r}")
        return None
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        problems.error(path, f"invalid port in {raw!r}")
        return None
    default_port = port == (443 if u.scheme == "https" else 80)
    hostname = u.hostname
    shown = f"[{hostname}]" if ":" in hostname else hostname
    host_header = shown if default_port else f"{shown}:{port}"
    return Target(u.scheme, hostname, port, host_header.encode(), f"{u.scheme}://{shown}:{port}")


def _template(url_pattern: str, params: set, path: str, problems: Problems) -> Optional[tuple]:
    if not url_pattern.startswith("/"):
        problems.error(path, f"expected a path starting with '/', found {url_pattern!r}")
        return None
    parts: list = []
    rest = url_pattern
    while rest:
        i = rest.find("{")
        if i < 0:
            parts.append(rest.encode())
            break
        j = rest.find("}", i)
        if j < 0:
            problems.error(path, f"unclosed '{{' in {url_pattern!r}")
            return None
        if i:
            parts.append(rest[:i].encode())
        name = rest[i + 1:j]
        if name not in params:
            problems.error(path, f"placeholder {{{name}}} is not a parameter of the endpoint")
            return None
        parts.append(name)
        rest = rest[j + 1:]
    return tuple(parts)


def compile_config(raw: Any, source: str = "<config>") -> Snapshot:
    """Compile raw decoded data; raise ConfigError listing every problem."""
    from fastproxy import policies

    problems = Problems(source)
    if not isinstance(raw, dict):
        raise ConfigError([f"$: expected an object at the top level, found {type(raw).__name__}"])
    root = problems.convert(raw, schema.Root, "$")
    if root is None:
        raise ConfigError(problems.errors)
    if root.version != 3:
        problems.error("$.version", f"expected 3 (KrakenD v2 format), found {root.version}")
    if not 0 <= root.port <= 65535:
        problems.error("$.port", f"expected a TCP port 0-65535, found {root.port}")
    for key in raw:
        if key == "$schema":
            continue
        if key in schema.IGNORED_ROOT_FIELDS:
            problems.warn(f"$.{key}", "recognised KrakenD field, not implemented by fastproxy: ignored")
        elif key not in schema.Root.__struct_fields__:
            problems.warn(f"$.{key}", "unknown field: ignored")

    extra = root.extra_config
    settings = problems.convert(extra.get("fastproxy", {}), schema.Settings, '$.extra_config["fastproxy"]')
    settings = settings or schema.Settings()
    router_opts = problems.convert(extra.get("router", {}), schema.RouterOptions, '$.extra_config["router"]')
    router_opts = router_opts or schema.RouterOptions()
    sp = '$.extra_config["fastproxy"]'
    for name in ("max_request_line", "max_header_size", "max_head_size", "max_headers", "max_body_size",
                 "max_connections"):
        problems.positive_int(getattr(settings, name), f"{sp}.{name}")
    problems.positive_int(settings.workers, f"{sp}.workers")
    proto = Protocol(
        max_request_line=settings.max_request_line,
        max_header_size=settings.max_header_size,
        max_head_size=settings.max_head_size,
        max_headers=settings.max_headers,
        max_body_size=settings.max_body_size,
        max_connections=settings.max_connections,
        read_header_timeout=_pick(problems, settings.read_header_timeout, f"{sp}.read_header_timeout",
                                  root.read_header_timeout, "$.read_header_timeout", 10.0),
        idle_timeout=_pick(problems, settings.idle_timeout, f"{sp}.idle_timeout",
                           root.idle_timeout, "$.idle_timeout", 15.0),
        connect_timeout=_pick(problems, settings.connect_timeout, f"{sp}.connect_timeout",
                              root.dialer_timeout, "$.dialer_timeout", 5.0),
        upstream_idle_timeout=problems.duration(settings.upstream_idle_timeout, f"{sp}.upstream_idle_timeout", 30.0, True),
        max_idle_per_host=settings.max_idle_per_host if settings.max_idle_per_host is not None
        else root.max_idle_connections_per_host,
        drain_timeout=problems.duration(settings.drain_timeout, f"{sp}.drain_timeout", 30.0, True),
        access_log=settings.access_log,
        ratelimit_headers=settings.ratelimit_headers,
        return_error_msg=router_opts.return_error_msg,
    )
    default_timeout = problems.duration(root.timeout, "$.timeout", 2.0, True)

    ctx = policies.CompileContext(problems, raw_root=raw, root=root, router=router_opts)
    service_checks = policies.compile_level("service", extra, "$.extra_config", ctx)

    default_hosts = [t for i, h in enumerate(root.host) if (t := _parse_host(h, f"$.host[{i}]", problems))]
    routes = RouteTable()
    route_list = []
    targets: dict = {}
    for i, raw_ep in enumerate(root.endpoints):
        ep_path = f"$.endpoints[{i}]"
        ep = problems.convert(raw_ep, schema.Endpoint, ep_path)
        if ep is None:
            continue
        _warn_fields(problems, raw_ep, ep_path, schema.Endpoint, schema.IGNORED_ENDPOINT_FIELDS)
        try:
            segments, wildcard = parse_pattern(ep.endpoint)
        except PatternError as exc:
            problems.error(f"{ep_path}.endpoint", str(exc))
            continue
        method = ep.method.upper()
        if method not in METHODS:
            problems.error(f"{ep_path}.method", f"expected one of {', '.join(sorted(METHODS))}, found {ep.method!r}")
            continue
        if ep.output_encoding not in (None, "no-op"):
            problems.warn(f"{ep_path}.output_encoding",
                          f"{ep.output_encoding!r} is not implemented: the response is streamed as 'no-op'")
        if len(ep.backend) != 1:
            problems.error(f"{ep_path}.backend",
                           f"expected exactly one backend (fastproxy streams like KrakenD's no-op), found {len(ep.backend)}")
            continue
        be_path = f"{ep_path}.backend[0]"
        be = problems.convert(ep.backend[0], schema.Backend, be_path)
        if be is None:
            continue
        _warn_fields(problems, ep.backend[0], be_path, schema.Backend, schema.IGNORED_BACKEND_FIELDS)
        params = {text for is_param, text in segments if is_param}
        template = _template(be.url_pattern, params, f"{be_path}.url_pattern", problems)
        hosts = [t for j, h in enumerate(be.host) if (t := _parse_host(h, f"{be_path}.host[{j}]", problems))]
        if not be.host:
            hosts = default_hosts
            if not hosts:
                problems.error(f"{be_path}.host", "no backend host: set the backend's 'host' or the root 'host'")
        if template is None or not hosts:
            continue
        for t in hosts:
            targets.setdefault(t.key, t)
        timeout = problems.duration(ep.timeout, f"{ep_path}.timeout", default_timeout, True)
        ih = ep.input_headers if ep.input_headers is not None else ["Content-Type"]
        iq = ep.input_query_strings or []
        route = Route(
            name=ep.endpoint, method=method, timeout=timeout, targets=tuple(hosts),
            upstream_method=(be.method.upper().encode() if be.method else None),
            template=template,
            forward_headers="*" in ih,
            header_names=frozenset(h.lower().encode() for h in ih if h != "*"),
            query_mode=QUERY_ALL if ("*" in iq or (wildcard and not iq)) else (QUERY_LIST if iq else QUERY_NONE),
            query_names=frozenset(q.encode() for q in iq if q != "*"),
            wildcard=wildcard, checks=(), backend_checks=(), breakers=None, rr=[0], path_prefix=None,
        )
        ep_checks = policies.compile_level("endpoint", ep.extra_config, f"{ep_path}.extra_config", ctx, route=route)
        be_checks = policies.compile_level("backend", be.extra_config, f"{be_path}.extra_config", ctx, route=route)
        route.checks = policies.order(service_checks + ep_checks)
        route.backend_checks = policies.order(be_checks)
        try:
            routes.add(ep.endpoint, method, route)
        except PatternError as exc:
            problems.error(f"{ep_path}.endpoint", str(exc))
            continue
        route_list.append(route)

    if problems.errors:
        raise ConfigError(problems.errors)
    return Snapshot(
        source=source,
        listen_ip=root.listen_ip or "0.0.0.0",
        port=root.port,
        workers=settings.workers,
        admin_ip=settings.admin.listen_ip,
        admin_port=settings.admin.port,
        protocol=proto,
        routes=routes,
        route_list=route_list,
        targets=targets,
        client_ip=ctx.client_ip,
        warnings=problems.warnings,
        state=ctx.state,
    )


def _pick(problems: Problems, own: Optional[str], own_path: str, krakend: Optional[str], k_path: str,
          default: float) -> float:
    if own is not None:
        return problems.duration(own, own_path, default, True)
    if krakend is not None:
        value = problems.duration(krakend, k_path, default)
        return value if value > 0 else default  # KrakenD's 0 means "no limit"; we keep the bound
    return default


def _warn_fields(problems: Problems, raw: Any, path: str, typ: type, ignored: set) -> None:
    if not isinstance(raw, dict):
        return
    for key, value in raw.items():
        if key in ("output_encoding", "encoding") and value == "no-op":
            continue  # what fastproxy does anyway
        if key in ignored and key != "output_encoding":
            problems.warn(f"{path}.{key}", "recognised KrakenD field, not implemented by fastproxy: ignored")
        elif key not in typ.__struct_fields__ and key not in ignored:
            problems.warn(f"{path}.{key}", "unknown field: ignored")


def load(path: str, previous: Optional[Snapshot] = None) -> Snapshot:
    """Read and compile a file; raise ConfigError. `previous` lends its limiter state to the new one."""
    from fastproxy import policies

    snap = compile_config(load_file(path), source=path)
    if previous is not None:
        policies.carry_state(previous, snap)
    return snap

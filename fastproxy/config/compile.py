"""Compile decoded configuration into one immutable runtime Snapshot.

Owns every check of meaning (durations, ranges, patterns, hosts, namespaces) and collects all
problems before failing, so `fastproxy check` lists every error at once, each with its JSON path.
Nothing here runs per request: the server reaches the compiled route table, the per-route
backend templates and policy chains through the Snapshot, and a reload swaps that reference.

Extension: a namespace in `extra_config` is compiled by the handler registered for its level in
`policies.py`; handlers add policy objects to the route's chain in SPEC order.
"""

import re
from dataclasses import dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

import msgspec

from fastproxy.config import schema
from fastproxy.config.durations import parse_duration
from fastproxy.config.load import ConfigError, load_file
from fastproxy.http.request import forwardable_name
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

    def convert(self, raw: Any, typ: type, path: str, partial: bool = False) -> Any:
        """msgspec.convert with the error re-rooted at `path`; None when invalid.

        Types are strict, as Go's encoding/json is for KrakenD: `"3"` is not the integer 3.
        msgspec stops at the first error; to list every one, a failing top-level field is
        dropped and the rest converted again. With `partial`, the result of that last attempt
        (bad fields at their defaults) is returned so that compiling can go on and find the
        errors further down; the errors recorded still refuse the configuration.
        """
        data = raw
        failed = False
        for _ in range(100):
            try:
                value = msgspec.convert(data, typ, strict=True)
            except msgspec.ValidationError as exc:
                failed = True
                msg = str(exc)
                rest = ""
                if " - at `$" in msg:
                    msg, _, rest = msg.rpartition(" - at `$")
                    rest = rest.rstrip("`")
                self.error(*_explain(msg, typ, path, rest))
                key = _top_key(rest)
                if key is None and msg.startswith("Object contains unknown field `"):
                    key = msg.split("`")[1]  # an unknown top-level field: drop it and go on
                if not isinstance(data, dict) or key is None or key not in data or _required(typ, key):
                    return None
                data = {k: v for k, v in data.items() if k != key}
            else:
                return value if (partial or not failed) else None
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


def _struct_at(typ: Any, rest: str) -> Any:
    """The msgspec Struct type found at `rest` (".admin") inside `typ`, or None."""
    for name in rest.split(".")[1:] if rest else []:
        if "[" in name or not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
            return None
        typ = {f.name: f.type for f in msgspec.structs.fields(typ)}.get(name)
    return typ if isinstance(typ, type) and issubclass(typ, msgspec.Struct) else None


def _field_type(typ: Any, name: str) -> str:
    for f in msgspec.structs.fields(typ):
        if f.name == name:
            return getattr(f.type, "__name__", None) or str(f.type).replace("typing.", "")
    return "a value"


def _top_key(rest: str) -> Optional[str]:
    m = re.match(r"\.([A-Za-z_][A-Za-z0-9_]*)", rest)
    return m.group(1) if m else None


def _required(typ: Any, key: str) -> bool:
    if not (isinstance(typ, type) and issubclass(typ, msgspec.Struct)):
        return False
    return any(f.name == key and f.required for f in msgspec.structs.fields(typ))


def _explain(msg: str, typ: Any, path: str, rest: str) -> tuple[str, str]:
    """msgspec's "Expected `int`, got `str`" as (JSON path, "expected int, found str")."""
    where = path + rest
    if msg.startswith("Expected `") and ", got `" in msg:
        exp, _, got = msg.partition(", got ")
        return where, f"expected {exp[len('Expected '):].strip('`')}, found {got.strip('`')}"
    if msg.startswith("Object missing required field `"):
        name = msg.split("`")[1]
        struct = _struct_at(typ, rest)
        shown = _field_type(struct, name) if struct is not None else "a value"
        return f"{where}.{name}", f"required field is missing: expected {shown}, found nothing"
    if msg.startswith("Object contains unknown field `"):
        name = msg.split("`")[1]
        struct = _struct_at(typ, rest)
        known = ", ".join(sorted(struct.__struct_fields__)) if struct is not None else ""
        return f"{where}.{name}", f"unknown setting: expected one of {known}" if known else "unknown field"
    return where, msg[:1].lower() + msg[1:]


def _kind(value: Any) -> str:
    """A decoded value's type in JSON words, for "found ..." in messages."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number"}.get(type(value), type(value).__name__)


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
                 "checks", "backend_checks", "breakers", "rr")

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
        port = u.port if u.port is not None else (443 if u.scheme == "https" else 80)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        problems.error(path, f"expected 'scheme://host:port' with a port 1-65535, found {raw!r}")
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
            problems.error(path, f"expected '}}' to close '{{', found {url_pattern!r}")
            return None
        if i:
            parts.append(rest[:i].encode())
        name = rest[i + 1:j]
        if name not in params:
            known = ", ".join(f"{{{p}}}" for p in sorted(params)) or "none"
            problems.error(path, f"placeholder {{{name}}} is not a parameter of the endpoint: expected one of its "
                                 f"parameters ({known}), found {{{name}}}")
            return None
        parts.append(name)
        rest = rest[j + 1:]
    return tuple(parts)


def compile_config(raw: Any, source: str = "<config>") -> Snapshot:
    """Compile raw decoded data; raise ConfigError listing every problem."""
    from fastproxy import policies

    problems = Problems(source)
    if not isinstance(raw, dict):
        found = "an empty document" if raw is None else _kind(raw)
        raise ConfigError([f"$: expected an object at the top level, found {found}"])
    root = problems.convert(raw, schema.Root, "$", partial=True)
    if root is None:
        raise ConfigError(problems.errors)
    if root.version != 3:
        problems.error("$.version", f"expected 3 (KrakenD v2 format), found {root.version}")
    if not 0 <= root.port <= 65535:
        problems.error("$.port", f"expected a TCP port 0-65535, found {root.port}")
    if root.listen_ip and not _is_ip(root.listen_ip):
        problems.error("$.listen_ip", f"expected an IPv4 or IPv6 address, found {root.listen_ip!r}")
    if root.max_idle_connections_per_host < 0:
        problems.error("$.max_idle_connections_per_host",
                       f"expected an integer >= 0, found {root.max_idle_connections_per_host}")
    if root.response_header_timeout is not None:
        problems.duration(root.response_header_timeout, "$.response_header_timeout", 0.0)
        problems.warn("$.response_header_timeout",
                      "not used by fastproxy: the endpoint timeout bounds the wait for the response head")
    for key in raw:
        if key == "$schema" or (key == "output_encoding" and raw[key] == "no-op"):
            continue  # no-op: what fastproxy does anyway
        if key in schema.IGNORED_ROOT_FIELDS:
            problems.warn(f"$.{key}", "recognised KrakenD field, not implemented by fastproxy: ignored")
        elif key not in schema.Root.__struct_fields__:
            problems.warn(f"$.{key}", "unknown field: ignored")

    extra = root.extra_config
    settings = problems.convert(extra.get("fastproxy", {}), schema.Settings, '$.extra_config["fastproxy"]', partial=True)
    settings = settings or schema.Settings()
    router_opts = problems.convert(extra.get("router", {}), schema.RouterOptions, '$.extra_config["router"]', partial=True)
    router_opts = router_opts or schema.RouterOptions()
    sp = '$.extra_config["fastproxy"]'
    for name in ("max_request_line", "max_header_size", "max_head_size", "max_headers", "max_body_size",
                 "max_connections"):
        problems.positive_int(getattr(settings, name), f"{sp}.{name}")
    problems.positive_int(settings.workers, f"{sp}.workers")
    if settings.max_idle_per_host is not None and settings.max_idle_per_host < 0:
        problems.error(f"{sp}.max_idle_per_host", f"expected an integer >= 0, found {settings.max_idle_per_host}")
    if not 0 <= settings.admin.port <= 65535:
        problems.error(f"{sp}.admin.port", f"expected a TCP port 0-65535 (0 disables), found {settings.admin.port}")
    if not _is_ip(settings.admin.listen_ip):
        problems.error(f"{sp}.admin.listen_ip", f"expected an IPv4 or IPv6 address, found {settings.admin.listen_ip!r}")
    problems.duration(settings.redis_timeout, f"{sp}.redis_timeout", 0.05, True)
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
    from fastproxy.security.policy import client_ip_resolver

    ctx.client_ip = client_ip_resolver(ctx)
    service_checks = policies.compile_level("service", extra, "$.extra_config", ctx)

    default_hosts = [t for i, h in enumerate(root.host) if (t := _parse_host(h, f"$.host[{i}]", problems))]
    routes = RouteTable()
    route_list = []
    targets: dict = {}
    first_at: dict = {}  # (method, endpoint) -> JSON path of its first definition
    for i, raw_ep in enumerate(root.endpoints):
        ep_path = f"$.endpoints[{i}]"
        ep = problems.convert(raw_ep, schema.Endpoint, ep_path, partial=True)
        if ep is None:
            continue
        _warn_fields(problems, raw_ep, ep_path, schema.Endpoint, schema.IGNORED_ENDPOINT_FIELDS)
        usable = True  # false once an error makes this endpoint unroutable; checking goes on
        try:
            segments, wildcard = parse_pattern(ep.endpoint)
        except PatternError as exc:
            problems.error(f"{ep_path}.endpoint", str(exc))
            segments, wildcard, usable = None, False, False
        method = ep.method.upper()
        if method not in METHODS:
            problems.error(f"{ep_path}.method", f"expected one of {', '.join(sorted(METHODS))}, found {ep.method!r}")
            usable = False
        if ep.output_encoding not in (None, "no-op"):
            problems.warn(f"{ep_path}.output_encoding",
                          f"{ep.output_encoding!r} is not implemented: the response is streamed as 'no-op'")
        if len(ep.backend) != 1:
            problems.error(f"{ep_path}.backend",
                           f"expected exactly one backend (fastproxy streams like KrakenD's no-op), found {len(ep.backend)}")
            continue
        be_path = f"{ep_path}.backend[0]"
        be = problems.convert(ep.backend[0], schema.Backend, be_path, partial=True)
        if be is None:
            continue
        _warn_fields(problems, ep.backend[0], be_path, schema.Backend, schema.IGNORED_BACKEND_FIELDS)
        if be.encoding not in (None, "no-op"):
            problems.warn(f"{be_path}.encoding",
                          f"{be.encoding!r} is not implemented: the body passes through unchanged, as 'no-op'")
        if be.method is not None and be.method.upper() not in METHODS:
            problems.error(f"{be_path}.method", f"expected one of {', '.join(sorted(METHODS))}, found {be.method!r}")
            usable = False
        template = None
        if segments is not None:
            params = {text for is_param, text in segments if is_param}
            template = _template(be.url_pattern, params, f"{be_path}.url_pattern", problems)
        hosts = [t for j, h in enumerate(be.host) if (t := _parse_host(h, f"{be_path}.host[{j}]", problems))]
        if not be.host:
            hosts = default_hosts
            if not root.host:
                problems.error(f"{be_path}.host", "expected a list of 'scheme://host:port' here or in the root "
                               "'host', found neither")
        if template is None or not hosts or not usable:
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
            header_names=frozenset(h.lower().encode() for h in ih if h != "*" and forwardable_name(h)),
            query_mode=QUERY_ALL if ("*" in iq or (wildcard and not iq)) else (QUERY_LIST if iq else QUERY_NONE),
            query_names=frozenset(q.encode() for q in iq if q != "*"),
            wildcard=wildcard, checks=(), backend_checks=(), breakers=None, rr=[0],
        )
        ep_checks = policies.compile_level("endpoint", ep.extra_config, f"{ep_path}.extra_config", ctx, route=route)
        be_checks = policies.compile_level("backend", be.extra_config, f"{be_path}.extra_config", ctx, route=route)
        if isinstance(route.breakers, frozenset):
            problems.error(f'{be_path}.extra_config["qos/circuit-breaker/http"]',
                           'needs "qos/circuit-breaker" on the same backend')
        route.checks = policies.order(service_checks + ep_checks)
        route.backend_checks = policies.order(be_checks)
        try:
            routes.add(ep.endpoint, method, route)
        except PatternError as exc:
            first = first_at.get((method, ep.endpoint))
            problems.error(f"{ep_path}.endpoint", f"{exc} (first at {first})" if first else str(exc))
            continue
        first_at.setdefault((method, ep.endpoint), ep_path)
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


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


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
        if key in ignored and key not in ("output_encoding", "encoding"):  # those two: see compile_config
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

"""Compile decoded configuration into one immutable runtime Snapshot.

Owns every check of meaning (durations, ranges, patterns, hosts, namespaces) and collects all
problems before failing, so `fastproxy check` lists every error at once, each with its JSON path.
Nothing here runs per request: the server reaches the compiled route table, the per-route
backend templates and policy chains through the Snapshot, and a reload swaps that reference.
The Snapshot and everything in it are frozen; what requests change (buckets, breakers, the
round-robin position) is each worker's `policies.state.State`, built from the Snapshot.

Extension: a namespace in `extra_config` is compiled by the handler the table of
`policies/registry.py` names for its level; handlers add policy objects to the route's chain,
which is sorted into SPEC order, and tell each other about the route through its `RouteDraft`.
"""

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

import msgspec

from fastproxy import policies
from fastproxy.auth import owned_header_names, owned_headers
from fastproxy.config import schema
from fastproxy.config import tls as tlsconf
from fastproxy.config.load import ConfigError, load_file, with_positions
from fastproxy.config.namespaces import did_you_mean, fail_closed, is_comment, listing
from fastproxy.config.problems import Problems, kind_of
from fastproxy.config.websocket import WebSocket, compile_websocket
from fastproxy.http.request import forwardable_name
from fastproxy.http.upstream_head import QUERY_ALL, QUERY_LIST, QUERY_NONE
from fastproxy.policies import Policy, RouteDraft, registry
from fastproxy.routing import PatternError, RouteTable, parse_pattern
from fastproxy.security.clientip import ClientIPResolver
from fastproxy.security.cors import Cors
from fastproxy.security.policy import client_ip_resolver
from fastproxy.upstream.breakers import BreakerConfig

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
MAX_WORKERS = 512  # processes per instance; more is a typo, not a machine
RESERVED_PATHS = ("/__health",)  # answered by fastproxy itself (lura refuses them too)


@dataclass(frozen=True, slots=True)
class Target:
    """One backend host: where to connect and what to send as Host."""

    scheme: str
    host: str
    port: int
    host_header: bytes
    key: str  # "scheme://host:port", the pool and breaker identity


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Route:
    """What one (endpoint, method) needs per request, all precomputed. Its policy chains are
    compiled policies; what they change per request (buckets, breakers, the round-robin
    position) is in the worker's `policies.state.State`, at `routes[index]`."""

    name: str
    method: str
    timeout: float
    targets: tuple[Target, ...]
    upstream_method: Optional[bytes]
    template: tuple[bytes | str, ...]  # literal parts (bytes) and parameter names (str)
    forward_headers: bool
    header_names: frozenset[bytes]
    query_mode: int
    query_names: frozenset[bytes]
    wildcard: bool
    checks: tuple[Policy, ...]  # SPEC §3 order, service and endpoint policies
    backend_checks: tuple[Policy, ...]
    breaker_config: Optional[BreakerConfig]  # qos/circuit-breaker (and /http), or None
    index: int  # its position in Snapshot.route_list, and of its RouteState in the worker's State
    forwarded_proto: bytes  # the X-Forwarded-Proto line: https when the main port speaks TLS
    websocket: Optional[WebSocket] = None  # the `websocket` namespace: Upgrade requests are tunnelled




@dataclass(frozen=True, slots=True)
class Snapshot:
    source: str
    listen_ip: str
    port: int
    workers: int
    admin_ip: str
    admin_port: int
    protocol: Protocol
    routes: RouteTable
    route_list: tuple[Route, ...]
    targets: Mapping[str, Target]  # key -> Target
    client_ip: Optional[ClientIPResolver]
    warnings: tuple[str, ...] = ()
    upgrades: bool = False  # some route tunnels Upgrade requests (the head read looks for them)
    tls: Optional[tlsconf.ServerTLS] = None  # the main port terminates TLS (root `tls`)
    client_tls: Optional[ssl.SSLContext] = None  # shared by every https:// backend pool
    cors: Optional[Cors] = None  # security/cors (root), or None: then no CORS code runs

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def _parse_host(raw: str, path: str, problems: Problems, sanitize: bool = True) -> Optional[Target]:
    """`scheme://host:port` as a Target. As lura's CleanHost, a host without a scheme means
    `http://` unless the backend sets `disable_host_sanitize`."""
    if isinstance(raw, str) and "{{" in raw:
        return None  # a template expression: reported once, by _templates
    if isinstance(raw, str) and "://" not in raw and sanitize and raw:
        raw = "http://" + raw
    if not isinstance(raw, str) or "://" not in raw:
        problems.error(path, f"expected 'scheme://host:port', found {raw!r}")
        return None
    u = urlsplit(raw)
    if u.scheme in ("ws", "wss"):  # KrakenD's WebSocket hosts: the handshake is HTTP(S)
        u = u._replace(scheme="http" if u.scheme == "ws" else "https")
    if u.scheme not in ("http", "https"):
        problems.error(path, f"expected an http://, https://, ws:// or wss:// host, found {raw!r}")
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


def _template(url_pattern: str, params: set[str], path: str, problems: Problems,
              jwt: bool = False) -> Optional[tuple[bytes | str, ...]]:
    """The backend path as literal parts and parameter names. As lura's CleanPath, a pattern
    without a leading `/` (or none at all) is taken from the root: `""` is `/`, `a` is `/a`.
    With `jwt` (the endpoint validates tokens), `{JWT.claim}` names a claim of the token: the
    validator fills it in the request's parameters under the name `JWT.claim`."""
    if not url_pattern.startswith("/"):
        url_pattern = "/" + url_pattern
    parts: list[bytes | str] = []
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
        if jwt and name.startswith("JWT.") and len(name) > 4:
            parts.append(name)
            rest = rest[j + 1:]
            continue
        if name.startswith(("JWT.", "resp")) and name not in params:
            if name.startswith("JWT."):
                problems.error(path, f"placeholder {{{name}}} is KrakenD's placeholder for a claim of the validated "
                                     "token, and this endpoint has no auth/validator: expected a parameter of the "
                                     f"endpoint, found {{{name}}}")
                return None
            problems.error(path, f"placeholder {{{name}}} is KrakenD's placeholder for a value of an earlier "
                                 "backend's response (the sequential proxy), which fastproxy does not implement: "
                                 f"expected a parameter of the endpoint, found {{{name}}}")
            return None
        if name not in params:
            known = ", ".join(f"{{{p}}}" for p in sorted(params)) or "none"
            problems.error(path, f"placeholder {{{name}}} is not a parameter of the endpoint: expected one of its "
                                 f"parameters ({known}), found {{{name}}}")
            return None
        parts.append(name)
        rest = rest[j + 1:]
    return tuple(parts)


def compile_config(raw: Any, source: str = "<config>", port: Optional[int] = None, listen_ip: Optional[str] = None,
                   workers: Optional[int] = None) -> Snapshot:
    """Compile raw decoded data; raise ConfigError listing every problem. `port`, `listen_ip` and
    `workers`, when given, replace the file's (the command line's `-p`/`-w`; a reload keeps the
    running process's)."""
    problems = Problems(source)
    if not isinstance(raw, dict):
        shown = "an empty document" if raw is None else kind_of(raw)
        raise ConfigError([f"$: expected an object at the top level, found {shown}"])
    root = problems.convert(raw, schema.Root, "$", partial=True)
    if root is None:  # nothing more compiles; the guards are still named, every one
        fail_closed(raw, problems, _raw_ignore(raw), '$.extra_config["fastproxy"].ignore_unsupported')
        raise ConfigError(problems.errors, problems.warnings)
    if "output_encoding" in raw and not isinstance(raw["output_encoding"], str):
        problems.error("$.output_encoding", f"expected str, found {kind_of(raw['output_encoding'])}")
    given = raw.get("output_encoding")
    root_encoding: str = given if isinstance(given, str) else "json"
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
        if is_comment(key) or key in ("output_encoding", "tls", "client_tls"):
            continue  # comments ($schema, @comment); output_encoding: the endpoints' summary; tls: config.tls
        if key in schema.IGNORED_ROOT_FIELDS:
            problems.warn(f"$.{key}", "recognised KrakenD field, not implemented by fastproxy: ignored")
        elif key not in schema.Root.__struct_fields__:
            known = set(schema.Root.__struct_fields__) | schema.IGNORED_ROOT_FIELDS
            problems.warn(f"$.{key}", f"unknown field: ignored{did_you_mean(key, known)}")
    found: list[tuple[str, str]] = []
    _templates(raw, "$", found)
    _template_error(found, problems)

    extra = root.extra_config
    settings = problems.convert(extra.get("fastproxy", {}), schema.Settings, '$.extra_config["fastproxy"]',
                                partial=True)
    settings = settings or schema.Settings()
    problems.fields(extra.get("router", {}), schema.RouterOptions, '$.extra_config["router"]',
                    known_ignored=schema.IGNORED_ROUTER_FIELDS)
    router_opts = problems.convert(extra.get("router", {}), schema.RouterOptions, '$.extra_config["router"]',
                                   partial=True)
    router_opts = router_opts or schema.RouterOptions()
    sp = '$.extra_config["fastproxy"]'
    own_settings = extra.get("fastproxy") if isinstance(extra.get("fastproxy"), dict) else {}
    for name in ("max_request_line", "max_header_size", "max_head_size", "max_headers", "max_body_size",
                 "max_connections"):
        problems.positive_int(getattr(settings, name), f"{sp}.{name}")
    problems.positive_int(settings.workers, f"{sp}.workers")
    if settings.workers > MAX_WORKERS:
        problems.error(f"{sp}.workers", f"expected at most {MAX_WORKERS} worker processes, found {settings.workers}")
    if settings.admin.port and settings.admin.port == root.port:
        problems.error(f"{sp}.admin.port", f"expected a port other than the main port {root.port}: the admin "
                                           "listener (/metrics) would share the proxy's port")
    if settings.max_idle_per_host is not None and settings.max_idle_per_host < 0:
        problems.error(f"{sp}.max_idle_per_host", f"expected an integer >= 0, found {settings.max_idle_per_host}")
    if not 0 <= settings.admin.port <= 65535:
        problems.error(f"{sp}.admin.port", f"expected a TCP port 0-65535 (0 disables), found {settings.admin.port}")
    if not _is_ip(settings.admin.listen_ip):
        problems.error(f"{sp}.admin.listen_ip", f"expected an IPv4 or IPv6 address, found {settings.admin.listen_ip!r}")
    redis_timeout = problems.duration(settings.redis_timeout, f"{sp}.redis_timeout", 0.05, True)
    proto = Protocol(
        max_request_line=settings.max_request_line,
        max_header_size=settings.max_header_size,
        max_head_size=settings.max_head_size,
        max_headers=settings.max_headers,
        max_body_size=settings.max_body_size if router_opts.max_payload <= 0 or "max_body_size" in own_settings
        else router_opts.max_payload,
        max_connections=settings.max_connections,
        read_header_timeout=_pick(problems, settings.read_header_timeout, f"{sp}.read_header_timeout",
                                  root.read_header_timeout, "$.read_header_timeout", 10.0),
        idle_timeout=_pick(problems, settings.idle_timeout, f"{sp}.idle_timeout",
                           root.idle_timeout, "$.idle_timeout", 15.0),
        connect_timeout=_pick(problems, settings.connect_timeout, f"{sp}.connect_timeout",
                              root.dialer_timeout, "$.dialer_timeout", 5.0),
        upstream_idle_timeout=problems.duration(settings.upstream_idle_timeout, f"{sp}.upstream_idle_timeout", 30.0,
                                                True),
        max_idle_per_host=settings.max_idle_per_host if settings.max_idle_per_host is not None
        else root.max_idle_connections_per_host,
        drain_timeout=problems.duration(settings.drain_timeout, f"{sp}.drain_timeout", 30.0, True),
        access_log=settings.access_log,
        ratelimit_headers=settings.ratelimit_headers,
        return_error_msg=router_opts.return_error_msg,
    )
    default_timeout = problems.duration(root.timeout, "$.timeout", 2.0, True)
    server_tls = tlsconf.server_tls(raw.get("tls"), problems, problems.duration(
        settings.tls_handshake_timeout, f"{sp}.tls_handshake_timeout", proto.read_header_timeout, True))
    forwarded_proto = b"\r\nX-Forwarded-Proto: %s\r\n" % (b"https" if server_tls is not None else b"http")

    ctx = policies.CompileContext(problems, raw_root=raw, root=root, router=router_opts, settings=settings,
                                  redis_timeout=redis_timeout)
    ctx.ignore = frozenset(settings.ignore_unsupported)
    ctx.client_ip = client_ip_resolver(ctx)
    service_checks = registry.compile_level("service", extra, "$.extra_config", ctx)

    default_hosts = [t for i, h in enumerate(root.host) if (t := _parse_host(h, f"$.host[{i}]", problems))]
    owned_names = owned_header_names(raw)
    routes = RouteTable()
    route_list: list[Route] = []
    targets: dict[str, Target] = {}
    first_at: dict[tuple[str, str], str] = {}  # (method, endpoint) -> JSON path of its first definition
    for i, raw_ep in enumerate(root.endpoints):
        ep_path = f"$.endpoints[{i}]"
        ep = problems.convert(raw_ep, schema.Endpoint, ep_path, partial=True)
        if ep is None:
            continue
        label = f"{ep.method.upper()} {ep.endpoint}"
        _warn_fields(problems, raw_ep, ep_path, schema.Endpoint, schema.IGNORED_ENDPOINT_FIELDS, label)
        usable = True  # false once an error makes this endpoint unroutable; checking goes on
        if ep.endpoint.rstrip("/") in RESERVED_PATHS:
            problems.error(f"{ep_path}.endpoint", f"{ep.endpoint!r} is reserved: fastproxy answers it itself "
                                                  "(health check); choose another path")
            usable = False
        try:
            segments, wildcard = parse_pattern(ep.endpoint)
        except PatternError as exc:
            problems.error(f"{ep_path}.endpoint", str(exc))
            segments, wildcard, usable = None, False, False
        method = ep.method.upper()
        if method not in METHODS:
            problems.error(f"{ep_path}.method", f"expected one of {', '.join(sorted(METHODS))}, found {ep.method!r}")
            usable = False
        encoding: str = ep.output_encoding or root_encoding
        if encoding != "no-op":
            where = f"{ep_path}.output_encoding" if ep.output_encoding else ep_path
            if encoding in OUTPUT_ENCODINGS:
                default = " (KrakenD's default)" if encoding == "json" else ""
                msg = ENCODING_NOTE.format(encoding=encoding, default=default)
            else:  # KrakenD falls back to json for a name it does not know
                msg = (f"unknown output_encoding {encoding!r}{did_you_mean(encoding, OUTPUT_ENCODINGS)}: KrakenD "
                       "would encode as 'json'; fastproxy streams the response as 'no-op'")
            problems.note(f"output_encoding {encoding}", where, msg, label)
        if len(ep.backend) != 1:
            problems.error(f"{ep_path}.backend",
                           "expected exactly one backend (fastproxy streams like KrakenD's no-op), "
                           f"found {len(ep.backend)}")
            continue
        be_path = f"{ep_path}.backend[0]"
        be = problems.convert(ep.backend[0], schema.Backend, be_path, partial=True)
        if be is None:
            continue
        _warn_fields(problems, ep.backend[0], be_path, schema.Backend, schema.IGNORED_BACKEND_FIELDS, label)
        if encoding != "no-op":  # KrakenD filters the decoded body of such an endpoint; fastproxy streams it
            for key in RESPONSE_FILTERS:
                fields = ep.backend[0].get(key)
                if isinstance(fields, list) and fields:
                    problems.note(f"response {key}", f"{be_path}.{key}", "response filtering is not implemented: the "
                                  f"backend's whole body reaches the client, what `{key}` "
                                  f"{'removes' if key in ('deny', 'blacklist') else 'does not keep'} included "
                                  f"({listing([str(f) for f in fields])})", label)
        # A backend encoding matters only behind a decoding endpoint (lura forces no-op behind a no-op
        # one), and that endpoint is named in the output_encoding summary; a typo is worth a hint.
        if be.encoding is not None and be.encoding not in BACKEND_ENCODINGS:
            problems.note(f"backend encoding {be.encoding}", f"{be_path}.encoding",
                          f"unknown backend encoding {be.encoding!r}{did_you_mean(be.encoding, BACKEND_ENCODINGS)}: "
                          "the body passes through unchanged, as 'no-op'", label)
        sd = ep.backend[0].get("sd", "static")
        if sd != "static":
            problems.error(f"{be_path}.sd", "DNS SRV service discovery is not implemented by fastproxy: it would "
                           "connect to the names in `host` as plain hosts, not to the targets of their SRV records"
                           if sd == "dns" else f"expected 'static' (KrakenD's default) or 'dns', found {sd!r}")
        if be.url_pattern.startswith(("/__debug", "/__echo")):
            problems.note("debug backend", f"{be_path}.url_pattern",
                          "calls KrakenD's own /__debug/ or /__echo/ endpoint, which fastproxy does not serve: "
                          "the backend named in 'host' gets the request", label)
        if be.method is not None and be.method.upper() not in METHODS:
            problems.error(f"{be_path}.method", f"expected one of {', '.join(sorted(METHODS))}, found {be.method!r}")
            usable = False
        template = None
        if segments is not None:
            params = {text for is_param, text in segments if is_param}
            template = _template(be.url_pattern, params, f"{be_path}.url_pattern", problems,
                                 jwt=any(registry.ALIASES.get(k, k) == "auth/validator" for k in ep.extra_config))
        sanitize = ep.backend[0].get("disable_host_sanitize") is not True
        hosts = [t for j, h in enumerate(be.host) if (t := _parse_host(h, f"{be_path}.host[{j}]", problems, sanitize))]
        if not be.host:
            hosts = default_hosts
            if not root.host:
                problems.error(f"{be_path}.host", "expected a list of 'scheme://host:port' here or in the root "
                               "'host', found neither")
        if segments is None:
            continue  # no pattern, no parameters: its policies cannot be judged
        timeout = problems.duration(ep.timeout, f"{ep_path}.timeout", default_timeout, True)
        ih = ep.input_headers if ep.input_headers is not None else ["Content-Type"]
        iq = ep.input_query_strings or []
        draft = RouteDraft(ep.endpoint, method, tuple(p for p in template or () if isinstance(p, str)
                                                      and p.startswith("JWT.")))
        ep_checks = registry.compile_level("endpoint", ep.extra_config, f"{ep_path}.extra_config", ctx, route=draft)
        be_checks = registry.compile_level("backend", be.extra_config, f"{be_path}.extra_config", ctx, route=draft)
        ws: Optional[WebSocket] = None
        if "websocket" in ep.extra_config:
            ws = compile_websocket(ep.extra_config["websocket"], f'{ep_path}.extra_config["websocket"]', problems,
                                   label)
            if ws is None:
                usable = False
        if draft.valid_statuses is not None and draft.breaker is None:
            problems.error(f'{be_path}.extra_config["qos/circuit-breaker/http"]',
                           'needs "qos/circuit-breaker" on the same backend')
        if template is None or not hosts or not usable:
            continue  # an error was recorded; the policies were still compiled to report theirs
        route = Route(
            name=ep.endpoint, method=method, timeout=timeout, targets=tuple(hosts),
            upstream_method=(be.method.upper().encode() if be.method else None),
            template=template,
            forward_headers="*" in ih,
            header_names=frozenset(h.lower().encode() for h in ih if h != "*" and forwardable_name(h)),
            query_mode=QUERY_ALL if ("*" in iq or (wildcard and not iq)) else (QUERY_LIST if iq else QUERY_NONE),
            query_names=frozenset(q.encode() for q in iq if q != "*"),
            wildcard=wildcard,
            checks=policies.order(service_checks + ep_checks
                                  + owned_headers(owned_names, service_checks + ep_checks)),
            backend_checks=policies.order(be_checks),
            breaker_config=draft.breaker,
            index=len(route_list),
            websocket=ws,
            forwarded_proto=forwarded_proto,
        )
        for t in hosts:
            targets.setdefault(t.key, t)
        try:
            routes.add(ep.endpoint, method, route)
        except PatternError as exc:
            first = first_at.get((method, ep.endpoint))
            problems.error(f"{ep_path}.endpoint", f"{exc} (first at {first})" if first else str(exc))
            continue
        first_at.setdefault((method, ep.endpoint), ep_path)
        route_list.append(route)

    client_tls = None
    if "client_tls" in raw or any(t.scheme == "https" for t in targets.values()):
        client_tls = tlsconf.client_tls(raw.get("client_tls"), problems)
    fail_closed(raw, problems, settings.ignore_unsupported, f"{sp}.ignore_unsupported")
    problems.finish()
    if problems.errors:
        raise ConfigError(problems.errors, problems.warnings)
    return Snapshot(
        source=source,
        listen_ip=listen_ip if listen_ip is not None else root.listen_ip or "0.0.0.0",
        port=port if port is not None else root.port,
        workers=workers if workers is not None else settings.workers,
        admin_ip=settings.admin.listen_ip,
        admin_port=settings.admin.port,
        protocol=proto,
        routes=routes,
        route_list=tuple(route_list),
        targets=targets,
        client_ip=ctx.client_ip,
        warnings=tuple(problems.warnings),
        upgrades=any(r.websocket is not None for r in route_list),
        tls=server_tls,
        client_tls=client_tls,
        cors=ctx.shared.get("cors"),
    )


def _raw_ignore(raw: dict[str, Any]) -> list[str]:
    """`ignore_unsupported` as written, when the file could not be decoded far enough to read it."""
    extra = raw.get("extra_config")
    own = extra.get("fastproxy") if isinstance(extra, dict) else None
    names = own.get("ignore_unsupported") if isinstance(own, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


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


# KrakenD 1.x field names that KrakenD 2 no longer reads: (new name, what that means here).
RENAMED_FIELDS = {
    "headers_to_pass": ("input_headers", "only Content-Type reaches the backend"),
    "querystring_params": ("input_query_strings", "no query string reaches the backend"),
}
# Backend response filters (and their 1.x names): KrakenD applies them to a decoded body only.
RESPONSE_FILTERS = ("deny", "allow", "blacklist", "whitelist")
OUTPUT_ENCODINGS = frozenset({"json", "fast-json", "json-collection", "negotiate", "string", "xml", "yaml", "no-op"})
BACKEND_ENCODINGS = frozenset({"json", "fast-json", "safejson", "xml", "rss", "string", "yaml", "no-op"})
ENCODING_NOTE = ("output_encoding {encoding!r}{default} is not implemented: the response is streamed as 'no-op' "
                 "(the backend's status, headers and body pass unchanged; KrakenD would decode and re-encode the "
                 "body and answer a backend error with its own)")


def _warn_fields(problems: Problems, raw: Any, path: str, typ: type[msgspec.Struct], ignored: set[str],
                 endpoint: str) -> None:
    """The keys of an endpoint or backend that fastproxy does not read, once per kind."""
    if not isinstance(raw, dict):
        return
    level = "endpoint" if typ is schema.Endpoint else "backend"
    for key in raw:
        if is_comment(key) or key in ("output_encoding", "encoding", "sd", "disable_host_sanitize"):
            continue  # read by compile_config
        if key in RESPONSE_FILTERS:
            continue  # compile_config says what they mean, where KrakenD would filter
        where = f"{path}.{key}"
        if key in ignored:
            problems.note(f"{level} field {key}", where, "recognised KrakenD field, not implemented by fastproxy: "
                          "ignored", endpoint)
        elif key in RENAMED_FIELDS:
            new, means = RENAMED_FIELDS[key]
            problems.note(f"{level} field {key}", where, f"KrakenD 1.x name of `{new}`, which KrakenD 2 does not read "
                          f"and neither does fastproxy ({means}): rename it", endpoint)
        elif key not in typ.__struct_fields__:
            hint = did_you_mean(key, set(typ.__struct_fields__) | ignored)
            problems.note(f"{level} unknown {key}", where, f"unknown field: ignored{hint}", endpoint)


def _templates(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    """Collect each `{{ ... }}` left in a value: KrakenD flexible configuration, not rendered."""
    if isinstance(value, str):
        i = value.find("{{")
        if i >= 0 and value.find("}}", i) > 0:
            found.append((path, value))
    elif isinstance(value, dict):
        quoted = path.endswith("extra_config")  # namespaces are written ["qos/ratelimit/router"]
        for k, v in value.items():
            if not is_comment(k):
                plain = not quoted and isinstance(k, str) and k.isidentifier()
                _templates(v, f"{path}.{k}" if plain else f'{path}["{k}"]', found)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _templates(v, f"{path}[{i}]", found)


def _template_error(found: list[tuple[str, str]], problems: Problems) -> None:
    """One error for every template expression of the file, at the first one."""
    if not found:
        return
    path, value = found[0]
    more = f"; {len(found) - 1} more at {listing([p for p, _ in found[1:]])}" if len(found) > 1 else ""
    problems.error(path, f"found a KrakenD flexible-configuration template expression {value!r}{more}: render the "
                         "template first (KrakenD: FC_ENABLE=1 FC_OUT=out.json krakend check), then run fastproxy on "
                         "the rendered file")


def load(path: str, port: Optional[int] = None, listen_ip: Optional[str] = None,
         workers: Optional[int] = None) -> Snapshot:
    """Read and compile a file; raise ConfigError. The overrides are `compile_config`'s."""
    raw = load_file(path)
    try:
        return compile_config(raw, source=path, port=port, listen_ip=listen_ip, workers=workers)
    except ConfigError as exc:
        raise ConfigError(with_positions(path, exc.problems), exc.warnings) from None

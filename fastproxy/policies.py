"""The namespaces of `extra_config`: which are implemented, where, and in what order they run.

Each implemented namespace has a compile handler per level (service, endpoint, backend) that
turns its block into policy objects. A policy object has an `order` (SPEC §3's evaluation
order) and a `check(x, now)` method returning None to pass or a Rejection. Handlers are looked up
by namespace name once, at compile time; a route whose namespaces are absent gets an empty chain
and runs no policy code at all.

Namespaces that KrakenD knows and fastproxy does not implement are reported as warnings, never
silently dropped, so `fastproxy check` tells a migrating user exactly what will be ignored.
"""

from typing import Any, Callable

# SPEC §3: IP filter → geofence → bot detector (service, then endpoint) → service rate limit →
# tiered limit → endpoint client limit → endpoint limit → backend rate limit → circuit breaker.
ORDER_IP_FILTER = 10
ORDER_GEOFENCE = 20
ORDER_BOT_SERVICE = 30
ORDER_BOT_ENDPOINT = 31
ORDER_SERVICE_LIMIT = 40
ORDER_TIERED = 50
ORDER_CLIENT_LIMIT = 60
ORDER_ENDPOINT_LIMIT = 70
ORDER_BACKEND_LIMIT = 80


class Rejection(Exception):
    """A policy's refusal: the status and headers the client gets, and why (for logs, metrics)."""

    __slots__ = ("status", "headers", "reason")

    def __init__(self, status: int, reason: str, headers: tuple = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # tuple of (name bytes, value bytes)


class CompileContext:
    def __init__(self, problems: Any, raw_root: dict, root: Any, router: Any) -> None:
        self.problems = problems
        self.raw_root = raw_root
        self.root = root
        self.router = router
        self.state: dict = {}  # stable id -> stateful object (buckets, breakers), carried on reload
        self.client_ip: Any = None
        self.current_path = ""  # the namespace being compiled, for errors found across handlers
        self.shared: dict = {}  # objects several handlers share in one compile (GeoIP readers, Redis pools)


Handler = Callable[[Any, str, CompileContext, Any], list]
HANDLERS: dict[str, dict[str, Handler]] = {"service": {}, "endpoint": {}, "backend": {}}
ALIASES: dict[str, str] = {}

# KrakenD namespaces (CE and EE) that fastproxy recognises but does not implement.
UNIMPLEMENTED = {
    "auth/validator", "auth/signer", "auth/revoker", "auth/api-keys", "auth/basic", "auth/jose",
    "auth/client-credentials", "auth/gcp", "auth/ntlm", "validation/cel", "validation/json-schema",
    "validation/response-json-schema", "security/cors", "security/http", "security/policies",
    "modifier/lua-proxy", "modifier/lua-endpoint", "modifier/lua-backend", "modifier/martian",
    "modifier/jmespath", "modifier/response-body-generator", "modifier/request-body-generator",
    "modifier/body-generator", "proxy", "websocket", "backend/http", "backend/http/client",
    "backend/amqp/consumer", "backend/amqp/producer", "backend/pubsub/subscriber",
    "backend/pubsub/publisher", "backend/lambda", "backend/grpc", "backend/graphql", "backend/soap",
    "backend/static-filesystem", "backend/conditional", "qos/http-cache", "plugin/req-resp-modifier",
    "plugin/http-client", "telemetry/logging", "telemetry/metrics", "telemetry/opencensus",
    "telemetry/opentelemetry", "telemetry/opentelemetry-security", "telemetry/influx",
    "telemetry/gelf", "telemetry/newrelic", "telemetry/moesif", "telemetry/ganalytics",
    "server/static-filesystem", "server/virtualhost", "grpc", "documentation/openapi",
    "documentation/mcp", "governance/quota", "governance/processors", "ai/llm", "ai/mcp",
    "github_com/devopsfaith/krakend-cors", "github_com/devopsfaith/krakend-gologging",
    "github_com/devopsfaith/krakend-metrics", "github_com/devopsfaith/krakend-opencensus",
    "github.com/devopsfaith/krakend-httpsecure", "github.com/devopsfaith/krakend-lua/router",
    "github.com/devopsfaith/krakend-lua/proxy", "github.com/devopsfaith/krakend-martian",
    "github.com/devopsfaith/krakend-jose/validator", "github.com/devopsfaith/krakend-jose/signer",
    "github.com/devopsfaith/krakend/proxy", "github.com/devopsfaith/krakend/transport/http/client/executor",
    "github.com/devopsfaith/krakend-cel", "github.com/devopsfaith/krakend-jsonschema",
    "github.com/devopsfaith/krakend-httpcache",
}
# Keys that are ours or handled outside the handler table.
HANDLED_ELSEWHERE = {"service": {"fastproxy", "router", "redis"}, "endpoint": set(), "backend": set()}


def register(level: str, namespace: str, *aliases: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[level][namespace] = fn
        for alias in aliases:
            ALIASES[alias] = namespace
        return fn

    return deco


def compile_level(level: str, extra: dict, path: str, ctx: CompileContext, route: Any = None) -> list:
    """Compile every namespace of one `extra_config` block; return its policy objects."""
    _load_handlers()
    out: list = []
    if not isinstance(extra, dict):
        return out
    for ns, block in extra.items():
        name = ALIASES.get(ns, ns)
        handler = HANDLERS[level].get(name)
        npath = f'{path}["{ns}"]'
        if handler is not None:
            ctx.current_path = npath
            out.extend(handler(block, npath, ctx, route))
        elif ns in HANDLED_ELSEWHERE[level]:
            continue
        elif name in UNIMPLEMENTED or any(name in h for h in HANDLERS.values()):
            where = "" if name in UNIMPLEMENTED else f" at the {level} level"
            ctx.problems.warn(npath, f"recognised KrakenD namespace, not implemented by fastproxy{where}: ignored")
        else:
            ctx.problems.warn(npath, "unknown namespace: ignored")
    return out


def order(checks: list) -> tuple:
    return tuple(sorted(checks, key=lambda c: c.order))


def carry_state(previous: Any, snap: Any) -> None:
    """Give the new snapshot the live state objects of limits whose configuration is unchanged."""
    for key, obj in previous.state.items():
        new = snap.state.get(key)
        if new is not None and hasattr(new, "adopt"):
            new.adopt(obj)
    for obj in previous.state.values():  # what nobody adopted and holds I/O is closed
        if hasattr(obj, "retire_unless_adopted"):
            obj.retire_unless_adopted(snap.state.values())


_loaded = False


def _load_handlers() -> None:
    # Feature modules register their handlers on import; imported here so that compile-time is
    # the only place that knows the full list.
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _FEATURE_MODULES:
        __import__(mod)


_FEATURE_MODULES: list[str] = ["fastproxy.limits.policy", "fastproxy.upstream.breakers", "fastproxy.security.policy", "fastproxy.limits.shared"]

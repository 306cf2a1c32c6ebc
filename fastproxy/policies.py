"""The namespaces of `extra_config`: which are implemented, where, and in what order they run.

Each implemented namespace has a compile handler per level (service, endpoint, backend) that
turns its block into policy objects. A policy object has an `order` (SPEC §3's evaluation
order) and a `check(x, now)` method returning None to pass or a Rejection. Handlers are looked up
by namespace name once, at compile time; a route whose namespaces are absent gets an empty chain
and runs no policy code at all.

Namespaces that KrakenD knows and fastproxy does not implement are never silently dropped: those
that guard access are errors (`config/namespaces.py`, fail closed), the others warnings, so
`fastproxy check` tells a migrating user exactly what will be ignored.
"""

from typing import Any, Callable

from fastproxy.config import namespaces

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
        self.ignore: frozenset = frozenset()  # the fastproxy setting ignore_unsupported


Handler = Callable[[Any, str, CompileContext, Any], list]
HANDLERS: dict[str, dict[str, Handler]] = {"service": {}, "endpoint": {}, "backend": {}}
ALIASES: dict[str, str] = {}

# Keys that are ours or handled outside the handler table.
HANDLED_ELSEWHERE = {"service": {"fastproxy", "router", "redis"}, "endpoint": set(), "backend": set()}


def register(level: str, namespace: str, *aliases: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        HANDLERS[level][namespace] = fn
        for alias in aliases:
            ALIASES[alias] = namespace
        return fn

    return deco


LEVEL_WORDS = {"service": "at the root (service level)", "endpoint": "on endpoints", "backend": "on backends"}


def known_namespaces() -> set[str]:
    """Every namespace name fastproxy recognises, implemented or not (for "did you mean")."""
    _load_handlers()
    names = {n for h in HANDLERS.values() for n in h} | set(ALIASES)
    names |= {n for h in HANDLED_ELSEWHERE.values() for n in h}
    return names | set(namespaces.GUARDS) | set(namespaces.GUARD_ALIASES) | namespaces.IGNORABLE


def compile_level(level: str, extra: dict, path: str, ctx: CompileContext, route: Any = None) -> list:
    """Compile every namespace of one `extra_config` block; return its policy objects.

    Guards fastproxy does not implement are left to `namespaces.fail_closed`, which sees the
    whole file. A control (limit, filter, breaker) placed at a level that does not read it, or
    a misspelt one, is an error: as written it controls nothing.
    """
    _load_handlers()
    out: list = []
    if not isinstance(extra, dict):
        return out
    label = f"{route.method} {route.name}" if route is not None else ""
    p = ctx.problems
    for ns, block in extra.items():
        name = ALIASES.get(ns, ns)
        handler = HANDLERS[level].get(name)
        npath = f'{path}["{ns}"]'
        if handler is not None:
            ctx.current_path = npath
            out.extend(handler(block, npath, ctx, route))
        elif ns in HANDLED_ELSEWHERE[level] or namespaces.is_comment(ns) or namespaces.canonical(ns) in namespaces.GUARDS:
            continue
        elif name in namespaces.IGNORABLE:
            _ignored(ctx, ns, npath, "recognised KrakenD namespace, not implemented by fastproxy: ignored", label)
        elif any(name in h for h in HANDLERS.values()):
            where = " and ".join(LEVEL_WORDS[lv] for lv, h in HANDLERS.items() if name in h)
            p.error(npath, f"`{ns}` is read {where}, not {LEVEL_WORDS[level]}: placed here it controls nothing "
                           "(KrakenD ignores it here too); move it")
        else:
            _unknown(ns, npath, ctx, label)
    return out


def _unknown(ns: str, npath: str, ctx: CompileContext, label: str) -> None:
    p = ctx.problems
    hit = namespaces.closest(ns, known_namespaces())
    implemented = hit is not None and (hit in ALIASES or any(hit in h for h in HANDLERS.values())
                                       or any(hit in h for h in HANDLED_ELSEWHERE.values()))
    if hit is not None and (implemented or namespaces.is_control(hit) or namespaces.is_control(ns)):
        p.error(npath, f"unknown namespace: did you mean `{hit}`? (as written, the control it names is off)")
    elif namespaces.is_control(ns) and ns not in ctx.ignore:
        p.error(npath, "unknown namespace in a family that guards access or limits traffic "
                       f"({ns.split('/')[0]}/...): fastproxy cannot tell what it would leave unprotected. Remove it, "
                       f'or accept the loss with "ignore_unsupported": ["{ns}"] in extra_config["fastproxy"]')
    else:
        _ignored(ctx, ns, npath, f"unknown namespace: ignored{namespaces.did_you_mean(ns, known_namespaces())}", label)


def _ignored(ctx: CompileContext, ns: str, npath: str, msg: str, label: str) -> None:
    """A warning; on an endpoint or backend, one per namespace naming every endpoint it is on."""
    if label:
        ctx.problems.note(f"namespace {ns}", npath, msg, label)
    else:
        ctx.problems.warn(npath, msg)


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

"""Which `extra_config` namespace is compiled by which handler, at which level.

One explicit table (`HANDLERS`): each implemented namespace has a handler per level (service,
endpoint, backend) that turns its block into policy objects, looked up once at compile time.
Namespaces that KrakenD knows and fastproxy does not implement are never silently dropped: those
that guard access are errors (`config/namespaces.py`, fail closed), the others warnings, so
`fastproxy check` tells a migrating user exactly what will be ignored.
"""

from typing import Any, Optional

from fastproxy.auth import apikeys, validator
from fastproxy.config import namespaces
from fastproxy.limits import policy as local_limits
from fastproxy.limits import redis as redis_limits
from fastproxy.limits import tiered
from fastproxy.policies import CompileContext, Handler, Policy, RouteDraft
from fastproxy.security import cors
from fastproxy.security import policy as security
from fastproxy.upstream import breakers

HANDLERS: dict[str, dict[str, Handler]] = {
    "service": {
        "qos/ratelimit/service": local_limits.compile_service,
        "qos/ratelimit/service/redis": redis_limits.compile_service,
        "qos/ratelimit/tiered": tiered.compile_service,
        "security/ip-filter": security.compile_ip_filter,
        "security/bot-detector": security.compile_bot_detector,
        "security/geofence": security.compile_geofence,
        "plugin/http-server": security.compile_http_server,
        "auth/validator": validator.compile_service,
        "security/cors": cors.compile_cors,
        "auth/api-keys": apikeys.compile_service,
    },
    "endpoint": {
        "qos/ratelimit/router": local_limits.compile_router,
        "github.com/devopsfaith/krakend-ratelimit/juju/router": local_limits.compile_juju_router,
        "qos/ratelimit/router/redis": redis_limits.compile_endpoint,
        "qos/ratelimit/tiered": tiered.compile_endpoint,
        "security/ip-filter": security.compile_ip_filter,
        "security/bot-detector": security.compile_bot_detector,
        "security/geofence": security.compile_geofence,
        "auth/validator": validator.compile_endpoint,
        "auth/api-keys": apikeys.compile_endpoint,
    },
    "backend": {
        "qos/ratelimit/proxy": local_limits.compile_proxy,
        "github.com/devopsfaith/krakend-ratelimit/juju/proxy": local_limits.compile_juju_proxy,
        "qos/circuit-breaker": breakers.compile_breaker,
        "github.com/devopsfaith/krakend-circuitbreaker/gobreaker": breakers.compile_legacy_breaker,
        "qos/circuit-breaker/http": breakers.compile_valid_statuses,
    },
}
# Other names of an implemented namespace, compiled by its handler.
ALIASES: dict[str, str] = {"github_com/devopsfaith/krakend-botdetector": "security/bot-detector",
                           "github.com/devopsfaith/krakend-jose/validator": "auth/validator",
                           "github_com/devopsfaith/krakend-cors": "security/cors",
                           "github_com/devopsfaith/krakend-apikeys": "auth/api-keys"}
# Keys that are ours or handled outside the handler table.
HANDLED_ELSEWHERE = {"service": {"fastproxy", "router", "redis"}, "endpoint": {"websocket"}, "backend": set()}
def known_namespaces() -> set[str]:
    """Every namespace name fastproxy recognises, implemented or not (for "did you mean")."""
    names = {n for h in HANDLERS.values() for n in h} | set(ALIASES)
    names |= {n for h in HANDLED_ELSEWHERE.values() for n in h}
    return (names | set(namespaces.GUARDS) | set(namespaces.GUARD_ALIASES) | set(namespaces.BACKEND_KINDS)
            | namespaces.IGNORABLE)


def compile_level(level: str, extra: dict[str, Any], path: str, ctx: CompileContext,
                  route: Optional[RouteDraft] = None) -> list[Policy]:
    """Compile every namespace of one `extra_config` block; return its policy objects.

    Guards fastproxy does not implement are left to `namespaces.fail_closed`, which sees the
    whole file. A control (limit, filter, breaker) placed at a level that does not read it, or
    a misspelt one, is an error: as written it controls nothing.
    """
    out: list[Policy] = []
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
        elif ns in HANDLED_ELSEWHERE[level] or namespaces.is_comment(ns) or namespaces.refused(ns):
            continue
        elif name == "websocket":
            _ignored(ctx, ns, npath, "KrakenD reads `websocket` in an endpoint's extra_config only: ignored here",
                     label)
        elif name in namespaces.IGNORABLE:
            _ignored(ctx, ns, npath, "recognised KrakenD namespace, not implemented by fastproxy: ignored", label)
        elif ns in namespaces.GUARD_LEVELS:
            continue  # misplaced: namespaces.fail_closed says where it is read
        elif any(name in h for h in HANDLERS.values()):
            where = " and ".join(namespaces.LEVEL_WORDS[lv] for lv, h in HANDLERS.items() if name in h)
            here = namespaces.LEVEL_WORDS[level]
            p.error(npath, f"`{ns}` is read {where}, not {here}: placed here it controls nothing "
                           "(KrakenD ignores it here too); move it")
        else:
            _unknown(ns, npath, ctx, label)
    return out


def _unknown(ns: str, npath: str, ctx: CompileContext, label: str) -> None:
    p = ctx.problems
    known = known_namespaces()
    if not ns.startswith("github"):  # suggest the names KrakenD 2 reads, not their 1.x spellings
        known = {n for n in known if not n.startswith("github")}
    hit = namespaces.closest(ns, known)
    implemented = hit is not None and (hit in ALIASES or any(hit in h for h in HANDLERS.values())
                                       or any(hit in h for h in HANDLED_ELSEWHERE.values()))
    if hit is not None and (implemented or namespaces.is_control(hit) or namespaces.is_control(ns)):
        p.error(npath, f"unknown namespace: did you mean `{hit}`? (as written, the control it names is off)")
    elif namespaces.is_control(ns) and ns not in ctx.ignore:
        p.error(npath, "unknown namespace in a family that guards access or limits traffic "
                       f"({ns.split('/')[0]}/...): fastproxy cannot tell what it would leave unprotected. Remove it, "
                       f'or accept the loss with "ignore_unsupported": ["{ns}"] in extra_config["fastproxy"]')
    else:
        _ignored(ctx, ns, npath, f"unknown namespace: ignored{namespaces.did_you_mean(ns, known)}", label)


def _ignored(ctx: CompileContext, ns: str, npath: str, msg: str, label: str) -> None:
    """A warning; on an endpoint or backend, one per namespace naming every endpoint it is on."""
    if label:
        ctx.problems.note(f"namespace {ns}", npath, msg, label)
    else:
        ctx.problems.warn(npath, msg)

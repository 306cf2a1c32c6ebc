"""Request policies: what every policy object shares, and the order they run in.

A compiled policy (`Policy`) is frozen configuration: it has an `order` (SPEC §3's evaluation
order) and `bind(binder)`, which gives the live object one worker runs (`Check`). A check's
`check(x, now)` passes (returns None), refuses (raises Rejection) or must wait (returns a future;
the server then calls its `complete(x, result, now)`). A policy without per-worker state is its
own check (`bind` returns it); one with state (buckets, breakers, Redis pools, caches) gets it
from `policies.state`, which also carries it across reloads. Which namespace compiles into which
policies is the explicit table of `registry.py`; a route whose namespaces are absent gets an
empty chain and runs no policy code at all.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional, Protocol

from fastproxy.config.problems import Problems
from fastproxy.config.schema import RouterOptions, Settings

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder
    from fastproxy.security.clientip import ClientIPResolver
    from fastproxy.upstream.breakers import BreakerConfig

# SPEC §3 and §6: IP filter → geofence → bot detector (service, then endpoint) → authentication →
# service rate limit → tiered limit → endpoint client limit → endpoint limit → backend rate limit →
# circuit breaker.
ORDER_IP_FILTER = 10
ORDER_GEOFENCE = 20
ORDER_BOT_SERVICE = 30
ORDER_BOT_ENDPOINT = 31
# SPEC §6: authentication after the filters and before every limit (limits key on its identity).
ORDER_AUTH = 35
ORDER_SERVICE_LIMIT = 40
ORDER_TIERED = 50
ORDER_CLIENT_LIMIT = 60
ORDER_ENDPOINT_LIMIT = 70
ORDER_BACKEND_LIMIT = 80


class Rejection(Exception):
    """A policy's refusal: the status and headers the client gets, and why (for logs, metrics)."""

    __slots__ = ("status", "headers", "reason")

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # tuple of (name bytes, value bytes)


class Check(Protocol):
    """The live form of a policy in one worker. `x` is the server's exchange."""

    def check(self, x: Any, now: float) -> "Optional[asyncio.Future[Any]]": ...


class AsyncCheck(Check, Protocol):
    """A check that may return a future; `complete` judges the result it resolved to."""

    def complete(self, x: Any, result: Any, now: float) -> None: ...


class Policy(Protocol):
    """A compiled policy: frozen configuration, shared by every worker."""

    @property
    def order(self) -> int: ...

    def bind(self, binder: "Binder") -> Check: ...


class RouteDraft:
    """The route a handler compiles for, while its chains are compiled: its identity, and what
    `qos/circuit-breaker` and `qos/circuit-breaker/http` tell each other (in either order). The
    frozen `config.compile.Route` is made from it once every namespace is compiled."""

    __slots__ = ("name", "method", "breaker", "valid_statuses", "jwt_claims")

    def __init__(self, name: str, method: str, jwt_claims: tuple[str, ...] = ()) -> None:
        self.name = name
        self.method = method
        self.jwt_claims = jwt_claims  # the `{JWT.claim}` placeholders of the backend's url_pattern
        self.breaker: Optional[BreakerConfig] = None
        self.valid_statuses: Optional[frozenset[int]] = None


class CompileContext:
    """What every handler of one compile sees: where problems go, the decoded root, router and
    fastproxy settings (handlers read settings from here, never from the raw dict)."""

    def __init__(self, problems: Problems, raw_root: dict[str, Any], root: Any, router: RouterOptions,
                 settings: Settings, redis_timeout: float) -> None:
        self.problems = problems
        self.raw_root = raw_root
        self.root = root  # config.schema.Root
        self.router = router
        self.settings = settings
        self.redis_timeout = redis_timeout  # seconds, validated once by compile
        self.keys: set[str] = set()  # stable ids of the stateful policies compiled so far (one each)
        self.client_ip: Optional[ClientIPResolver] = None
        self.current_path = ""  # the namespace being compiled, for errors found across handlers
        self.shared: dict[str, Any] = {}  # objects several handlers share in one compile (GeoIP readers, Redis pools)
        self.ignore: frozenset[str] = frozenset()  # the fastproxy setting ignore_unsupported


# A namespace handler: (block, its JSON path, the compile, the route or None at service level)
# -> the policies it compiles into.
Handler = Callable[[Any, str, CompileContext, Optional[RouteDraft]], Sequence[Policy]]


def order(checks: Sequence["Policy"]) -> tuple["Policy", ...]:
    return tuple(sorted(checks, key=lambda c: c.order))

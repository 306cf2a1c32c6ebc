"""Identity at the edge (SPEC §6): who the client is, established before any limit runs.

- `jwt.py`: JSON Web Token verification as pure objects (key sets, the verifier, claim
  lookups): no I/O, no loop; the wall clock is injected.
- `jwks.py`: the JWK Set of a `jwk_url`, fetched over HTTP(S) asynchronously at worker start and
  refreshed in the background; the only I/O of this package.
- `validator.py`: `auth/validator` compiled into a request policy (token extraction, the cache
  of verified tokens, claim propagation, `{JWT.claim}` placeholders).
- `apikeys.py`: `auth/api-keys` (KrakenD enterprise) compiled into a request policy.

Every policy here runs at `policies.ORDER_AUTH`: after the IP filter, the geofence and the bot
detector, before every rate limit, so a refused request spends no token and a limit keyed on a
header the gateway sets (a propagated claim or role) sees the gateway's value, never the client's.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastproxy.policies import Policy

Header = tuple[bytes, bytes, bytes]  # as http.head.Header: (lowercased name, name, value)


def drop_headers(headers: list[Header], names: frozenset[bytes]) -> list[Header]:
    """`headers` without any whose name is in `names` (lowercased, `-` spelling), counting a name
    spelt with `_` as its `-` spelling: CGI and WSGI backends read `X_User` as `X-User`."""
    return [h for h in headers if h[0] not in names and h[0].replace(b"_", b"-") not in names]


def set_headers(x: Any, names: frozenset[bytes], values: Sequence[tuple[bytes, bytes]]) -> None:
    """Replace the request's headers named `names` by `values` ((name as written, value) pairs):
    a client's own copies are dropped, then the gateway's are appended. The request's header list
    is what the later policies read (tiers, client limits) and what `input_headers` forwards."""
    kept = drop_headers(x.headers, names)
    for name, value in values:
        kept.append((name.lower(), name, value))
    x.headers = kept


def header_value(headers: list[Header], lname: bytes) -> "bytes | None":
    for h in headers:
        if h[0] == lname:
            return h[2]
    return None


def is_header_name(name: str) -> bool:
    """An RFC 9110 token: what a header name may be."""
    if not name:
        return False
    for c in name:
        if not (c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~")):
            return False
    return True


def safe_header_value(value: str) -> bool:
    """A value that can stand in a header line: no control character (CR and LF above all: a
    claim must never inject a header line), no byte outside Latin-1."""
    for c in value:
        o = ord(c)
        if o < 0x20 and c != "\t" or o == 0x7F or o > 0xFF:
            return False
    return True


class OwnedHeaders:
    """The headers the gateway itself sets somewhere in the configuration (every
    `propagate_claims` header of an `auth/validator`, the `propagate_role` of `auth/api-keys`):
    a client's own copies are dropped on every route, those without the block that sets them
    too, before any limit reads them. Otherwise a tier or client limit keyed on such a header at
    the root would take a forged value on the routes without authentication. Stateless; on the
    route chains only of a configuration that propagates something."""

    __slots__ = ("names",)
    order = 34  # just before policies.ORDER_AUTH (the policies that set them run after it)

    def __init__(self, names: frozenset[bytes]) -> None:
        self.names = names  # lowercased, `-` spelling

    def bind(self, binder: Any) -> "OwnedHeaders":
        return self

    def check(self, x: Any, now: float) -> None:
        names = self.names
        headers = x.headers
        for h in headers:
            if h[0] in names or h[0].replace(b"_", b"-") in names:
                x.headers = drop_headers(headers, names)
                return


def owned_headers(names: frozenset[bytes], checks: Sequence[Any]) -> "list[Policy]":
    """The OwnedHeaders a route's chain needs: for the owned `names` that none of its own
    policies sets (and drops the client's copies of) itself; none when that leaves nothing."""
    for c in checks:
        names = names - getattr(c, "sets_headers", frozenset())
    return [OwnedHeaders(names)] if names else []


def owned_header_names(raw: Any) -> frozenset[bytes]:
    """The headers `OwnedHeaders` guards, read from the raw configuration (before its endpoints
    compile: a route needs them whichever endpoint sets them)."""
    names: set[bytes] = set()
    if not isinstance(raw, dict):
        return frozenset()
    root = raw.get("extra_config")
    keys = root.get("auth/api-keys") if isinstance(root, dict) else None
    if isinstance(keys, dict) and isinstance(keys.get("propagate_role"), str) and keys["propagate_role"]:
        names.add(keys["propagate_role"].lower().replace("_", "-").encode("latin-1", "replace"))
    endpoints = raw.get("endpoints")
    for ep in endpoints if isinstance(endpoints, list) else ():
        extra = ep.get("extra_config") if isinstance(ep, dict) else None
        block = extra.get("auth/validator") if isinstance(extra, dict) else None
        pairs = block.get("propagate_claims") if isinstance(block, dict) else None
        for pair in pairs if isinstance(pairs, list) else ():
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str) and pair[1]:
                names.add(pair[1].lower().replace("_", "-").encode("latin-1", "replace"))
    return frozenset(names)

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
from typing import Any

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

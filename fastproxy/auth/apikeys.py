"""`auth/api-keys` (KrakenD enterprise) as a request policy: the root block declares the keys and
their roles (and where keys are read), an endpoint block protects its endpoint.

Rules it keeps:
- Where the key is: `strategy` `header` (default; `identifier` default `Authorization`, there
  as `Bearer KEY`, any other header holds the key as it is) or `query_string` (`identifier`
  default `key`); an endpoint block may override both.
- Stored keys: `hash` `plain` (as the client sends it), `sha256`, `sha1` or `fnv128` (Go's
  FNV-1, 128 bits) of `salt` + key, written as lowercase or uppercase hex.
- No key: 401; a key that is not declared: 401; a key none of whose roles the endpoint's
  `roles` lists: 403 (an endpoint without roles admits any declared key).
- `propagate_role` (root): that header is set on the request to the first of the key's roles
  the endpoint accepts (`ANY` when it lists none); a client's own copy, `_` spellings included,
  is dropped, so limits and tiers keyed on it see the gateway's value.

Timing: the presented key is first brought to its stored form (hashed with the salt when
`hash` says so), then looked up in a dict keyed by the SHA-256 of the stored forms. The time a
lookup takes depends on that digest, which a client cannot steer toward any prefix of a real
key; the entry found is confirmed with `hmac.compare_digest`, whose time does not depend on
where the values differ. No comparison runs byte by byte on the secret.
"""

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Optional
from urllib.parse import unquote_to_bytes

import msgspec

from fastproxy import policies
from fastproxy.auth import drop_headers, header_value, is_header_name
from fastproxy.http.wire import REQUEST_DROP
from fastproxy.policies import CompileContext, Policy, Rejection, RouteDraft

if TYPE_CHECKING:
    from fastproxy.policies.state import Binder

HASHES: Final = ("plain", "sha256", "sha1", "fnv128")
_HEX_LEN: Final = {"sha256": 64, "sha1": 40, "fnv128": 32}
_FNV128_OFFSET: Final = 0x6C62272E07BB014262B821756295C58D
_FNV128_PRIME: Final = 0x0000000001000000000000000000013B
_MASK128: Final = (1 << 128) - 1


def fnv128(data: bytes) -> bytes:
    """FNV-1, 128 bits (Go's hash/fnv New128), big-endian."""
    h = _FNV128_OFFSET
    for b in data:
        h = (h * _FNV128_PRIME) & _MASK128
        h ^= b
    return h.to_bytes(16, "big")


def stored_form(key: bytes, hash_name: str, salt: bytes) -> bytes:
    """A presented key as the configuration stores it: itself (`plain`), or the hex digest."""
    if hash_name == "plain":
        return key
    data = salt + key
    if hash_name == "sha256":
        return hashlib.sha256(data).hexdigest().encode()
    if hash_name == "sha1":
        return hashlib.sha1(data).hexdigest().encode()
    return fnv128(data).hex().encode()


class KeyBlock(msgspec.Struct, frozen=True):
    key: str
    roles: list[str] = []


class RootBlock(msgspec.Struct, frozen=True):
    keys: list[Any]
    identifier: Optional[str] = None
    strategy: str = "header"
    propagate_role: str = ""
    hash: str = "plain"
    salt: str = ""


class EndpointBlock(msgspec.Struct, frozen=True):
    roles: list[str] = []
    identifier: Optional[str] = None
    strategy: Optional[str] = None


class KeyStore:
    """The declared keys: SHA-256 of the stored form -> (stored form, roles in order)."""

    __slots__ = ("entries", "hash", "salt", "identifier", "strategy", "role_header")

    def __init__(self, hash_name: str, salt: bytes, identifier: Optional[str], strategy: str,
                 role_header: bytes) -> None:
        self.entries: dict[bytes, tuple[bytes, tuple[str, ...]]] = {}
        self.hash = hash_name
        self.salt = salt
        self.identifier = identifier
        self.strategy = strategy
        self.role_header = role_header  # propagate_role as written, or b""

    def add(self, stored: bytes, roles: Sequence[str]) -> bool:
        digest = hashlib.sha256(stored).digest()
        if digest in self.entries:
            return False
        self.entries[digest] = (stored, tuple(roles))
        return True

    def roles_of(self, presented: bytes) -> Optional[tuple[str, ...]]:
        """The roles of a presented key, or None when it is not declared (see the module's
        note on timing)."""
        stored = stored_form(presented, self.hash, self.salt)
        entry = self.entries.get(hashlib.sha256(stored).digest())
        if entry is None or not hmac.compare_digest(entry[0], stored):
            return None
        return entry[1]


@dataclass(frozen=True, slots=True)
class ApiKeyCheck:
    """One endpoint's API-key check. No per-worker state: it is its own live form."""

    store: KeyStore
    query: bool  # strategy query_string (else header)
    name: bytes  # the header (lowercased) or query parameter holding the key
    bearer: bool  # the header is Authorization: `Bearer KEY`
    roles: frozenset[str]
    challenge: tuple[tuple[bytes, bytes], ...]
    order: int = policies.ORDER_AUTH

    def bind(self, binder: "Binder") -> "ApiKeyCheck":
        return self

    @property
    def sets_headers(self) -> frozenset[bytes]:
        """The headers this check sets, a client's copies dropped (`auth.OwnedHeaders`)."""
        header = self.store.role_header
        return frozenset((header.lower(),)) if header else frozenset()

    def presented(self, x: Any) -> Optional[bytes]:
        if self.query:
            q = x.query
            if not q:
                return None
            name = self.name
            for part in q.split(b"&"):
                k, eq, v = part.partition(b"=")
                if eq and unquote_to_bytes(k.replace(b"+", b" ")) == name:
                    return unquote_to_bytes(v.replace(b"+", b" ")) or None
            return None
        value = header_value(x.headers, self.name)
        if value is None:
            return None
        if self.bearer:
            if value[:7].lower() != b"bearer ":
                return None
            value = value[7:].strip()
        return value or None

    def check(self, x: Any, now: float) -> None:
        key = self.presented(x)
        if key is None:
            raise Rejection(401, "api key missing", self.challenge)
        roles = self.store.roles_of(key)
        if roles is None:
            raise Rejection(401, "api key unknown", self.challenge)
        wanted = self.roles
        role = "ANY"
        if wanted:
            for r in roles:
                if r in wanted:
                    role = r
                    break
            else:
                raise Rejection(403, "api key role")
        header = self.store.role_header
        if header:
            kept = drop_headers(x.headers, frozenset((header.lower(),)))
            kept.append((header.lower(), header, role.encode()))
            x.headers = kept


def _header_ok(name: str) -> bool:
    return is_header_name(name) and "_" not in name and name.lower().encode() not in REQUEST_DROP


def compile_service(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    """The root block: the key store the endpoint blocks check (no policy of its own)."""
    p = ctx.problems
    block = p.control_block(raw, RootBlock, path)
    if block is None:
        ctx.shared["api_keys"] = None  # (errors reported): endpoint blocks say nothing more
        return []
    ok = True
    if block.hash not in HASHES:
        p.error(f"{path}.hash", f"expected one of {', '.join(HASHES)}, found {block.hash!r}")
        ok = False
    if block.strategy not in ("header", "query_string"):
        p.error(f"{path}.strategy", f"expected 'header' or 'query_string', found {block.strategy!r}")
        ok = False
    if block.identifier is not None and not is_header_name(block.identifier):
        p.error(f"{path}.identifier", f"expected a header or query parameter name, found {block.identifier!r}")
        ok = False
    if block.propagate_role and not _header_ok(block.propagate_role):
        p.error(f"{path}.propagate_role", f"expected a header name without '_' that fastproxy does not set itself, "
                                          f"found {block.propagate_role!r}")
        ok = False
    if block.salt and block.hash == "plain":
        p.warn(f"{path}.salt", "plain keys are not hashed: the salt is not used")
    store = KeyStore(block.hash, block.salt.encode(), block.identifier, block.strategy,
                     block.propagate_role.encode())
    if not block.keys:
        p.error(f"{path}.keys", "expected at least one key, found none")
        ok = False
    for i, rawk in enumerate(block.keys):
        kpath = f"{path}.keys[{i}]"
        k = p.control_block(rawk, KeyBlock, kpath)
        if k is None:
            ok = False
            continue
        stored = k.key.encode()
        if block.hash in _HEX_LEN:
            try:
                valid = len(k.key) == _HEX_LEN[block.hash] and bytes.fromhex(k.key) is not None
            except ValueError:
                valid = False
            if not valid:
                p.error(f"{kpath}.key", f"expected the {block.hash} of salt + key as {_HEX_LEN[block.hash]} hex digits "
                                        "(no client key could ever match it as written)")
                ok = False
                continue
            stored = k.key.lower().encode()
        elif not k.key:
            p.error(f"{kpath}.key", "expected a key, found an empty string")
            ok = False
            continue
        if not store.add(stored, k.roles):
            p.error(f"{kpath}.key", "this key is declared twice")
            ok = False
    ctx.shared["api_keys"] = store if ok else None
    return []


def compile_endpoint(raw: Any, path: str, ctx: CompileContext, route: Optional[RouteDraft]) -> Sequence[Policy]:
    p = ctx.problems
    block = p.control_block(raw, EndpointBlock, path)
    if block is None:
        return []
    if "api_keys" not in ctx.shared:
        p.error(path, 'expected the keys it checks in the root extra_config["auth/api-keys"], found none')
        return []
    store: Optional[KeyStore] = ctx.shared["api_keys"]
    strategy = block.strategy or (store.strategy if store is not None else "header")
    if strategy not in ("header", "query_string"):
        p.error(f"{path}.strategy", f"expected 'header' or 'query_string', found {strategy!r}")
        return []
    identifier = block.identifier or (store.identifier if store is not None else None) or \
        ("key" if strategy == "query_string" else "Authorization")
    if not is_header_name(identifier):
        p.error(f"{path}.identifier", f"expected a header or query parameter name, found {identifier!r}")
        return []
    if store is None:
        return []  # the root block's errors are reported
    query = strategy == "query_string"
    name = identifier.encode() if query else identifier.lower().encode()
    bearer = not query and name == b"authorization"
    challenge = ((b"WWW-Authenticate", b'Bearer realm="fastproxy"' if bearer else b'APIKey realm="fastproxy"'),)
    return [ApiKeyCheck(store, query, name, bearer, frozenset(block.roles), challenge)]

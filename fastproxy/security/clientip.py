"""Who the client is (SPEC §3.9, gin's ``Context.ClientIP``).

The client IP is the socket peer. Only when the peer is a trusted proxy are the configured
headers read: each header's comma-separated items are walked right to left (proxies append),
trusted addresses are skipped and the first untrusted one is the client. An unparseable item
makes that whole header invalid and the next header is tried; if every item is trusted the
leftmost wins; if no header yields an address the peer stands. With no trusted proxies the
headers are never looked at, so a client cannot pick its own IP.

Addresses taken from headers are returned in canonical form (``normalize_ip``); the peer is
returned as given, so the server should normalize it once per connection.
"""

from __future__ import annotations

from fastproxy.security.cidr import CIDRSet, format_ip, parse_ip

__all__ = ["ClientIPResolver", "normalize_ip"]

Headers = list[tuple[bytes, bytes, bytes]]  # (lowercase name, name, value), as http.head gives them
_XFF = b"x-forwarded-for"


def normalize_ip(s: str) -> str | None:
    """Canonical text of an address (IPv4-mapped IPv6 becomes IPv4, brackets and zone
    dropped, IPv6 compressed lower case), or ``None`` if ``s`` is not an address."""
    parsed = parse_ip(s)
    return None if parsed is None else format_ip(*parsed)


def _joined(headers: Headers, name: bytes) -> bytes:
    # headers are (lower-case name, ..., value) tuples: the server keeps the received name too
    values = [h[-1] for h in headers if h[0] == name]
    return values[0] if len(values) == 1 else b",".join(values)


class ClientIPResolver:
    __slots__ = ("trusted", "_headers", "_peers")
    PEER_CACHE = 4096  # peers are few (the proxies in front): remember their verdict

    def __init__(self, trusted_proxies: list[str],
                 remote_ip_headers: list[str] | None = None):
        self.trusted = CIDRSet(trusted_proxies)
        names = ["X-Forwarded-For", "X-Real-IP"] if remote_ip_headers is None else remote_ip_headers
        for name in names:
            if not isinstance(name, str) or not name or not name.isascii() or any(
                    c in name for c in " \t:\r\n"):
                raise ValueError(f"invalid header name {name!r}")
        self._headers = tuple(dict.fromkeys(n.lower().encode("ascii") for n in names))
        self._peers: dict[str, bool] = {}

    def _peer_trusted(self, peer: str) -> bool:
        ok = self._peers.get(peer)
        if ok is None:
            ok = bool(self.trusted) and peer in self.trusted
            if len(self._peers) >= self.PEER_CACHE:
                self._peers.clear()
            self._peers[peer] = ok
        return ok

    def resolve(self, peer: str, headers: Headers) -> str:
        if not self._peer_trusted(peer):
            return peer
        contains = self.trusted.contains_int
        for name in self._headers:
            value = _joined(headers, name)
            if not value:
                continue
            items = value.split(b",")
            for i in range(len(items) - 1, -1, -1):
                parsed = parse_ip(items[i].strip().decode("latin-1"))
                if parsed is None:
                    break  # this header is invalid; try the next one
                if i == 0 or not contains(*parsed):
                    return format_ip(*parsed)
        return peer

    def forwarded_for(self, peer: str, headers: Headers) -> bytes:
        """X-Forwarded-For to send upstream: a trusted peer's chain plus the peer, else the
        peer alone (a client's own X-Forwarded-For is never passed on)."""
        peer_b = peer.encode("ascii", "replace")
        if self._peer_trusted(peer):
            chain = _joined(headers, _XFF).strip()
            if chain:
                return chain + b", " + peer_b
        return peer_b

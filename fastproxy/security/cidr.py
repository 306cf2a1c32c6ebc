"""Address parsing and CIDR membership tables.

Owns the one IP parser the security policies share (``parse_ip``) and ``CIDRSet``, the table
behind the IP filter and the trusted-proxy list.

Rules kept:
- Parsing is strict (``socket.inet_pton``): no leading zeros, no shorthand like ``127.1``, no
  surrounding spaces. IPv6 may carry brackets and a ``%zone``, both ignored.
- IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are IPv4 everywhere, and so are networks
  written inside ``::ffff:0:0/96``; a wider IPv6 network such as ``::/0`` does not cover IPv4
  (Go's ``net.IPNet.Contains`` behaves the same way).
- Membership cost does not depend on how many networks are listed: per prefix length present
  we keep a set of masked network integers, and a lookup does one mask and one set probe per
  distinct length (at most 33 for IPv4, 129 for IPv6).
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6, inet_ntop, inet_pton

__all__ = ["CIDRSet", "format_ip", "parse_ip"]

_V4_MASK = 0xFFFFFFFF


def parse_ip(s: str) -> tuple[int, int] | None:
    """Return ``(version, integer)`` for an address string, or ``None`` if it is not one."""
    # Branch on ":" rather than trying IPv4 first: a failed inet_pton costs an exception.
    try:
        if ":" not in s:
            return 4, int.from_bytes(inet_pton(AF_INET, s), "big")
        if s[:1] == "[" and s[-1:] == "]":
            s = s[1:-1]
        zone = s.find("%")
        if zone >= 0:
            if zone == len(s) - 1:
                return None
            s = s[:zone]
        value = int.from_bytes(inet_pton(AF_INET6, s), "big")
    except (OSError, ValueError, TypeError):
        return None
    if value >> 32 == 0xFFFF:
        return 4, value & _V4_MASK
    return 6, value


def format_ip(version: int, value: int) -> str:
    """Canonical text of a parsed address (IPv6 compressed, lower case)."""
    if version == 4:
        return inet_ntop(AF_INET, value.to_bytes(4, "big"))
    return inet_ntop(AF_INET6, value.to_bytes(16, "big"))


def parse_network(text: str) -> tuple[int, int, int]:
    """``(version, prefix length, network integer)`` of a CIDR or single address."""
    s = text.strip() if isinstance(text, str) else ""
    addr, slash, plen = s.partition("/")
    if not addr or "%" in s or (slash and not (plen.isdigit() and plen.isascii())):
        raise ValueError(f"invalid CIDR {text!r}")
    try:
        net = ipaddress.ip_network(s, strict=False)  # host bits allowed, as Go's ParseCIDR
    except ValueError:
        raise ValueError(f"invalid CIDR {text!r}") from None
    version, length, value = net.version, net.prefixlen, int(net.network_address)
    if version == 6 and length >= 96 and value >> 32 == 0xFFFF:
        version, length, value = 4, length - 96, value & _V4_MASK
    return version, length, value


class CIDRSet:
    """A set of IPv4/IPv6 networks; single addresses count as /32 or /128."""

    __slots__ = ("_v4", "_v6", "_count")

    def __init__(self, networks: list[str]):
        tables: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in networks:
            version, length, value = parse_network(text)
            tables[version].setdefault(length, set()).add(value)
        self._v4 = self._compile(tables[4], 32)
        self._v6 = self._compile(tables[6], 128)
        self._count = sum(len(nets) for t in tables.values() for nets in t.values())

    @staticmethod
    def _compile(by_length: dict[int, set[int]], bits: int) -> tuple[tuple[int, frozenset[int]], ...]:
        full = (1 << bits) - 1
        # Longest prefixes first: specific entries (single addresses) are the common case.
        return tuple(
            (full ^ ((1 << (bits - length)) - 1), frozenset(by_length[length]))
            for length in sorted(by_length, reverse=True)
        )

    def contains_int(self, version: int, value: int) -> bool:
        for mask, nets in self._v4 if version == 4 else self._v6:
            if value & mask in nets:
                return True
        return False

    def __contains__(self, ip: object) -> bool:
        parsed = parse_ip(ip) if isinstance(ip, str) else None
        return parsed is not None and self.contains_int(*parsed)

    def __len__(self) -> int:
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def __repr__(self) -> str:
        return f"CIDRSet(<{self._count} networks>)"

"""IP filter (SPEC §3.11): admit or refuse a client by CIDR list.

Allow mode admits only listed clients; deny mode refuses listed clients. A client IP that is
missing or does not parse passes in deny mode and is refused in allow mode (KrakenD EE docs).
The lookup is a ``CIDRSet`` probe, so its cost does not grow with the list.
"""

from __future__ import annotations

from fastproxy.security.cidr import CIDRSet, parse_ip

__all__ = ["IPFilter"]


class IPFilter:
    __slots__ = ("networks", "allow")

    def __init__(self, cidrs: list[str], allow: bool):
        if not isinstance(allow, bool):
            raise ValueError(f"invalid allow flag {allow!r}: expected true or false")
        self.networks = CIDRSet(cidrs)
        self.allow = allow

    def permits(self, ip: str | None) -> bool:
        parsed = parse_ip(ip) if ip else None
        if parsed is None:
            return not self.allow
        return self.networks.contains_int(*parsed) is self.allow

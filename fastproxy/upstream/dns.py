"""Asynchronous host-name resolution with a TTL cache (aiodns / c-ares).

IP literals never reach the resolver. A name is resolved once and reused for its record TTL
(at least `MIN_TTL`, at most `MAX_TTL`), so the request path pays a dict lookup. Concurrent
misses for one name share one query.
"""

import asyncio
import ipaddress
import socket
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import aiodns

MIN_TTL = 1.0
MAX_TTL = 300.0


class DNSError(Exception):
    pass


class DNSCache:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._pending: dict[str, asyncio.Future[tuple[float, list[str]]]] = {}
        self._resolver: Optional[aiodns.DNSResolver] = None  # made on the first query
        self._rr = 0

    @staticmethod
    def literal(host: str) -> Optional[str]:
        try:
            return str(ipaddress.ip_address(host))
        except ValueError:
            return None

    async def resolve(self, host: str) -> str:
        """One address for `host` (rotating over the records); raise DNSError."""
        return (await self.resolve_all(host))[0]

    async def resolve_all(self, host: str) -> list[str]:
        """Every address of `host`, starting one further each call (connections spread over the
        records, and a caller can fall back to the next address); raise DNSError."""
        lit = self.literal(host)
        if lit is not None:
            return [lit]
        now = self.loop.time()
        hit = self._cache.get(host)
        if hit is None or hit[0] <= now:
            fut = self._pending.get(host)
            if fut is None:
                fut = self.loop.create_future()
                self._pending[host] = fut
                try:
                    hit = await self._query(host)
                except BaseException as exc:
                    fut.set_exception(DNSError(str(exc)) if not isinstance(exc, DNSError) else exc)
                    fut.exception()  # mark retrieved
                    raise
                finally:
                    self._pending.pop(host, None)
                self._cache[host] = hit
                fut.set_result(hit)
            else:
                hit = await asyncio.shield(fut)
        addrs = hit[1]
        self._rr += 1
        i = self._rr % len(addrs)
        return addrs[i:] + addrs[:i]

    async def _query(self, host: str) -> tuple[float, list[str]]:
        import aiodns

        if self._resolver is None:
            self._resolver = aiodns.DNSResolver(loop=self.loop)
        try:
            result = await self._resolver.getaddrinfo(host, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
        except aiodns.error.DNSError as exc:
            raise DNSError(f"cannot resolve {host!r}: {exc.args[-1] if exc.args else exc}") from None
        addrs: list[str] = []
        ttl = MAX_TTL
        for node in result.nodes:
            addr = node.addr[0]
            if isinstance(addr, bytes):
                addr = addr.decode()
            if addr not in addrs:
                addrs.append(addr)
            ttl = min(ttl, float(getattr(node, "ttl", MAX_TTL) or MIN_TTL))
        if not addrs:
            raise DNSError(f"cannot resolve {host!r}: no address")
        # Prefer IPv4 first: loopback services commonly listen on 127.0.0.1 only.
        addrs.sort(key=lambda a: ":" in a)
        return self.loop.time() + max(MIN_TTL, min(MAX_TTL, ttl)), addrs

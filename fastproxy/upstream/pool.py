"""Idle keep-alive connections to one backend host, per worker, and opening new ones.

Rules it keeps: LIFO reuse (the most recently used connection is the likeliest alive), FIFO
expiry after `idle_timeout`, at most `max_idle` idle; a connection attempt tries each address
of the name in turn within one `connect_timeout`, and fails with a ConnectError of kind
CONNECT or CONNECT_TIMEOUT. An https:// host is reached with the snapshot's one client context
(`config.tls.client_tls`); a certificate that does not verify is a CONNECT failure (502) whose
message says so.
"""

import asyncio
import collections
import ssl as _ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, cast

from fastproxy.upstream.connection import CLOSED, IDLE, UpstreamConnection
from fastproxy.upstream.dns import DNSCache, DNSError
from fastproxy.upstream.errors import ConnectError, FailureKind

if TYPE_CHECKING:
    from fastproxy.config.compile import Target


class Pool:
    __slots__ = ("target", "idle", "max_idle", "idle_timeout", "loop", "dns", "connect_timeout", "ssl", "clock")

    def __init__(self, target: "Target", loop: asyncio.AbstractEventLoop, dns: DNSCache, max_idle: int,
                 idle_timeout: float, connect_timeout: float, ssl: Optional[_ssl.SSLContext] = None) -> None:
        self.target = target
        self.idle: collections.deque[UpstreamConnection] = collections.deque()
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.loop = loop
        self.clock: Callable[[], float] = loop.time
        self.dns = dns
        self.connect_timeout = connect_timeout
        # the snapshot's client_tls context for an https:// host (shared by every pool), else None
        self.ssl = ssl if target.scheme == "https" else None

    def get(self, now: float) -> Optional[UpstreamConnection]:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.state == IDLE and now - conn.released_at < self.idle_timeout:
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: UpstreamConnection) -> None:
        if len(self.idle) >= self.max_idle:
            conn.close()
            return
        self.idle.append(conn)

    def adopt(self, conn: UpstreamConnection) -> None:
        """An open connection with nothing in flight joins the idle ones (tests, benchmarks)."""
        conn.state = IDLE
        conn.released_at = self.clock()
        self.put(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        if conn.state == CLOSED and conn.released_at and conn in self.idle:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass

    def expire(self, now: float) -> None:
        idle = self.idle
        while idle and now - idle[0].released_at >= self.idle_timeout:
            idle.popleft().close()

    def _protocol(self) -> asyncio.BaseProtocol:
        # an asyncio protocol by its methods; compiled it cannot subclass asyncio.Protocol
        return cast(asyncio.BaseProtocol, UpstreamConnection(self))

    async def connect(self) -> UpstreamConnection:
        """Open a new connection; raise ConnectError."""
        t = self.target
        deadline = self.loop.time() + self.connect_timeout
        try:
            addrs = await asyncio.wait_for(self.dns.resolve_all(t.host), self.connect_timeout)
        except TimeoutError:
            raise ConnectError(FailureKind.CONNECT_TIMEOUT, f"resolving {t.host} timed out") from None
        except DNSError as exc:
            raise ConnectError(FailureKind.CONNECT, str(exc)) from None
        error: Optional[BaseException] = None
        for addr in addrs:  # a name with several addresses: the next one when one refuses
            left = deadline - self.loop.time()
            if left <= 0:
                break
            try:
                _, proto = await asyncio.wait_for(
                    self.loop.create_connection(self._protocol, addr, t.port, ssl=self.ssl,
                                                server_hostname=t.host if self.ssl else None), left)
            except TimeoutError:
                raise ConnectError(FailureKind.CONNECT_TIMEOUT, f"connect to {t.key} timed out") from None
            except _ssl.SSLCertVerificationError as exc:  # the same certificate at every address
                raise ConnectError(FailureKind.CONNECT, f"TLS to {t.key}: certificate not verified "
                                   f"({exc.verify_message})") from None
            except (OSError, _ssl.SSLError) as exc:
                error = exc
                continue
            return cast(UpstreamConnection, proto)
        if error is None:
            raise ConnectError(FailureKind.CONNECT_TIMEOUT, f"connect to {t.key} timed out")
        raise ConnectError(FailureKind.CONNECT, f"connect to {t.key}: {getattr(error, 'strerror', None) or error}")

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()

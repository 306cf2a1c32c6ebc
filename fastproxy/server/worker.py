"""One worker: one process, one uvloop, its own listening socket (SO_REUSEPORT when there are
several workers), its own state (`policies.state.State`: buckets, breakers, Redis stores, the
round-robin positions, built from the frozen snapshot and rebuilt on reload).

Owns: accepting, with the connection cap: at `max_connections` a new connection is admitted by
closing the oldest connection that has no request in flight (one still in its head phase, a
slowloris, or an idle keep-alive one), so slow heads cannot starve new clients; only when every
connection has a request in flight is the listener paused (never accept-and-close). On a TLS
port (`snap.tls`) each accepted socket is its own task that waits for the handshake, bounded by
`tls.handshake_timeout`, so a stalled handshake holds up no other client; a socket in its
handshake counts against the cap, is the first evicted at the cap (it has sent nothing usable
yet), and is released when its handshake fails, times out or is evicted. The cap is also
bounded by the open-files limit, raised to its hard limit at worker start. Also: the clock tick
that sweeps connection deadlines and refreshes the Date header, backend pools, reload (SIGHUP:
a bad file keeps the old snapshot and state; a good one gets a new State that takes over the
entries of unchanged policies; new connections get the new certificates, open ones keep
theirs; a reload that would turn TLS on or off is refused) and drain (SIGTERM/SIGINT: stop
accepting, abandon handshakes in progress, close idle connections, let in-flight ones finish
with `Connection: close`, exit when done or at the drain deadline).
"""

import asyncio
import logging
import os
import resource
import select
import signal
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any, Optional, cast

import msgspec

from fastproxy import admin
from fastproxy import metrics as metrics_mod
from fastproxy.config.compile import Snapshot, load
from fastproxy.config.load import ConfigError
from fastproxy.config.schema import Settings
from fastproxy.config.tls import ServerTLS, listener_change
from fastproxy.http.response import DateCache
from fastproxy.policies.state import State
from fastproxy.server import malloc
from fastproxy.server.connection import ClientConnection
from fastproxy.server.listen import ListenError, make_listener, reason, show_addr
from fastproxy.upstream.dns import DNSCache
from fastproxy.upstream.pool import Pool

log = logging.getLogger("fastproxy")

FD_RESERVE = 64  # descriptors kept for the listener, admin, DNS, Redis, logs
DEFAULT_MAX_CONNECTIONS = Settings().max_connections
# A closing TLS connection sends close_notify, reads and drops what the client still sends (a
# lingering close) until the client's close_notify or EOF, at most this long (uvloop's default
# is 30 s): a client that never answers holds its place under the cap no longer than this. The
# rest of an answer still unsent to a very slow client at that point is cut.
TLS_SHUTDOWN_TIMEOUT = 5.0


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # an unlimited hard limit may be refused as the soft one
            pass
    return soft


def connection_cap(configured: int, open_files: int) -> int:
    """`max_connections` within what the open-files limit allows: each client connection may hold
    a backend connection, so two descriptors each, plus FD_RESERVE."""
    if open_files == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, (open_files - FD_RESERVE) // 2))


class Worker:
    def __init__(self, snap: Snapshot, loop: asyncio.AbstractEventLoop, config_path: Optional[str] = None,
                 index: int = 0) -> None:
        self.snap = snap
        self.loop = loop
        self.clock: Callable[[], float] = loop.time
        self.config_path = config_path
        self.index = index
        self.date = DateCache()
        self.conns: dict[ClientConnection, None] = {}  # ClientConnection -> None, in the order they were opened
        self.fd_limit = resource.RLIM_INFINITY  # open-files limit (run_worker sets it)
        self.warned_cap = 0
        self.pools: dict[str, Pool] = {}
        self.dns = DNSCache(loop)
        self.metrics = metrics_mod.Metrics()
        self.log = log
        self.draining = False
        self.access_log: Optional[Callable[[ClientConnection, Any], None]] = (
            self._access_log if snap.protocol.access_log else None)
        self.listener: Optional[socket.socket] = None
        self.accepting = False
        self.adopting = 0  # accepted sockets whose protocol is not made yet: they count against the cap
        self.handshakes: dict[asyncio.Task[None], None] = {}  # those in their TLS handshake, oldest first
        self.admin_server: Any = None
        self.done = loop.create_future()
        self.metrics.gauges["fastproxy_breaker_state"] = self._breaker_states
        self.state = State(snap, self.clock(), self.metrics)  # what requests change; snap never does
        self._health = msgspec.json.encode({"status": "ok", "pid": os.getpid()})
        self._tick_handle: Any = None
        self._last_date = 0.0
        self._last_publish = 0.0
        self.publish_metrics = bool(os.environ.get(admin.METRICS_DIR_ENV))

    def _breaker_states(self) -> "list[metrics_mod.Series]":
        return self.state.breaker_states(self.clock())

    # -- accept -------------------------------------------------------------------------------
    def listen(self, sock: socket.socket) -> None:
        self.listener = sock
        self._start_accepting()
        self._tick()

    def _start_accepting(self) -> None:
        if not self.accepting and self.listener is not None and not self.draining:
            self.accepting = True
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _stop_accepting(self) -> None:
        if self.accepting and self.listener is not None:
            self.accepting = False
            self.loop.remove_reader(self.listener.fileno())

    def cap(self) -> int:
        configured = self.snap.protocol.max_connections
        cap = connection_cap(configured, self.fd_limit)
        if cap < configured and self.warned_cap != configured:
            self.warned_cap = configured
            # the default adapts to the machine quietly; a value the operator chose is a warning
            say = log.info if configured == DEFAULT_MAX_CONNECTIONS else log.warning
            say("max_connections %d needs %d open files, the limit is %d: capped at %d", configured,
                2 * configured + FD_RESERVE, self.fd_limit, cap)
        return cap

    def _accept(self) -> None:
        listener = self.listener
        if listener is None:
            return
        cap = self.cap()
        for i in range(64):
            if len(self.conns) + self.adopting >= cap:
                # At the cap, room is made only for a client that is waiting: the listener was
                # readable when this callback ran; after the first accept, ask it again.
                if i and not select.select((listener,), (), (), 0)[0]:
                    return
                if not self._evict():
                    self._stop_accepting()  # every connection is busy: the tick retries
                    return
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: back off briefly, keep serving
                log.warning("accept failed: %s", exc)
                self._stop_accepting()
                self.loop.call_later(0.1, self._start_accepting)
                return
            self.adopting += 1
            tls = self.snap.tls
            task = self.loop.create_task(self._adopt(sock, tls))
            if tls is not None:
                self.handshakes[task] = None

    def _evict(self) -> bool:
        """Make room for a new connection: close the oldest one without a request in flight
        (in its head phase or idle), or before that the oldest TLS handshake in progress. False
        when every connection has a request in flight."""
        oldest = next(iter(self.handshakes), None)
        if oldest is not None:
            self._end_handshake(oldest)
            self.metrics.evicted += 1
            return True
        for conn in self.conns:
            if not conn.queue and not conn.closing:
                del self.conns[conn]  # no longer counted, whenever its close completes
                self.metrics.connections_open = len(self.conns)
                self.metrics.evicted += 1
                conn.evict()
                return True
        return False

    def _end_handshake(self, task: "asyncio.Task[None]") -> None:
        """Stop counting a socket in its handshake and abandon the handshake (uvloop closes it)."""
        del self.handshakes[task]
        self.adopting -= 1
        task.cancel()

    async def _adopt(self, sock: socket.socket, tls: Optional[ServerTLS]) -> None:
        # an asyncio protocol by its methods; compiled it cannot subclass asyncio.Protocol
        def factory() -> asyncio.BaseProtocol:
            return cast(asyncio.BaseProtocol, ClientConnection(self))

        try:
            if tls is None:
                await self.loop.connect_accepted_socket(factory, sock)
            else:  # returns once the handshake is done; connection_made comes first
                await self.loop.connect_accepted_socket(factory, sock, ssl=tls.context,
                                                        ssl_handshake_timeout=tls.handshake_timeout,
                                                        ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT)
        except OSError as exc:  # ssl.SSLError, and the handshake timeout (ConnectionAbortedError)
            if tls is not None:
                log.debug("TLS handshake failed: %s", exc.strerror if isinstance(exc, ssl.SSLError) else exc)
            sock.close()  # (uvloop has already let go of a socket whose handshake failed)
        finally:
            if tls is None:
                self.adopting -= 1
            else:
                task = asyncio.current_task()
                if task in self.handshakes:  # (an evicted one was counted out by _end_handshake)
                    del self.handshakes[task]
                    self.adopting -= 1
        if not self.accepting and len(self.conns) + self.adopting < self.cap():
            self._start_accepting()

    def connection_opened(self, conn: ClientConnection) -> None:
        self.conns[conn] = None
        self.metrics.connections_open = len(self.conns)
        self.metrics.connections_total += 1

    def connection_closed(self, conn: ClientConnection) -> None:
        self.conns.pop(conn, None)
        self.metrics.connections_open = len(self.conns)
        if not self.accepting and len(self.conns) + self.adopting < self.cap():
            self._start_accepting()
        if self.draining and not self.conns and not self.done.done():
            self.done.set_result(None)

    # -- backends -----------------------------------------------------------------------------
    def pool(self, target: Any) -> Pool:
        pool = self.pools.get(target.key)
        if pool is None:
            p = self.snap.protocol
            pool = Pool(target, self.loop, self.dns, p.max_idle_per_host, p.upstream_idle_timeout, p.connect_timeout,
                        self.snap.client_tls)
            self.pools[target.key] = pool
        return pool

    # -- clock ---------------------------------------------------------------------------------
    def _tick_period(self) -> float:
        p = self.snap.protocol
        shortest = min([p.read_header_timeout, p.idle_timeout] + [r.timeout for r in self.snap.route_list])
        return max(0.01, min(0.25, shortest / 10))

    def _tick(self) -> None:
        now = self.clock()
        wall = time.time()
        if int(wall) != int(self._last_date):
            self._last_date = wall
            self.date.tick(wall)
        for conn in [c for c in self.conns if c.deadline <= now]:
            conn.expire(now)
        for pool in self.pools.values():
            if pool.idle:
                pool.expire(now)
        if not self.accepting and self.listener is not None and not self.draining:
            # paused at the cap: a connection may have become idle (closable) since
            self._start_accepting()
        if self.publish_metrics and int(wall) != int(self._last_publish):
            self._last_publish = wall
            admin.publish(self)
        self._tick_handle = self.loop.call_later(self._tick_period(), self._tick)

    def health_body(self) -> bytes:
        return self._health

    def _access_log(self, conn: ClientConnection, x: Any) -> None:
        rec = {
            "time": round(time.time(), 3),
            "client": x.client_ip or conn.peer,
            "method": (x.method or b"").decode("latin-1"),
            "path": (x.url or b"").decode("latin-1")[:2048],
            "status": x.status,
            "route": x.route.name if x.route is not None else None,
            "duration_ms": round((self.clock() - x.started) * 1000, 3) if x.started else None,
            "upstream": x.target.key if x.target is not None else None,
        }
        if x.reason:  # why it was refused, or why the answer was cut
            rec["reason"] = x.reason
        t = conn.tunnel
        if t is not None:  # logged as the tunnel closes
            rec["bytes_up"] = t.up_bytes
            rec["bytes_down"] = t.down_bytes
            rec["closed"] = t.ended_by
        os.write(2, msgspec.json.encode(rec) + b"\n")

    # -- signals -------------------------------------------------------------------------------
    def reload(self) -> bool:
        if not self.config_path:
            return False
        try:
            # the listener and the worker count are fixed for the life of the process
            old = self.snap
            snap = load(self.config_path, port=old.port, listen_ip=old.listen_ip, workers=old.workers)
        except ConfigError as exc:
            log.error("reload of %s refused, keeping the running configuration:\n  %s", self.config_path,
                      "\n  ".join(exc.problems))
            return False
        change = listener_change(old.tls, snap.tls)
        if change is not None:
            log.error("reload of %s refused, keeping the running configuration:\n  %s", self.config_path, change)
            return False
        # the new state takes over what unchanged limits, breakers and Redis pools hold
        self.state = State(snap, self.clock(), self.metrics, previous=self.state)
        self.snap = snap
        p = snap.protocol
        for pool in self.pools.values():  # pools outlive a reload; their knobs follow it
            pool.max_idle, pool.idle_timeout, pool.connect_timeout = (p.max_idle_per_host, p.upstream_idle_timeout,
                                                                       p.connect_timeout)
            if pool.ssl is not None and snap.client_tls is not None:  # new backend connections: the new client_tls
                pool.ssl = snap.client_tls
        self.access_log = self._access_log if snap.protocol.access_log else None
        certs = f", certificates {', '.join(c.public_key for c in snap.tls.certificates)}" if snap.tls else ""
        log.info("configuration reloaded from %s (%d routes%s)", self.config_path, len(snap.route_list), certs)
        return True

    def drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("draining: %d open connections, deadline %.0fs", len(self.conns), self.snap.protocol.drain_timeout)
        self._stop_accepting()
        if self.listener is not None:
            self.listener.close()
        for task in list(self.handshakes):  # not a client yet: nothing in flight to finish
            self._end_handshake(task)
        if self.admin_server is not None:
            self.admin_server.close()
        for conn in list(self.conns):
            if conn.idle():
                conn.closing = True
                conn.transport.close()
        if not self.conns and not self.done.done():
            self.done.set_result(None)
        self.loop.call_later(self.snap.protocol.drain_timeout, self._force_stop)

    def _force_stop(self) -> None:
        if not self.done.done():
            log.warning("drain deadline reached with %d connections open: closing them", len(self.conns))
            for conn in list(self.conns):
                if conn.tunnel is not None:
                    conn.tunnel.drain()
                else:
                    conn.transport.abort()
            self.done.set_result(None)

    def install_signals(self) -> None:
        self.loop.add_signal_handler(signal.SIGTERM, self.drain)
        self.loop.add_signal_handler(signal.SIGINT, self.drain)
        self.loop.add_signal_handler(signal.SIGHUP, self.reload)

    async def shutdown(self) -> None:
        for pool in self.pools.values():
            pool.close_all()
        if self._tick_handle is not None:
            self._tick_handle.cancel()


def run_worker(snap: Snapshot, config_path: Optional[str], sock: Optional[socket.socket] = None,
               ready: Optional[Callable[[Worker], None]] = None, index: int = 0) -> int:
    """Run one worker until drained. Returns the process exit code; `ListenError` when the main
    or the admin listener cannot be opened."""
    import uvloop

    malloc.tune()
    open_files = raise_open_files_limit()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(_serve(loop, snap, config_path, sock, ready, index, open_files))
    finally:
        loop.close()


async def _serve(loop: asyncio.AbstractEventLoop, snap: Snapshot, config_path: Optional[str],
                 sock: Optional[socket.socket], ready: Optional[Callable[[Worker], None]], index: int,
                 open_files: int = resource.RLIM_INFINITY) -> int:
    w = Worker(snap, loop, config_path, index)
    w.fd_limit = open_files
    w.cap()  # warns now if the open-files limit caps max_connections
    # the admin listener first: a worker that cannot have it exits before its main socket joins
    # the port's group, where connections the kernel gave it would be reset when it closes
    if snap.admin_port and index == 0:
        try:
            w.admin_server = await admin.start(w)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise ListenError(f"cannot listen on the admin address {show_addr(snap.admin_ip, snap.admin_port)}: "
                              f"{reason(exc)}") from exc
    if sock is None:
        try:
            sock = make_listener(snap.listen_ip, snap.port)
        except ListenError:
            if w.admin_server is not None:
                w.admin_server.close()
            raise
    w.listen(sock)
    w.install_signals()
    if ready is not None:
        ready(w)
    await w.done
    await w.shutdown()
    log.info("worker %d stopped", os.getpid())
    return 0

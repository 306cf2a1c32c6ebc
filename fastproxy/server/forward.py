"""Sending the active request to its backend, and what happens when the backend fails: the
acting half of the phases after the head (the deciding half is `phases`, `policies.chain`,
`upstream.select` and `http.upstream_head`).

  dispatch: route (or answer) → client IP → policies, waiting on Redis if need be
  send_upstream: pick a host (breakers) → backend policies → a pooled or new connection
  attach: the backend head and the body received so far, in the read's one backend write
  upstream_failed: report to the breaker, retry once (`phases.retry`) or answer 502/504
"""

from typing import TYPE_CHECKING, Optional

from fastproxy.http.upstream_head import backend_method, backend_target, request_head
from fastproxy.http.wire import LAST_CHUNK, chunk
from fastproxy.limits.headers import retry_after_value, rl_pairs
from fastproxy.policies import Rejection, chain
from fastproxy.server import phases
from fastproxy.server.exchange import CHECKING, DL_UPSTREAM, DONE, WAITING, Exchange
from fastproxy.server.flow import PIPELINE_BUFFER
from fastproxy.server.tunnel import handshake_lines
from fastproxy.upstream.connection import UpstreamConnection
from fastproxy.upstream.errors import ConnectError, FailureKind, status_for
from fastproxy.upstream.select import Picked, pick

if TYPE_CHECKING:
    from fastproxy.config.compile import Target
    from fastproxy.policies import Check
    from fastproxy.server.connection import ClientConnection
    from fastproxy.upstream.pool import Pool

PIPELINE_BYTES = 64 * 1024  # buffered request bodies per connection beyond which reading pauses
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def body_size(buf: list[bytes]) -> int:
    """Bytes in a buffered body."""
    size = 0
    for piece in buf:
        size += len(piece)
    return size


def dispatch(conn: "ClientConnection", x: Exchange) -> None:
    """Run the phases for the active request up to the backend."""
    w = conn.w
    x.started = w.clock()
    err = x.error
    if err is not None:
        conn.respond(x, err.status, err.reason, close=True)
        return
    snap = w.snap
    answer = phases.route(snap, x, w)
    if answer is not None:
        conn.respond(x, answer.status, answer.reason, answer.body, answer.extra,
                     content_type=answer.content_type)
        return
    resolver = snap.client_ip
    x.client_ip = resolver.resolve(conn.peer, x.headers) if resolver is not None else conn.peer
    route = x.route
    assert route is not None
    x.rstate = rs = w.state.routes[route.index]
    checks = rs.checks
    if checks:
        x.phase = CHECKING
        try:
            pending = chain.run(checks, x, 0, x.started)
        except Rejection as rej:
            reject(conn, x, rej)
            return
        if pending is not None:
            conn.deadline = x.started + route.timeout  # a safety net: decisions are bounded
            conn.dl_kind = DL_UPSTREAM
            _wait(conn, x, checks, pending)
            return
        w.metrics.policy_passed(route.name)
    send_upstream(conn, x, None, x.started)


def _wait(conn: "ClientConnection", x: Exchange, checks: "tuple[Check, ...]", pending: chain.Pending) -> None:
    """Resume the chain when its decision arrives (a closure: not in a compiled function)."""
    chain.follow(checks, x, pending, conn.w.clock, lambda err: checked(conn, x, err))


def checked(conn: "ClientConnection", x: Exchange, err: Optional[BaseException]) -> None:
    if conn.closing or x.phase != CHECKING:
        return
    assert x.route is not None
    if err is None:
        conn.w.metrics.policy_passed(x.route.name)
        send_upstream(conn, x, None, conn.w.clock())
    elif isinstance(err, Rejection):
        reject(conn, x, err)
    else:  # a bug must cost one request, not hang the connection
        conn.w.log.error("internal error in a policy of %s", x.route.name, exc_info=err)
        conn.respond(x, 500, "internal error", close=True)


def reject(conn: "ClientConnection", x: Exchange, rej: Rejection) -> None:
    extra = rej.headers
    if x.rl is not None and conn.w.snap.protocol.ratelimit_headers:
        extra = extra + rl_pairs(x.rl)
    assert x.route is not None
    conn.w.metrics.rejected(x.route.name, rej.reason)
    conn.respond(x, rej.status, rej.reason, extra=extra)


def send_upstream(conn: "ClientConnection", x: Exchange, avoid: "Optional[Target]", now: float,
                  fresh: bool = False) -> None:
    """Pick a host and a connection for `x` (`now`: the clock in this loop iteration)."""
    route = x.route
    assert route is not None
    w = conn.w
    rs = x.rstate
    assert rs is not None
    picked = pick(route.targets, rs, avoid, now)
    if picked.__class__ is float:
        assert isinstance(picked, float)
        w.metrics.rejected(route.name, "circuit open")
        conn.respond(x, 503, "circuit open", extra=((b"Retry-After", retry_after_value(picked)),))
        return
    if isinstance(picked, Picked):
        target = picked.target
        x.breaker = picked.breaker
        x.ticket = picked.ticket
    else:
        assert not isinstance(picked, float)
        target = picked
    x.target = target
    bchecks = rs.backend_checks
    if bchecks:
        try:
            for check in bchecks:
                check.check(x, now)
        except Rejection as rej:
            x.abandon(now)  # a backend limit is not a failure of the host
            reject(conn, x, rej)
            return
    x.phase = WAITING
    conn.deadline = x.started + route.timeout
    conn.dl_kind = DL_UPSTREAM
    pool = w.pool(target)
    up = None if fresh else pool.get(now)
    if up is not None:
        attach(conn, x, up)
    else:
        w.loop.create_task(connect(conn, x, pool))


async def connect(conn: "ClientConnection", x: Exchange, pool: "Pool") -> None:
    try:
        up = await pool.connect()
    except ConnectError as exc:
        if x.phase == WAITING and not conn.closing:
            upstream_failed(conn, x, exc.kind, str(exc))
        return
    if x.phase != WAITING or conn.closing or x is not (conn.queue[0] if conn.queue else None):
        up.release()
        return
    attach(conn, x, up)


def attach(conn: "ClientConnection", x: Exchange, up: UpstreamConnection) -> None:
    """Send `x` to the backend connection `up`: its head, and the body received so far."""
    x.up = up
    route = x.route
    assert route is not None and x.target is not None
    method = backend_method(x, route)
    resolver = conn.w.snap.client_ip
    xff = resolver.forwarded_for(conn.peer, x.headers) if resolver is not None else conn.peer_b
    extra = x.up_extra
    if x.upgrade and route.websocket is None:  # a reload took the namespace away meanwhile
        x.upgrade = False
    if x.upgrade:
        lines = handshake_lines(x, route)
        extra = lines if extra is None else extra + lines
    up.upgrade = x.upgrade
    parts = request_head(x, route, x.target, method, backend_target(x, route, x.params, x.rest), xff, extra)
    buf = x.body_buf
    if buf is not None:
        x.body_buf = None
        conn.buffered -= body_size(buf)
        if x.chunked:
            for piece in buf:
                parts.append(chunk(piece))
        else:
            parts += buf
        if conn.buffered <= PIPELINE_BYTES:
            conn.flow.resume(PIPELINE_BUFFER)
    if x.body_done:
        if x.chunked:
            parts.append(LAST_CHUNK)
        x.body_sent = True
    elif x.expect and not buf:
        conn.transport.write(CONTINUE_100)
    is_head = method == b"HEAD"
    held = conn.held
    if held is None:
        up.start(x, b"".join(parts), is_head)
    else:
        up.start(x, b"", is_head)
        held.append((x, up, b"".join(parts)))
    if conn.writing_paused:  # the client is not reading: do not read its answer yet
        up.pause_reading()


def upstream_failed(conn: "ClientConnection", x: Exchange, kind: FailureKind, detail: str = "") -> None:
    w = conn.w
    target = x.target
    route = x.route
    assert target is not None and route is not None
    w.metrics.upstream_error(target.key, kind)
    if x.breaker is not None:
        if kind is FailureKind.STALE:  # the pool's fault, not the host's
            x.breaker.cancel(x.ticket, w.clock())
        else:
            x.breaker.after(x.ticket, False, w.clock())
        x.breaker = None
    decision = phases.retry(x, kind)
    if decision is not phases.Retry.NO:
        x.retried = True
        if decision is phases.Retry.OTHER_HOST:
            w.log.warning("backend %s: %s; retrying on another host", target.key, detail or kind)
            send_upstream(conn, x, target, w.clock())
        else:
            send_upstream(conn, x, None, w.clock(), fresh=True)
        return
    if kind is FailureKind.STALE:
        kind = FailureKind.RESET
    if x.head_sent:
        # the response was cut: the client must see a broken stream, never a clean end
        x.phase = DONE
        x.reason = f"backend {kind} mid-response"
        conn.record(x)  # counted with the status that was sent, logged with why it was cut
        w.log.warning("backend %s failed mid-response (%s) for %s", target.key, kind, route.name)
        conn.closing = True
        if x.framing == 2:  # close-delimited: the close is the end the client can see
            conn.transport.close()
        else:
            conn.transport.abort()
        return
    status = status_for(kind)
    w.log.warning("backend %s: %s for %s %s", target.key, detail or kind, route.name, status)
    # KrakenD's router.return_error_msg: the error text as the body (empty by default)
    body = (detail or kind).encode() if w.snap.protocol.return_error_msg else b""
    conn.respond(x, status, f"backend {kind}", body=body, close=not x.body_done)

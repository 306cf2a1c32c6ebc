"""Which backend host a request goes to: round robin over the route's hosts, skipping the
hosts whose breaker is open. A pure decision over the route's runtime state: no I/O.

Rules it keeps: with breakers, a host is only picked with a ticket from its breaker (the
half-open probe slot included), so every admitted request reports back exactly once (`after`)
or cancels (`cancel`); a retry avoids the host that failed when there is another; when every
breaker is open the answer is the soonest any of them lets a probe through (Retry-After).
"""

from typing import TYPE_CHECKING, Optional, Union

from fastproxy.breaker import CircuitBreaker

if TYPE_CHECKING:
    from fastproxy.config.compile import Target
    from fastproxy.policies.state import RouteState


class Picked:
    """The host for one attempt, and its breaker's ticket when the route has breakers."""

    __slots__ = ("target", "breaker", "ticket")

    def __init__(self, target: "Target", breaker: Optional[CircuitBreaker], ticket: object) -> None:
        self.target = target
        self.breaker = breaker
        self.ticket = ticket


def pick(targets: "tuple[Target, ...]", rs: "RouteState", avoid: "Optional[Target]",
         now: float) -> Union["Target", Picked, float]:
    """A Target (no breakers), a Picked (with its ticket), or, when every host's breaker is
    open, the seconds until the first one admits a probe. `rs`: the route's worker state (its
    breakers and round-robin position)."""
    breakers = rs.breakers
    n = len(targets)
    if breakers is None:
        if n == 1:
            return targets[0]
        i = rs.rr
        rs.rr = i + 1
        target = targets[i % n]
        if target is avoid:
            target = targets[(i + 1) % n]
        return target
    i = rs.rr
    rs.rr = i + 1
    for k in range(n):
        t = targets[(i + k) % n]
        if t is avoid and n > 1:
            continue
        b = breakers.for_target(t)
        ticket = b.before(now)
        if ticket is not None:
            return Picked(t, b, ticket)
    soonest = breakers.for_target(targets[0]).retry_after(now)
    for t in targets:
        soonest = min(soonest, breakers.for_target(t).retry_after(now))
    return soonest

"""The one runner of a policy chain, for the server and for chains inside a policy (a tier's
limits): checks run in order; each passes (None), refuses (raises Rejection) or must wait (a
Redis decision: returns a future). Waiting suspends the chain at the next check; `follow`
resumes it when the decision arrives, as often as needed, and reports the outcome once.
"""

import asyncio
from collections.abc import Callable
from typing import Any, Optional


class Pending:
    """A chain suspended on `future`, the decision of `check`; it resumes at `next`."""

    __slots__ = ("future", "check", "next")

    def __init__(self, future: "asyncio.Future[Any]", check: Any, nxt: int) -> None:
        self.future = future
        self.check = check
        self.next = nxt


def run(checks: tuple[Any, ...], x: Any, start: int, now: float) -> Optional[Pending]:
    """Run `checks[start:]` for `x`: None when all passed; a Pending when one must wait.
    A refusal raises Rejection."""
    i = start
    n = len(checks)
    while i < n:
        check = checks[i]
        i += 1
        fut = check.check(x, now)
        if fut is not None:
            return Pending(fut, check, i)
    return None


def follow(checks: tuple[Any, ...], x: Any, pending: Pending, clock: Callable[[], float],
           done: Callable[[Optional[BaseException]], None]) -> None:
    """When `pending` resolves, complete its check and run the rest of the chain (waiting
    again if need be); then call `done(None)` if every check passed, else `done(error)` with
    the Rejection (or the unexpected exception) that stopped it."""

    def resolved(fut: "asyncio.Future[Any]") -> None:
        try:
            pending.check.complete(x, fut.result(), clock())
            nxt = run(checks, x, pending.next, clock())
        except Exception as exc:
            done(exc)
            return
        if nxt is None:
            done(None)
        else:
            follow(checks, x, nxt, clock, done)

    pending.future.add_done_callback(resolved)

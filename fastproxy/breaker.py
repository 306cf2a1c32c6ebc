"""Per-host circuit breaker (SPEC §3.8), a pure state machine modelled on sony/gobreaker v2.

No I/O, no clocks, no asyncio: every method takes ``now`` (monotonic seconds, float) and the
caller owns the clock, the logging and the metrics (through ``on_change``).

States and transitions (KrakenD's gobreaker settings: MaxRequests 1, fixed window)::

    state      before(now)                         after(ticket, ok, now)         cancel(ticket, now)
    ---------  ----------------------------------  -----------------------------  -------------------
    closed     ticket (current generation)         ok: failures = 0               no effect
                                                   fail: failures += 1; if
                                                   failures > max_errors -> open
    open       None until now >= opened + timeout, (only stale tickets arrive:    ignored
               then lazily -> half-open (below)    ignored)
    half-open  first caller gets the probe ticket; ok: -> closed                  frees the probe
               everyone else None until the probe  fail: -> open (full timeout)   slot; not counted
               reports

Rules:

* Trip threshold: the breaker opens when consecutive failures EXCEED ``max_errors``, i.e. on
  failure number ``max_errors + 1`` (gobreaker ``ReadyToTrip: ConsecutiveFailures > max_errors``);
  ``max_errors=0`` trips on the first failure. A success resets the count.
* Fixed window: while closed the counters are cleared every ``interval`` seconds, counted from
  the last state change or the last window start; the check is lazy (done when the breaker is
  next touched, so a new window starts at that moment, as gobreaker). ``interval=0`` never clears.
* ``timeout=0`` means 60 s (gobreaker's default). The open -> half-open change is lazy too; it
  happens in ``before``/``after``/``cancel``/``state`` once ``now >= opened_at + timeout``.
* Generations: every state transition, and every closed-window reset, starts a new generation,
  and ``before`` hands out the generation as the ticket. A result carrying an older ticket is
  ignored. Without this a slow request that started while closed and succeeds after the breaker
  opened would close it again (or a late failure would reopen/extend a recovered breaker), and a
  result from the previous window would leak into the new window's counts.
* One probe: half-open admits exactly one request (gobreaker MaxRequests=1 as KrakenD leaves it).
  A struggling upstream gets one request, not the whole backlog, and one outcome decides: success
  closes with fresh counts, failure reopens for another full ``timeout``. A cancelled probe (client
  hung up) tells nothing about the upstream, so it frees the slot for the next caller instead.
* Cancellation (client abort) counts as neither success nor failure (gobreaker IsExcluded,
  KrakenD CE >= 2.13.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN", "DEFAULT_TIMEOUT"]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

#: gobreaker's open-state duration when ``timeout`` is 0.
DEFAULT_TIMEOUT = 60.0

OnChange = Callable[["CircuitBreaker", str, str, float], object]


class CircuitBreaker:
    """Consecutive-failure circuit breaker; see the module docstring for the rules."""

    __slots__ = (
        "max_errors",
        "interval",
        "timeout",
        "name",
        "on_change",
        "_state",
        "_generation",
        "_failures",
        "_expiry",
        "_probe_busy",
    )

    def __init__(
        self,
        max_errors: int,
        interval: float,
        timeout: float,
        name: str = "",
        on_change: Optional[OnChange] = None,
    ) -> None:
        if max_errors < 0:
            raise ValueError(f"max_errors must be >= 0, got {max_errors!r}")
        if interval < 0:
            raise ValueError(f"interval must be >= 0, got {interval!r}")
        if timeout < 0:
            raise ValueError(f"timeout must be >= 0, got {timeout!r}")
        self.max_errors = int(max_errors)
        self.interval = float(interval)
        self.timeout = float(timeout) if timeout > 0 else DEFAULT_TIMEOUT
        self.name = name
        self.on_change = on_change
        self._state = CLOSED
        self._generation = 0
        self._failures = 0
        # closed: end of the current counting window (inf when interval is 0);
        # open: when the probe may go; half-open: unused (inf).
        # The first window is anchored lazily at the first call (no clock in __init__).
        self._expiry = math.inf if self.interval == 0 else -math.inf
        self._probe_busy = False

    # ------------------------------------------------------------------ internals

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self._failures = 0
        self._probe_busy = False
        state = self._state
        if state is CLOSED:
            self._expiry = now + self.interval if self.interval else math.inf
        elif state is OPEN:
            self._expiry = now + self.timeout
        else:
            self._expiry = math.inf

    def _set_state(self, new: str, now: float) -> None:
        old = self._state
        if old is new:
            return
        self._state = new
        self._new_generation(now)
        if self.on_change is not None:
            self.on_change(self, old, new, now)

    def _refresh(self, now: float) -> str:
        """Apply the lazy time-driven changes (window reset, open -> half-open)."""
        state = self._state
        if now >= self._expiry:
            if state is CLOSED:
                if self._generation == 0 and self._expiry == -math.inf:
                    # first use: anchor the first window without invalidating anything
                    self._expiry = now + self.interval
                else:
                    self._new_generation(now)
            elif state is OPEN:
                self._set_state(HALF_OPEN, now)
                state = HALF_OPEN
        return state

    # ------------------------------------------------------------------ hot path

    def before(self, now: float) -> Optional[int]:
        """Admission: a ticket to pass to ``after``/``cancel``, or None when refused."""
        if self._state is CLOSED and now < self._expiry:
            return self._generation
        state = self._refresh(now)
        if state is CLOSED:
            return self._generation
        if state is HALF_OPEN and not self._probe_busy:
            self._probe_busy = True
            return self._generation
        return None

    def after(self, ticket: int, ok: bool, now: float) -> None:
        """Report the outcome of a request admitted with ``ticket``."""
        if self._state is CLOSED and now < self._expiry:
            state = CLOSED
        else:
            state = self._refresh(now)
        if ticket != self._generation:
            return  # started in an earlier generation: ignored
        if state is CLOSED:
            if ok:
                self._failures = 0
            else:
                self._failures += 1
                if self._failures > self.max_errors:
                    self._set_state(OPEN, now)
        elif state is HALF_OPEN:
            self._set_state(CLOSED if ok else OPEN, now)

    def cancel(self, ticket: int, now: float) -> None:
        """The client abandoned the request: not counted; frees the half-open probe slot."""
        state = self._refresh(now)
        if ticket == self._generation and state is HALF_OPEN:
            self._probe_busy = False

    # ------------------------------------------------------------------ queries

    def state(self, now: float) -> str:
        """Current state, after applying the lazy open -> half-open change."""
        return self._refresh(now)

    def retry_after(self, now: float) -> float:
        """Seconds until a probe will be admitted: 0 unless open (and not yet due)."""
        if self._state is OPEN:
            # clamped: float rounding (or a clock read before the opening) must not exceed timeout
            return min(self.timeout, max(0.0, self._expiry - now))
        return 0.0

    def allows(self, now: float) -> bool:
        """Side-effect-free peek: would ``before(now)`` admit a request?"""
        state = self._state
        if state is CLOSED:
            return True
        if state is OPEN:
            return now >= self._expiry
        return not self._probe_busy

    @property
    def consecutive_failures(self) -> int:
        """Consecutive failures counted in the current closed window."""
        return self._failures

    @property
    def generation(self) -> int:
        return self._generation

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self._state!r}, "
            f"failures={self._failures}, max_errors={self.max_errors}, "
            f"interval={self.interval}, timeout={self.timeout})"
        )

"""Circuit breaker state machine (SPEC §3.8, gobreaker semantics as KrakenD configures it).

Most tests are tables of steps ``(time, action, expected_state)`` played by ``play``:

    "admit x"   before(t) must return a ticket, remembered as x
    "refuse"    before(t) must return None
    "ok x"      after(x, True, t)
    "fail x"    after(x, False, t)
    "cancel x"  cancel(x, t)
    "-"         nothing, only check the state
    "req"       admit then ok; "err": admit then fail (a request completing at once)

``expected_state`` (or None to skip) is checked with ``state(t)`` after the action.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastproxy.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker

C, O, H = CLOSED, OPEN, HALF_OPEN


def play(cb: CircuitBreaker, steps):
    tickets: dict[str, int] = {}
    for i, (t, action, expected) in enumerate(steps):
        where = f"step {i} at t={t}: {action!r}"
        op, _, name = action.partition(" ")
        if op == "admit":
            ticket = cb.before(t)
            assert ticket is not None, f"{where}: refused, state {cb.state(t)}"
            tickets[name] = ticket
        elif op == "refuse":
            assert cb.before(t) is None, f"{where}: admitted, state {cb.state(t)}"
        elif op in ("req", "err"):
            ticket = cb.before(t)
            assert ticket is not None, f"{where}: refused, state {cb.state(t)}"
            cb.after(ticket, op == "req", t)
        elif op == "ok":
            cb.after(tickets[name], True, t)
        elif op == "fail":
            cb.after(tickets[name], False, t)
        elif op == "cancel":
            cb.cancel(tickets[name], t)
        elif op != "-":
            raise AssertionError(f"bad action {action!r}")
        if expected is not None:
            assert cb.state(t) == expected, where
    return cb


def make(max_errors=0, interval=0.0, timeout=10.0, **kw) -> CircuitBreaker:
    return CircuitBreaker(max_errors, interval, timeout, **kw)


# --------------------------------------------------------------------------- tripping


def test_max_errors_0_trips_on_the_first_failure():
    play(make(max_errors=0), [
        (0, "-", C),
        (1, "err", O),
        (1, "refuse", O),
    ])


def test_krakend_max_errors_1_trips_on_the_second_failure():
    play(make(max_errors=1), [
        (1, "err", C),
        (2, "err", O),
        (3, "refuse", O),
    ])


def test_trips_exactly_when_consecutive_failures_exceed_max_errors():
    # gobreaker CB-1..CB-3 with ReadyToTrip ConsecutiveFailures > 5
    cb = make(max_errors=5)
    play(cb, [(t, "err", C) for t in range(5)])
    assert cb.consecutive_failures == 5
    play(cb, [(5, "err", O)])
    assert cb.consecutive_failures == 0  # counts reset on the state change


def test_a_success_in_between_resets_the_consecutive_failure_count():
    cb = play(make(max_errors=2), [
        (1, "err", C),
        (2, "err", C),
        (3, "req", C),
        (4, "err", C),
        (5, "err", C),
        (6, "err", O),
    ])
    assert cb.consecutive_failures == 0


def test_concurrent_failures_all_count_while_closed():
    play(make(max_errors=1), [
        (0, "admit a", C),
        (0, "admit b", C),
        (0, "admit c", C),
        (1, "fail a", C),
        (1, "fail b", O),
        (1, "fail c", O),  # stale now: does not extend the open period
        (10.9, "refuse", O),
        (11, "admit probe", H),
    ])


# --------------------------------------------------------------------------- interval window


def test_interval_resets_the_failure_count_while_closed():
    play(make(max_errors=1, interval=30), [
        (0, "err", C),       # window [0, 30)
        (29, "-", C),
        (31, "err", C),      # window reset at 31: this is failure 1 of the new window
        (60, "err", O),      # 60 < 61: same window, failure 2 > 1
    ])


def test_interval_window_is_fixed_not_sliding():
    # failures at 10 and 29 are consecutive within the window starting at 0; a failure at
    # 31 starts a fresh window even though the previous failure was only 2 s before.
    play(make(max_errors=1, interval=30), [
        (0, "req", C),
        (10, "err", C),
        (31, "err", C),
        (32, "err", O),
    ])


def test_interval_0_never_resets_the_counters():
    play(make(max_errors=2, interval=0), [
        (0, "err", C),
        (1_000, "err", C),
        (1_000_000, "err", O),
    ])


def test_result_from_a_previous_window_is_ignored():
    # gobreaker CB-11: a call starting at 29 s ending at 30.5 s does not touch the new window
    cb = play(make(max_errors=0, interval=30), [
        (0, "req", C),
        (29, "admit slow", C),
        (30.5, "fail slow", C),
    ])
    assert cb.consecutive_failures == 0


def test_window_restarts_after_the_breaker_closes_again():
    play(make(max_errors=1, interval=30, timeout=5), [
        (0, "err", C),
        (1, "err", O),
        (6, "req", C),       # probe closes at 6: new window [6, 36)
        (20, "err", C),
        (35, "err", O),
    ])


# --------------------------------------------------------------------------- open / half-open


def test_open_breaker_refuses_until_the_timeout_elapses():
    play(make(timeout=10), [
        (0, "err", O),
        (0.001, "refuse", O),
        (5, "refuse", O),
        (9.999, "refuse", O),
        (10, "-", H),
    ])


def test_timeout_0_means_60_seconds():
    cb = make(timeout=0)
    assert cb.timeout == 60.0
    play(cb, [
        (0, "err", O),
        (59.9, "refuse", O),
        (60.1, "admit probe", H),
    ])


def test_open_breaker_lets_one_probe_through_after_timeout():
    play(make(timeout=10), [
        (0, "err", O),
        (11, "admit probe", H),
        (11, "refuse", H),      # a second concurrent request is refused
        (12, "refuse", H),
        (100, "refuse", H),     # still waiting for the probe: no time limit on it
    ])


def test_successful_probe_closes_the_breaker_with_fresh_counts():
    cb = play(make(max_errors=1, timeout=10), [
        (0, "err", C),
        (1, "err", O),
        (11, "admit probe", H),
        (11, "refuse", H),
        (12, "ok probe", C),
        (12, "admit a", C),
        (12, "admit b", C),
        (13, "err", C),         # fresh count: first failure only
    ])
    assert cb.consecutive_failures == 1


def test_failed_probe_reopens_for_another_full_timeout():
    play(make(timeout=10), [
        (0, "err", O),
        (11, "admit probe", H),
        (15, "fail probe", O),
        (24.9, "refuse", O),    # 15 + 10: the new period counts from the probe failure
        (25, "admit probe2", H),
        (26, "ok probe2", C),
    ])


def test_stale_success_arriving_after_opening_does_not_close():
    play(make(max_errors=0, timeout=10), [
        (0, "admit slow", C),
        (1, "err", O),
        (2, "ok slow", O),
        (5, "refuse", O),
    ])


def test_stale_success_arriving_in_half_open_does_not_close_or_free_the_probe():
    play(make(max_errors=0, timeout=10), [
        (0, "admit slow", C),
        (1, "err", O),
        (11, "admit probe", H),
        (12, "ok slow", H),
        (12, "cancel slow", H),
        (12, "refuse", H),
        (13, "ok probe", C),
    ])


def test_stale_failure_does_not_reopen_or_extend_the_open_period():
    play(make(max_errors=0, timeout=10), [
        (0, "admit slow1", C),
        (0, "admit slow2", C),
        (1, "err", O),
        (5, "fail slow1", O),       # would move the reopen to 15 if counted
        (11, "admit probe", H),
        (11.5, "fail slow2", H),    # would reopen if counted
        (12, "ok probe", C),
    ])


def test_stale_probe_result_from_an_earlier_half_open_is_ignored():
    play(make(max_errors=0, timeout=10), [
        (0, "err", O),
        (10, "admit p1", H),
        (11, "cancel p1", H),
        (11, "admit p2", H),
        (12, "fail p2", O),
        (13, "ok p1", O),   # p1 belongs to the previous half-open generation
    ])


# --------------------------------------------------------------------------- cancellation


def test_cancel_frees_the_probe_slot_and_is_not_counted():
    play(make(timeout=10), [
        (0, "err", O),
        (10, "admit probe", H),
        (10, "refuse", H),
        (11, "cancel probe", H),   # neither closes nor reopens
        (11, "admit probe2", H),   # slot free again
        (11, "refuse", H),
        (12, "ok probe2", C),
    ])


def test_cancel_while_closed_counts_neither_success_nor_failure():
    cb = play(make(max_errors=1), [
        (0, "admit a", C),
        (0, "admit b", C),
        (1, "err", C),
        (2, "cancel a", C),     # not a success: the failure count stays at 1
        (3, "cancel b", C),     # not a failure: does not trip
    ])
    assert cb.consecutive_failures == 1
    play(cb, [(4, "err", O)])


# --------------------------------------------------------------------------- on_change


def test_on_change_is_called_once_per_transition_with_old_and_new_state():
    calls = []
    cb = make(max_errors=0, timeout=10, name="users",
              on_change=lambda b, old, new, now: calls.append((b.name, old, new, now)))
    play(cb, [
        (0, "req", C),
        (1, "err", O),
        (2, "refuse", O),
        (12, "admit p", H),
        (13, "fail p", O),
        (23, "-", H),           # state() applies the lazy transition too
        (24, "admit p", H),
        (25, "ok p", C),
        (26, "req", C),
    ])
    assert calls == [
        ("users", C, O, 1),
        ("users", O, H, 12),
        ("users", H, O, 13),
        ("users", O, H, 23),
        ("users", H, C, 25),
    ]


def test_interval_window_reset_is_not_a_transition():
    calls = []
    cb = make(max_errors=3, interval=5, on_change=lambda *a: calls.append(a))
    play(cb, [(t, "err", C) for t in (0, 6, 12, 18)])
    assert calls == []


def test_on_change_sees_the_new_state_already_applied():
    seen = []
    cb = make(max_errors=0, timeout=10)
    cb.on_change = lambda b, old, new, now: seen.append((b.state(now), b.allows(now)))
    play(cb, [(0, "err", O), (10, "admit p", H)])
    assert seen == [(O, False), (H, True)]  # H: the probe is taken after the change


# --------------------------------------------------------------------------- retry_after / allows


@pytest.mark.parametrize(
    "steps, t, retry_after, allows",
    [
        pytest.param([], 0, 0.0, True, id="fresh breaker is closed"),
        pytest.param([(0, "err", O)], 0, 10.0, False, id="just opened"),
        pytest.param([(0, "err", O)], 7.5, 2.5, False, id="open, part of timeout elapsed"),
        pytest.param([(0, "err", O)], 10, 0.0, True, id="open, timeout elapsed, not yet touched"),
        pytest.param([(0, "err", O)], 30, 0.0, True, id="open, long past timeout"),
        pytest.param([(0, "err", O), (10, "-", H)], 10, 0.0, True, id="half-open, probe slot free"),
        pytest.param([(0, "err", O), (10, "admit p", H)], 10, 0.0, False,
                     id="half-open, probe in flight"),
        pytest.param([(0, "err", O), (10, "admit p", H), (11, "cancel p", H)], 11, 0.0, True,
                     id="half-open, probe cancelled"),
        pytest.param([(0, "err", O), (10, "admit p", H), (12, "fail p", O)], 13, 9.0, False,
                     id="reopened after failed probe"),
        pytest.param([(0, "err", O), (10, "admit p", H), (12, "ok p", C)], 13, 0.0, True,
                     id="closed after good probe"),
    ],
)
def test_retry_after_and_allows(steps, t, retry_after, allows):
    cb = play(make(max_errors=0, timeout=10), steps)
    assert cb.retry_after(t) == pytest.approx(retry_after)
    assert cb.allows(t) is allows


def test_allows_is_side_effect_free():
    cb = play(make(max_errors=0, timeout=10), [(0, "err", O)])
    gen = cb.generation
    assert cb.allows(20) is True
    assert cb.allows(20) is True
    assert cb.generation == gen
    assert cb._state == OPEN  # the lazy transition is left to before()/state()
    assert cb.before(20) is not None
    assert cb.allows(20) is False


# --------------------------------------------------------------------------- construction


def test_constructor_validates_and_keeps_settings():
    cb = CircuitBreaker(3, 2.5, 7, name="b1")
    assert (cb.max_errors, cb.interval, cb.timeout, cb.name) == (3, 2.5, 7.0, "b1")
    assert cb.state(0) == CLOSED
    assert not hasattr(cb, "__dict__")
    for bad in ((-1, 0, 0), (0, -1, 0), (0, 0, -1)):
        with pytest.raises(ValueError):
            CircuitBreaker(*bad)


def test_first_window_starts_at_first_use_not_at_construction():
    # no clock in __init__: a breaker created long before its first request gets a full window
    play(make(max_errors=1, interval=30), [
        (1000, "err", C),
        (1029, "err", O),
    ])


# --------------------------------------------------------------------------- properties

events = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=5, allow_nan=False),
        st.sampled_from(["before", "ok", "fail", "cancel", "peek"]),
        st.integers(min_value=0, max_value=20),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    max_errors=st.integers(min_value=0, max_value=3),
    interval=st.sampled_from([0.0, 3.0, 10.0]),
    timeout=st.sampled_from([0.0, 1.0, 4.0]),
    script=events,
)
def test_invariants_hold_for_any_event_sequence(max_errors, interval, timeout, script):
    transitions = []
    cb = CircuitBreaker(max_errors, interval, timeout,
                        on_change=lambda b, old, new, now: transitions.append((old, new)))
    now = 0.0
    outstanding: list[int] = []
    for dt, ev, pick in script:
        now += dt
        if ev == "before":
            # allows() predicts before() exactly and does not change anything
            snapshot = copy.copy(cb)
            predicted = cb.allows(now)
            assert (cb._state, cb._generation, cb._probe_busy) == (
                snapshot._state, snapshot._generation, snapshot._probe_busy)
            ticket = cb.before(now)
            assert (ticket is not None) == predicted
            if ticket is not None:
                outstanding.append(ticket)
        elif ev in ("ok", "fail", "cancel") and outstanding:
            ticket = outstanding.pop(pick % len(outstanding))
            if ev == "cancel":
                cb.cancel(ticket, now)
            else:
                cb.after(ticket, ev == "ok", now)
        state = cb.state(now)
        if state == HALF_OPEN:
            # at most one probe: the only current-generation tickets in flight are probes
            in_flight = sum(1 for x in outstanding if x == cb.generation)
            assert in_flight == (1 if cb._probe_busy else 0)
        assert state in (CLOSED, OPEN, HALF_OPEN)
        if state == OPEN:
            assert 0 < cb.retry_after(now) <= cb.timeout
        else:
            assert cb.retry_after(now) == 0
        assert cb.consecutive_failures <= cb.max_errors
    # transitions form a chain and only follow the allowed edges
    allowed = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}
    assert all(t in allowed for t in transitions)
    for (_, new), (old, _) in zip(transitions, transitions[1:]):
        assert new == old

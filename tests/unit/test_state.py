"""The per-worker State (`policies.state`): built from a frozen snapshot, one RouteState per
route, and a reload that takes over the breakers and buckets of unchanged policies only."""

import dataclasses

import pytest

from fastproxy.config.compile import compile_config
from fastproxy.policies.state import State

CB = "qos/circuit-breaker"


def cfg(max_errors: int = 1, name: str = "backend", log: bool = False) -> dict:
    breaker = {"interval": 60, "timeout": 10, "max_errors": max_errors, "name": name, "log_status_change": log}
    return {"version": 3, "host": ["http://127.0.0.1:9"], "endpoints": [
        {"endpoint": p, "backend": [{"url_pattern": p, "extra_config": {CB: breaker}}]} for p in ("/a", "/b")]}


def test_the_snapshot_is_frozen():
    snap = compile_config(cfg())
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.port = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.route_list[0].checks = ()  # type: ignore[misc]


def test_each_route_gets_its_own_breakers_even_with_the_same_settings_and_name():
    snap = compile_config(cfg())
    state = State(snap, 0.0)
    a, b = (state.routes[r.index] for r in snap.route_list)
    assert a.breakers is not None and b.breakers is not None
    assert a.breakers.breakers is not b.breakers.breakers


def test_a_reload_keeps_unchanged_breakers_and_resets_changed_ones():
    snap = compile_config(cfg())
    old = State(snap, 0.0)
    target = snap.route_list[0].targets[0]
    breaker = old.routes[0].breakers.for_target(target)
    assert breaker.before(0.0) is not None
    same = State(compile_config(cfg(log=True)), 1.0, previous=old)  # logging only: state kept
    assert same.routes[0].breakers.for_target(target) is breaker
    assert breaker.on_change == same.routes[0].breakers._on_change  # reports through the new settings
    changed = State(compile_config(cfg(max_errors=5)), 2.0, previous=same)
    assert changed.routes[0].breakers.for_target(target) is not breaker


def test_the_round_robin_position_is_per_worker_state():
    snap = compile_config(cfg())
    one, two = State(snap, 0.0), State(snap, 0.0)
    one.routes[0].rr += 3
    assert (one.routes[0].rr, two.routes[0].rr) == (3, 0)

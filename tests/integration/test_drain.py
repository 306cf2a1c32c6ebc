"""Signals and the process model (SPEC §1, §4): SIGTERM drains, SIGHUP reloads (a bad file keeps
the old configuration), several workers share the port and a dead worker is replaced.

Every test starts its own proxy through the real CLI. Readiness is the ready line; everything
else is polled against a deadline.
"""

import json
import os
import signal
import socket
import time

import pytest

from tests.integration.netutil import BrokenStream, Client, build, wait_for
from tests.support import Proxy, Upstream, config, ep, free_port, get


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


def settings(**kw) -> dict:
    return {"fastproxy": {"read_header_timeout": "2s", "idle_timeout": "5s", **kw}}


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


def child_pids(pid: int) -> set:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def test_sigterm_finishes_the_in_flight_response_with_connection_close_and_exits_0(tmp_path, upstream):
    p = Proxy(config(upstream, [ep("/slow/{ms}"), ep("/x")], listen_ip="127.0.0.1", timeout="5s",
                     extra_config=settings(drain_timeout="10s")), tmp_path)
    try:
        busy = Client(p.port)
        busy.send(build("GET", "/slow/800"))
        wait_for(lambda: any(r["url"] == "/slow/800" for r in upstream.requests))
        # a connection in the middle of a head, and an idle keep-alive one
        partial = Client(p.port)
        partial.send(b"GET /__health HTTP/1.1\r\nHost: a\r\n")
        idle = Client(p.port)
        assert idle.request("GET", "/x").status == 200  # round trip: the partial head was read too

        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        wait_for(lambda: refused(p.port), timeout=3)  # no new connections
        assert idle.closed(2)  # idle keep-alive connections are closed at once

        partial.send(b"\r\n")
        health = partial.response()
        assert health.status == 503  # draining
        assert health.header("connection").lower() == "close"
        assert partial.closed()

        r = busy.response()
        assert (r.status, r.body) == (200, b"slow")
        assert r.header("connection").lower() == "close"
        assert busy.closed()
        assert p.proc.wait(5) == 0
        assert time.monotonic() - t0 < 3
    finally:
        p.stop()


def test_drain_deadline_cuts_what_is_still_running(tmp_path, upstream):
    p = Proxy(config(upstream, [ep("/slow/{ms}")], listen_ip="127.0.0.1", timeout="10s",
                     extra_config=settings(drain_timeout="300ms")), tmp_path)
    try:
        c = Client(p.port)
        c.send(build("GET", "/slow/3000"))
        wait_for(lambda: any(r["url"] == "/slow/3000" for r in upstream.requests))
        t0 = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.proc.wait(5) == 0
        assert time.monotonic() - t0 < 2
        with pytest.raises((EOFError, BrokenStream)):
            c.response()
    finally:
        p.stop()


def test_sighup_with_a_bad_file_keeps_the_old_config_then_a_good_file_is_loaded(tmp_path, upstream):
    old = config(upstream, [ep("/old", "/echo")], listen_ip="127.0.0.1", extra_config=settings())
    p = Proxy(old, tmp_path)
    try:
        assert get(p.port, "/old")[0] == 200
        bad = dict(old, endpoints=[{"endpoint": "/new", "backend": [{"url_pattern": "/echo"}],
                                    "timeout": "soon"}])
        p.write_config(bad)
        p.signal(signal.SIGHUP)
        wait_for(lambda: "refused" in p.stderr())
        err = p.stderr()
        assert "$.endpoints[0].timeout" in err and "soon" in err
        assert get(p.port, "/old")[0] == 200
        assert get(p.port, "/new")[0] == 404

        p.write_config(dict(old, endpoints=[ep("/new", "/echo")]))
        p.signal(signal.SIGHUP)
        wait_for(lambda: get(p.port, "/new")[0] == 200)
        assert get(p.port, "/old")[0] == 404
        status, _, body = get(p.port, "/new")
        assert status == 200 and json.loads(body)["url"] == "/echo"
        assert p.proc.poll() is None
    finally:
        assert p.stop() == 0


def test_syntax_error_on_reload_is_reported_with_line_and_column(tmp_path, upstream):
    p = Proxy(config(upstream, [ep("/old", "/echo")], listen_ip="127.0.0.1", extra_config=settings()), tmp_path)
    try:
        with open(p.config_path, "w") as f:
            f.write('{"version": 3,\n  "endpoints": [\n')
        p.signal(signal.SIGHUP)
        wait_for(lambda: "refused" in p.stderr())
        assert "line " in p.stderr()
        assert get(p.port, "/old")[0] == 200
    finally:
        assert p.stop() == 0


def test_two_workers_share_the_port_and_a_killed_worker_is_replaced(tmp_path, upstream):
    port = free_port()
    p = Proxy(config(upstream, [ep("/x")], listen_ip="127.0.0.1", extra_config=settings()), tmp_path,
              workers=2, port=port)
    try:
        assert "2 workers" in p.ready_line and f":{port}" in p.ready_line
        workers = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(child_pids(p.proc.pid)))
        for _ in range(10):
            assert get(port, "/x")[0] == 200

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        replaced = wait_for(lambda: (lambda c: c if len(c) == 2 and victim not in c else None)(
            child_pids(p.proc.pid)), timeout=5)
        assert replaced - workers, "no new worker pid"
        # the replacement serves: every request on a fresh connection succeeds
        wait_for(lambda: all(get(port, "/x")[0] == 200 for _ in range(10)), timeout=5)
        assert "replacing it" in p.stderr()
    finally:
        assert p.stop() == 0

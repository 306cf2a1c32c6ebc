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
        # a client closes its end once it has read the close; the proxy would otherwise keep
        # reading from these half-closed connections for LINGER (2 s) before it exits
        for c in (busy, partial, idle):
            c.close()
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


def _log_times(text: str, needle: str) -> list:
    """Seconds (from the log's own timestamps) of every log line containing `needle`."""
    out = []
    for line in text.splitlines():
        if needle in line:
            hms, ms = line.split(" ")[1].split(",")
            h, m, s = hms.split(":")
            out.append(int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000)
    return out


def _bindable(port: int) -> bool:
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def _take(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(16)
    return s


def test_a_worker_that_cannot_start_is_retried_with_backoff_while_the_others_serve(tmp_path, upstream):
    """Worker 0 holds the admin listener. Kill it while the master is stopped, let another
    program take the admin port, resume the master: each replacement fails to bind, says why,
    and the next one waits twice as long; once the port is free again worker 0 comes back."""
    port, admin = free_port(), free_port()
    p = Proxy(config(upstream, [ep("/x")], listen_ip="127.0.0.1", extra_config=settings(admin={"port": admin})),
              tmp_path, workers=2, port=port)
    thief = None
    try:
        worker0 = json.loads(get(admin, "/__health")[2])["pid"]
        os.kill(p.proc.pid, signal.SIGSTOP)
        try:
            os.kill(worker0, signal.SIGKILL)
            wait_for(lambda: _bindable(admin), timeout=5)  # its sockets close as it dies
            thief = _take(admin)
        finally:
            os.kill(p.proc.pid, signal.SIGCONT)
        failed = "worker 0 could not start: cannot listen on the admin address"
        wait_for(lambda: len(_log_times(p.stderr(), failed)) >= 4, timeout=10)
        # the other worker serves all along
        for _ in range(10):
            assert get(port, "/x")[0] == 200
        err = p.stderr()
        assert f"{failed} 127.0.0.1:{admin}: the port is already in use by another process" in err
        assert "exited with code 3 before it was ready: replacing it in 0.4 s (failed starts in a row: 3)" in err
        times = _log_times(err, failed)
        gaps = [b - a for a, b in zip(times, times[1:])]
        # waits of 0.2, 0.4, 0.8 s between the attempts (the kill itself counted as the first
        # failure, 0.1 s): about 60 attempts a second without the backoff
        for gap, wait in zip(gaps, (0.2, 0.4, 0.8)):
            assert wait * 0.9 <= gap <= wait + 0.5, (gaps, err)
        thief.close()
        thief = None
        # the next attempt, 1.6 s after the last, finds the port free
        health = wait_for(lambda: _admin_health(admin), timeout=5)
        assert json.loads(health)["pid"] != worker0
        assert p.proc.poll() is None
    finally:
        if thief is not None:
            thief.close()
        assert p.stop() == 0


def _admin_health(port: int) -> bytes:
    try:
        status, _, body = get(port, "/__health", timeout=1)
    except OSError:
        return b""
    return body if status == 200 else b""


def test_the_master_gives_up_when_no_worker_can_start(tmp_path, upstream):
    port = free_port()
    p = Proxy(config(upstream, [ep("/x")], listen_ip="127.0.0.1", extra_config=settings()), tmp_path, workers=2,
              port=port)
    thief = None
    try:
        workers = wait_for(lambda: (lambda c: c if len(c) == 2 else None)(child_pids(p.proc.pid)))
        os.kill(p.proc.pid, signal.SIGSTOP)
        try:
            for pid in workers:
                os.kill(pid, signal.SIGKILL)
            wait_for(lambda: _bindable(port), timeout=5)
            thief = _take(port)  # a plain listener: no worker of ours can join it
        finally:
            os.kill(p.proc.pid, signal.SIGCONT)
        t0 = time.monotonic()
        assert p.proc.wait(15) == 1
        # the kills and 4 failed starts each, 0.1 + 0.2 + 0.4 + 0.8 s apart
        assert time.monotonic() - t0 < 5
        err = p.stderr()
        failed = f"could not start: cannot listen on 127.0.0.1:{port}: the port is already in use by another process"
        assert len(_log_times(err, "worker 0 " + failed)) == 4, err
        assert len(_log_times(err, "worker 1 " + failed)) == 4, err
        assert "no worker could start (5 failed starts in a row each, reasons above): giving up" in err
        assert "was killed by signal 9 (SIGKILL)" in err
    finally:
        if thief is not None:
            thief.close()
        p.stop()

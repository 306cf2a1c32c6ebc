"""`run` refuses a port that something else already serves (SPEC §1), and says which listener
could not be opened (the main port or the admin address).

SO_REUSEPORT lets any socket with the option join a port's group, so without the check a second
fastproxy, or any program listening with SO_REUSEPORT, would silently take a share of the
connections. Every case runs the real CLI against real sockets on loopback.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.integration.netutil import wait_for
from tests.support import ROOT, Proxy, Upstream, config, ep, free_port, get

ENV = {**os.environ, "PYTHONPATH": ROOT}
IN_USE = "the port is already in use by another process"


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.stop()


def run_cli(tmp_path, cfg: dict, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    """`fastproxy run` that is expected to exit: a proxy that starts anyway fails the test."""
    path = tmp_path / "second.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "fastproxy", "run", "-c", str(path), *args], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its workers too
        out, err = proc.communicate()
        pytest.fail(f"fastproxy kept running on a port already served:\n{out}\n{err}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def foreign_listener(ip: str, port: int, reuse_port: bool) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((ip, port))
    s.listen(16)
    return s


@pytest.mark.parametrize("first_workers,second_workers", [(1, 1), (2, 2), (1, 2), (2, 1)])
def test_a_second_instance_on_the_same_port_exits_1_and_the_first_keeps_serving_its_config(
        tmp_path, upstream, first_workers, second_workers):
    port = free_port()
    first = Proxy(config(upstream, [ep("/first", "/ok")], listen_ip="127.0.0.1"), tmp_path, workers=first_workers,
                  port=port)
    try:
        r = run_cli(tmp_path, config(upstream, [ep("/second", "/ok")], listen_ip="127.0.0.1"), "-p", str(port),
                    "-w", str(second_workers))
        assert r.returncode == 1
        assert "ready" not in r.stdout
        assert r.stderr.strip() == f"fastproxy: cannot listen on 127.0.0.1:{port}: {IN_USE}"
        # every fresh connection (spread over all listeners of the port) lands on the first
        for _ in range(20):
            assert get(port, "/first")[0] == 200
            assert get(port, "/second")[0] == 404
        # the first one's own workers hold the port: a reload does not trip over the check
        first.write_config(config(upstream, [ep("/reloaded", "/ok")], listen_ip="127.0.0.1"))
        first.signal(signal.SIGHUP)
        wait_for(lambda: all(get(port, "/reloaded")[0] == 200 for _ in range(10)), timeout=5)
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0


@pytest.mark.parametrize("foreign_ip,reuse_port,listen_ip", [
    ("127.0.0.1", True, "127.0.0.1"),  # the case SO_REUSEPORT would silently share
    ("127.0.0.1", False, "127.0.0.1"),
    ("0.0.0.0", True, "127.0.0.1"),  # a wildcard listener covers 127.0.0.1
    ("127.0.0.1", True, "0.0.0.0"),  # and one specific address blocks the wildcard
])
@pytest.mark.parametrize("workers", [1, 2])
def test_run_refuses_a_port_another_program_listens_on(tmp_path, upstream, foreign_ip, reuse_port, listen_ip,
                                                        workers):
    port = free_port()
    with foreign_listener(foreign_ip, port, reuse_port):
        r = run_cli(tmp_path, config(upstream, [ep("/a", "/ok")], listen_ip=listen_ip), "-p", str(port),
                    "-w", str(workers))
    assert r.returncode == 1
    assert "ready" not in r.stdout
    assert r.stderr.strip() == f"fastproxy: cannot listen on {listen_ip}:{port}: {IN_USE}"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_busy_admin_port_is_named_as_the_admin_address(tmp_path, upstream, workers):
    port, admin = free_port(), free_port()
    cfg = config(upstream, [ep("/a", "/ok")], listen_ip="127.0.0.1",
                 extra_config={"fastproxy": {"admin": {"port": admin}}})
    with foreign_listener("127.0.0.1", admin, reuse_port=False):
        r = run_cli(tmp_path, cfg, "-p", str(port), "-w", str(workers))
    assert r.returncode == 1
    assert "ready" not in r.stdout
    assert r.stderr.strip().splitlines()[-1] == (f"fastproxy: cannot listen on the admin address 127.0.0.1:{admin}: "
                                                 f"{IN_USE}")
    assert f"127.0.0.1:{port}" not in r.stderr
    # nothing was left listening on the main port
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_port_0_with_one_worker_still_picks_a_free_port(tmp_path, upstream):
    p = Proxy(config(upstream, [ep("/a", "/ok")], listen_ip="127.0.0.1"), tmp_path, port=0)
    try:
        assert p.port != 0
        assert get(p.port, "/a")[0] == 200
    finally:
        assert p.stop() == 0

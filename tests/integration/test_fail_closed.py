"""Fail closed, end to end (SPEC §1): a file with a guard fastproxy does not implement never
serves, neither from `run` nor through a SIGHUP reload; `ignore_unsupported` is the operator's
explicit way to serve it anyway.
"""

import json
import signal
import subprocess
import sys

import pytest

from tests.integration.netutil import wait_for
from tests.support import ROOT, Proxy, config, ep, free_port, get
from tests.unit.test_config_check import GUARDS
from tests.unit.test_config_check import guarded as guarded_by

BASIC = {"htpasswd_path": "/etc/fastproxy/htpasswd"}


def guarded(upstream, **fastproxy) -> dict:
    endpoints = [ep("/private/decks", "/decks", extra_config={"auth/basic": BASIC}),
                 ep("/private/decks/{id}", "/decks/{id}", method="DELETE", extra_config={"auth/basic": BASIC}),
                 ep("/public", "/public")]
    extra = {"fastproxy": fastproxy} if fastproxy else {}
    return config(upstream, endpoints, output_encoding="no-op", listen_ip="127.0.0.1", extra_config=extra)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=30, env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})


def write(tmp_path, raw: dict) -> str:
    path = tmp_path / "krakend.json"
    path.write_text(json.dumps(raw, indent=2))
    return str(path)


def test_check_exits_1_naming_the_namespace_and_each_endpoint_it_would_leave_open(tmp_path, upstream):
    path = write(tmp_path, guarded(upstream))
    r = cli("check", "-c", path)
    assert r.returncode == 1
    assert "Syntax OK" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("  error: ")]
    assert len(errors) == 2, r.stderr
    assert "`auth/basic` (basic authentication) is not implemented" in errors[0]
    assert "would serve GET /private/decks without it" in errors[0]
    assert "would serve DELETE /private/decks/{id} without it" in errors[1]


def test_run_does_not_start_and_serves_nothing(tmp_path, upstream):
    port = free_port()
    path = write(tmp_path, guarded(upstream))
    r = cli("run", "-c", path, "-p", str(port))
    assert r.returncode == 1
    assert "ready" not in r.stdout
    assert '["auth/basic"]' in r.stderr and "(fail closed)" in r.stderr
    before = len(upstream.requests)
    try:
        get(port, "/private/decks", timeout=1)
        served = True
    except OSError:
        served = False
    assert not served
    assert len(upstream.requests) == before


def test_ignore_unsupported_serves_the_file_and_says_what_it_accepted(tmp_path, upstream):
    p = Proxy(guarded(upstream, ignore_unsupported=["auth/basic"]), tmp_path)
    try:
        status, _, _ = get(p.port, "/private/decks")
        assert status == 200
        assert upstream.requests[-1]["url"] == "/decks"
        assert "ignore_unsupported accepts serving GET /private/decks without it" in p.stderr()
    finally:
        assert p.stop() == 0


def test_a_reload_that_adds_a_guard_is_refused_and_the_running_config_stays(tmp_path, upstream):
    open_cfg = config(upstream, [ep("/public", "/public")], output_encoding="no-op", listen_ip="127.0.0.1")
    p = Proxy(open_cfg, tmp_path)
    try:
        p.write_config(guarded(upstream))
        p.signal(signal.SIGHUP)
        wait_for(lambda: '["auth/basic"]' in p.stderr())
        assert get(p.port, "/public")[0] == 200
        assert get(p.port, "/private/decks")[0] == 404  # the guarded routes never came in
    finally:
        assert p.stop() == 0


@pytest.mark.parametrize("ns,level,block,name", GUARDS, ids=[f"{g[0]}@{g[1]}" for g in GUARDS])
def test_every_guard_fails_check_and_run_and_ignore_unsupported_lets_check_pass(tmp_path, ns, level, block, name):
    path = write(tmp_path, {**guarded_by(ns, level, block), "listen_ip": "127.0.0.1"})
    r = cli("check", "-c", path)
    assert r.returncode == 1 and f'["{ns}"]' in r.stderr and "DELETE /private" in r.stderr, r.stderr
    r = cli("run", "-c", path, "-p", "0")
    assert r.returncode == 1 and "ready" not in r.stdout and f'["{ns}"]' in r.stderr
    accepted = guarded_by(ns, level, block, extra={"fastproxy": {"ignore_unsupported": [name]}})
    r = cli("check", "-c", write(tmp_path, accepted))
    assert r.returncode == 0, r.stderr
    assert f'["{ns}"]: `{ns}`' in r.stdout and "ignore_unsupported accepts serving" in r.stdout

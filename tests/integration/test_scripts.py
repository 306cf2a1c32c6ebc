"""The first run as a new user makes it: `scripts/setup.sh` says what it does while it installs,
and `scripts/run.sh` starts nothing when its demo backend cannot have its port."""

import errno
import os
import shutil
import signal
import socket
import subprocess

import pytest

from tests.support import ROOT

DEMO_PORT = 8081  # the port config/fastproxy.json proxies to


def _run(cmd: list, cwd: str, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not finish in {timeout} s:\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_run_sh_starts_nothing_when_the_demo_backend_cannot_listen():
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", DEMO_PORT))
        holder.listen(1)
    except OSError as exc:  # something else holds it already: the same situation for run.sh
        assert exc.errno == errno.EADDRINUSE, exc
        holder.close()
        holder = None
    try:
        r = _run([os.path.join(ROOT, "scripts", "run.sh")], ROOT, timeout=60)
    finally:
        if holder is not None:
            holder.close()
    assert r.returncode == 1
    assert "fastproxy ready" not in r.stdout
    assert (f"demo backend: cannot listen on 127.0.0.1:{DEMO_PORT}: the port is already in use by another process"
            in r.stderr)
    assert (f"scripts/run.sh: the demo backend could not start on 127.0.0.1:{DEMO_PORT}, so fastproxy was not "
            "started" in r.stderr)


def test_setup_sh_reports_progress_on_the_first_run_and_is_silent_after(tmp_path):
    """A real first run, in a copy of the project (about 10 s with a local package index)."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("fastproxy", "scripts"):
        shutil.copytree(os.path.join(ROOT, name), copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(ROOT, name), copy / name)
    first = _run(["scripts/setup.sh"], str(copy), timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "setup: creating .venv (first run, about 20 s)...",
        "setup: installing fastproxy and its dependencies into .venv...",
        "setup: done, .venv is ready",
    ]
    version = _run([str(copy / ".venv" / "bin" / "fastproxy"), "version"], str(copy), timeout=30)
    assert version.returncode == 0 and version.stdout.startswith("fastproxy ")
    again = _run(["scripts/setup.sh"], str(copy), timeout=60)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")

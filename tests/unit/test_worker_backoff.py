"""The master's rules for replacing workers (fastproxy.server.master), as plain functions."""

import os
import shutil
import signal
from types import SimpleNamespace

import pytest

from fastproxy.server.master import BACKOFF_CAP, Child, Master, backoff, describe_exit


@pytest.mark.parametrize("failures,wait", [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2),
                                           (7, BACKOFF_CAP), (50, BACKOFF_CAP)])
def test_backoff_doubles_from_a_tenth_of_a_second_up_to_the_cap(failures, wait):
    assert backoff(failures) == pytest.approx(wait)


def test_exit_statuses_are_told_in_words():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    assert describe_exit(os.waitpid(pid, 0)[1]) == "exited with code 3"
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    assert describe_exit(os.waitpid(pid, 0)[1]) == "was killed by signal 9 (SIGKILL)"


def test_sighup_to_a_master_started_without_a_file_changes_nothing(monkeypatch):
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: sent.append((pid, sig)))
    master = Master(SimpleNamespace(workers=2), None)
    master.children[12345] = Child(0, 0.0)
    snap = master.snap
    try:
        master.reload()  # was load(None): a TypeError out of the master's signal loop
    finally:
        shutil.rmtree(master.metrics_dir)
    assert master.snap is snap and sent == []

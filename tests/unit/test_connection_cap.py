"""The connection cap against the open-files limit (fastproxy/server/worker.py), without a server."""

import logging
import resource
from types import SimpleNamespace

from fastproxy.server.worker import (DEFAULT_MAX_CONNECTIONS, FD_RESERVE, Worker, connection_cap,
                                     raise_open_files_limit)


def test_cap_leaves_two_descriptors_per_connection_and_a_reserve():
    assert connection_cap(10_000, 1 << 20) == 10_000
    assert connection_cap(10_000, 20_000) == (20_000 - FD_RESERVE) // 2
    assert connection_cap(10_000, 1024) == (1024 - FD_RESERVE) // 2
    assert connection_cap(10_000, resource.RLIM_INFINITY) == 10_000
    assert connection_cap(10_000, 10) == 1


def test_open_files_limit_is_raised_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if hard != resource.RLIM_INFINITY and soft > 64:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft // 2, hard))
        assert raise_open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if hard != resource.RLIM_INFINITY:
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _worker(max_connections: int, fd_limit: int) -> SimpleNamespace:
    return SimpleNamespace(snap=SimpleNamespace(protocol=SimpleNamespace(max_connections=max_connections)),
                           fd_limit=fd_limit, warned_cap=0)


def test_the_default_cap_adapts_to_the_open_files_limit_quietly_but_a_chosen_one_warns(caplog):
    caplog.set_level(logging.INFO, logger="fastproxy")
    w = _worker(DEFAULT_MAX_CONNECTIONS, 4096)
    assert Worker.cap(w) == (4096 - FD_RESERVE) // 2
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    caplog.clear()
    w = _worker(DEFAULT_MAX_CONNECTIONS + 1, 4096)
    assert Worker.cap(w) == (4096 - FD_RESERVE) // 2
    Worker.cap(w)  # said once per configured value
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "capped at 2016" in caplog.records[0].getMessage()

"""The connection cap against the open-files limit (fastproxy/server/worker.py), without a server."""

import resource

from fastproxy.server.worker import FD_RESERVE, connection_cap, raise_open_files_limit


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

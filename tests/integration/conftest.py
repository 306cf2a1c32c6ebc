"""Fixtures of the integration tests: one real `redis-server` for the session."""

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server on a free loopback port (see tests/redis_server.py); a test that
    kills, pauses or restarts it must leave it running (the handle's methods do)."""
    try:
        server = RedisServer(str(tmp_path_factory.mktemp("redis")))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()

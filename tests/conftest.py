import pytest

from tests.support import Upstream


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def up(upstream):
    """The module's backend under the short name the limit tests use."""
    return upstream

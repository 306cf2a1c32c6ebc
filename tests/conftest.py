import pytest

from tests.support import Upstream


@pytest.fixture(scope="module")
def upstream():
    u = Upstream()
    yield u
    u.stop()

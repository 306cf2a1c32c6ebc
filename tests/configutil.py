"""What the config and rate-limit tests share: KrakenD's rate-limit namespaces, the grammar of a
RateLimit header item, and reading the errors a configuration is refused with."""

import re

import pytest

from fastproxy.config.compile import compile_config
from fastproxy.config.load import ConfigError

RL = "qos/ratelimit/router"
SVC = "qos/ratelimit/service"
PROXY = "qos/ratelimit/proxy"
JUJU_ROUTER = "github.com/devopsfaith/krakend-ratelimit/juju/router"
JUJU_PROXY = "github.com/devopsfaith/krakend-ratelimit/juju/proxy"

# RFC 9651 sf-item: an sf-string bare item with parameters whose values are sf-integers.
SF_ITEM = re.compile(r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*"(?:;[a-z*][a-z0-9_.*-]*=-?[0-9]{1,15})*$')


def errors_of(raw) -> list:
    """The problems `raw` is refused with (it must be refused)."""
    with pytest.raises(ConfigError) as exc:
        compile_config(raw)
    return exc.value.problems


def assert_problem(problems: list, path: str, words: list) -> None:
    """Some problem at exactly `path` says every one of `words`."""
    hits = [p for p in problems if p.startswith(path + ":")]
    assert hits, problems
    assert any(all(w in p for w in words) for p in hits), (hits, words)

import time

import pytest

from fastproxy.security.botdetector import BotDetector

# The service-level detector of KrakenD CE's integration fixture (tests/fixtures/krakend.json).
FIXTURE = dict(
    allow=["c", "Pingdom.com_bot_version_1.1"],
    deny=["a", "b"],
    patterns=["(Pingdom.com_bot_version_).*", "(facebookexternalhit)/.*"],
)


@pytest.mark.parametrize("ua, bot", [
    (b"a", True),                              # botdetector_1: deny list
    (b"b", True),                              # botdetector_2
    (b"Pingdom.com_bot_version_1.14", True),   # botdetector_3: allow is exact only
    (b"facebookexternalhit/1.2.3", True),      # botdetector_4
    (b"Pingdom.com_bot_version_1.1", False),   # allow beats the pattern
    (b"c", False),
    (b"A", False),                             # exact, case-sensitive
    (b"ab", False),
    (b"Mozilla/5.0 (compatible; facebookexternalhit/1.1)", True),  # unanchored search
    (b"facebookexternalhit", False),
    (b"Mozilla/5.0 (X11; Linux x86_64)", False),
    (b"", False),
    (None, False),
])
def test_krakend_fixture_verdicts(ua, bot):
    assert BotDetector(**FIXTURE).is_bot(ua) is bot


@pytest.mark.parametrize("allow, deny, patterns, ua, bot", [
    (["x"], ["x"], [], b"x", False),          # allow before deny
    ([], ["x"], ["y"], b"x", True),           # deny before patterns
    (["xy"], [], ["y"], b"xy", False),        # allow before patterns
    ([], [], ["^bot$"], b"bot", True),
    ([], [], ["^bot$"], b"robot", False),
    ([], [], ["(?i)curl/"], b"CURL/8.0", True),
    ([], [], [r"\Qa.b", "zzz"], b"a.b", True),   # an open \Q stays inside its own pattern
    ([], [], [r"\Qa.b", "zzz"], b"zzz", True),
    ([], [], [r"\Qa.b", "zzz"], b"axb", False),
    ([], [], [], b"anything", False),
])
def test_rule_order(allow, deny, patterns, ua, bot):
    assert BotDetector(allow, deny, patterns).is_bot(ua) is bot


@pytest.mark.parametrize("empty_is_bot", [True, False])
def test_empty_user_agent_decided_by_flag_alone(empty_is_bot):
    d = BotDetector(allow=[""], deny=[""], patterns=[".*"], empty_user_agent_is_bot=empty_is_bot)
    assert d.is_bot(b"") is empty_is_bot
    assert d.is_bot(None) is empty_is_bot


def test_many_patterns_one_scan():
    patterns = [f"bot{i}/[0-9]+" for i in range(500)]
    d = BotDetector([], [], patterns)
    assert d.is_bot(b"Mozilla bot499/7")
    assert not d.is_bot(b"Mozilla bot499/x")


def test_catastrophic_pattern_runs_in_linear_time():
    d = BotDetector([], [], ["(a+)+$", "(x+x+)+y"])
    ua = b"a" * 65535 + b"!"
    start = time.perf_counter()
    assert d.is_bot(ua) is False
    assert d.is_bot(b"x" * 65536) is False
    assert time.perf_counter() - start < 0.05
    assert d.is_bot(b"a" * 65536) is True


@pytest.mark.parametrize("pattern, message", [
    ("(", "invalid regular expression '(': missing )"),
    (r"(a)\1", r"invalid regular expression '(a)\\1': invalid escape sequence: \1"),
    ("(?<=a)b", "invalid regular expression '(?<=a)b'"),
    ("[z-a]", "invalid regular expression '[z-a]': invalid character class range"),
])
def test_pattern_re2_refuses_is_a_value_error(pattern, message):
    with pytest.raises(ValueError) as err:
        BotDetector([], [], ["ok", pattern])
    assert str(err.value).startswith(message)


@pytest.mark.parametrize("size", [-1, 1.5, True])
def test_bad_cache_size_is_rejected(size):
    with pytest.raises(ValueError, match="invalid cache_size"):
        BotDetector([], [], [], cache_size=size)


def test_cache_keeps_verdicts_and_evicts_least_recently_used():
    d = BotDetector([], ["bad"], ["crawler"], cache_size=2)
    assert d.is_bot(b"bad") and not d.is_bot(b"good")
    assert d.is_bot(b"bad")                 # hit: "bad" becomes most recent
    assert d.is_bot(b"crawler-ish") is True
    assert list(d._cache) == [b"bad", b"crawler-ish"]   # "good" evicted, bound held
    for i in range(100):
        d.is_bot(b"ua%d" % i)
    assert len(d._cache) == 2


def test_cached_and_uncached_detectors_agree():
    uas = [b"a", b"b", b"c", b"Pingdom.com_bot_version_1.14", b"facebookexternalhit/1", b"x"] * 3
    plain, cached = BotDetector(**FIXTURE), BotDetector(**FIXTURE, cache_size=3)
    assert [plain.is_bot(u) for u in uas] == [cached.is_bot(u) for u in uas]

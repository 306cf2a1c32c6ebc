"""Bot detector (SPEC §3.10, krakend-botdetector ``Detector.IsBot``).

Rules, in order, on the User-Agent value (a request with two User-Agent headers never gets
here: the parser refuses it with 400, so the value judged is the only one forwarded):
1. empty or absent UA: a bot exactly when ``empty_user_agent_is_bot``; nothing else runs;
2. exact match in ``allow``: not a bot (exact only: an allowed ``Pingdom.com_bot_version_1.1``
   does not shield ``..._1.14`` from a pattern);
3. exact match in ``deny``: a bot;
4. any of ``patterns`` found anywhere in the UA: a bot;
5. otherwise not a bot.

Patterns use RE2 (linear time in the UA length whatever the pattern, so ``(a+)+$`` cannot be
used to stall a worker). They are validated one by one, then joined into a single alternation
compiled once, so one scan answers for all of them. A joined regex rather than ``re2.Set``:
when RE2's DFA runs out of memory a regex falls back to the NFA, while a Set silently reports
"no match" (fail open).

``cache_size`` > 0 keeps an LRU of verdicts keyed by UA, bounded to ``cache_size`` entries
(KrakenD keeps one too; the key is client-controlled, hence the bound).
"""

from __future__ import annotations

from collections import OrderedDict

import re2

__all__ = ["BotDetector"]


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True  # only "does it match" is asked
    return options


def check_pattern(pattern: object) -> bytes:
    if not isinstance(pattern, str):
        raise ValueError(f"invalid regular expression {pattern!r}: not a string")
    try:
        re2.compile(pattern.encode(), _options())
    except re2.error as exc:
        msg = exc.args[0] if exc.args else "invalid"
        msg = msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg)
        head, sep, arg = msg.rpartition(": ")
        if sep and arg == pattern:  # RE2 quotes the offending piece; drop it when it is all
            msg = head
        raise ValueError(f"invalid regular expression {pattern!r}: {msg}") from None
    encoded = pattern.encode()
    if b"\\Q" in encoded:
        # An unterminated \Q quotes to the end of the pattern and would swallow the ")" of
        # the alternation wrapper. A stray \E is an error in RE2, so "p\E" compiles exactly
        # when p ends inside a quote; close it then.
        try:
            re2.compile(encoded + b"\\E", _options())
            encoded += b"\\E"
        except re2.error:
            pass
    return encoded


def _strings(values: list[str], what: str) -> frozenset[bytes]:
    for v in values:
        if not isinstance(v, str):
            raise ValueError(f"invalid {what} entry {v!r}: not a string")
    return frozenset(v.encode() for v in values)


class BotDetector:
    __slots__ = ("_allow", "_deny", "_search", "_empty_is_bot", "_cache", "_cache_size")

    def __init__(self, allow: list[str], deny: list[str], patterns: list[str],
                 cache_size: int = 0, empty_user_agent_is_bot: bool = False):
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ValueError(f"invalid cache_size {cache_size!r}: expected an integer >= 0")
        self._allow = _strings(allow, "allow")
        self._deny = _strings(deny, "deny")
        compiled = [check_pattern(p) for p in patterns]
        self._search = None
        if compiled:
            joined = b"|".join(b"(?:" + p + b")" for p in compiled)
            try:
                self._search = re2.compile(joined, _options()).search
            except re2.error as exc:  # each is valid alone, so together they are too big
                raise ValueError(f"patterns too large to compile together: {exc}") from None
        self._empty_is_bot = bool(empty_user_agent_is_bot)
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, bool] | None = OrderedDict() if cache_size else None

    def _decide(self, ua: bytes) -> bool:
        if ua in self._allow:
            return False
        if ua in self._deny:
            return True
        return self._search is not None and self._search(ua) is not None

    def is_bot(self, user_agent: bytes | None) -> bool:
        if not user_agent:
            return self._empty_is_bot
        cache = self._cache
        if cache is None:
            return self._decide(user_agent)
        verdict = cache.get(user_agent)
        if verdict is not None:
            cache.move_to_end(user_agent)
            return verdict
        verdict = self._decide(user_agent)
        cache[user_agent] = verdict
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return verdict

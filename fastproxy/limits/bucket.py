"""Token bucket (SPEC §3.1) and the bounded per-client table of buckets (SPEC §3.2).

Pure logic: no asyncio, no I/O, no clock. Every method takes ``now`` (monotonic seconds, float);
the caller owns the clock (the event loop's ``time()`` in production, plain floats in tests).

Owns
  ``TokenBucket``      one limit: ``take(now) -> bool`` per request, plus the numbers that
                       ``Retry-After`` and the ``RateLimit`` headers need.
  ``BucketTable``      one bucket per client key for one limit, bounded to ``max_keys``.
  ``default_capacity`` KrakenD's default burst: max_rate per second rounded down, at least 1.

Rules it keeps
* Textbook bucket: starts full; refills *continuously* at ``rate`` tokens/s; never holds more than
  ``capacity``; a request takes one token. Continuous (not quantised) refill means no fractional
  time is ever lost or double-counted, so over any window ``[t, t+T]`` at most
  ``capacity + rate*T`` requests pass (no "+1 after idle", unlike KrakenD's bucket; up to the
  1 ns below), and once the burst is spent a request passes every ``1/rate`` s (spike arrest).
* A refused take changes nothing (x/time/rate, GCRA): dropping the refused requests of a
  sequence never changes the other decisions.
* Clock going backwards (x/time/rate ``advance``): a ``now`` older than the last accepted take
  refills nothing and the take spends one of the tokens still held; an accepted take moves the
  reference time back to ``now``. No token is minted by the jump; the stretch of time walked
  twice is counted twice, exactly as golang.org/x/time/rate does (case XR-3).
* Float rounding, the one epsilon: the bucket stores ``_ready``, the earliest time the next take
  passes, as ``now + (1 - tokens)/rate - EPS`` with ``EPS = 1e-9`` s, and ``take`` is one
  comparison against it. After whole-token takes ``tokens`` is an exact integer, so after
  ``capacity`` takes at ``t0`` the next one passes at ``t0 + 1/rate`` (computed by the caller
  with the same float operation or within 1 ns of it) and not earlier than 1 ns before. Where
  floats make a passing take leave ``tokens`` a hair below zero, that shortfall stays in the
  bucket as debt, so the epsilon never accumulates: over any window at most
  ``capacity + rate*(T + EPS)`` requests pass. (Without it, 2 tokens accrued over
  ``0.08 - 0.06`` s at 100/s are 1.9999999999999996 and the second take would be refused.)
* Eviction is lossless for full buckets: a bucket that has refilled to ``capacity`` behaves, from
  then on, exactly like a new bucket, which is what a returning key gets. So ``BucketTable``
  first drops every full bucket; only when that frees less than an eighth of the table does it
  evict the least recently *inserted* non-full buckets (those clients get a fresh, full bucket:
  the only way a flood of distinct keys can gain tokens, and only when memory is at its bound).
  Accesses never reorder the table (one dict lookup per take); the sweep runs only when the table
  is full and frees at least ``max_keys // 8`` slots, so its O(n) cost is amortised to O(8) per
  inserted key.
* Memory is bounded in bytes, not only in entries: a key longer than ``RAW_KEY_MAX`` (40, so
  that every textual IP address stays as it is) is stored as a 128-bit keyed BLAKE2b digest (an
  ``int``, a type no raw key has, so a digest never meets a raw key). The digest key is random
  per table, so a client cannot engineer two keys that share a bucket; a chance collision needs
  about 2**64 keys. An entry then costs at most ``ENTRY_BYTES_MAX`` (400) bytes whatever the key's
  length (key object, bucket and its floats, dict slot; ~300 measured with short keys, ~330 with
  40-byte ones), so a table holds at most ``ENTRY_BYTES_MAX * max_keys`` bytes (40 MB at the
  default 100,000).
"""

from __future__ import annotations

import math
import os
from hashlib import blake2b
from itertools import islice

__all__ = ["TokenBucket", "BucketTable", "default_capacity", "EPS", "RAW_KEY_MAX", "ENTRY_BYTES_MAX"]

#: Longest key a table stores as it is; longer keys are stored as a keyed 128-bit digest.
RAW_KEY_MAX = 40
#: Upper bound of one table entry's memory, in bytes, whatever the key (measured in tests).
ENTRY_BYTES_MAX = 400

#: Seconds early a take may pass, to absorb float rounding (see the module docstring).
EPS = 1e-9

_INF = math.inf

#: What a table is keyed by: the client key as given, or the digest of a long one.
_Stored = bytes | str | int


def default_capacity(max_rate: float, every: float = 1.0) -> int:
    """KrakenD's default capacity: ``max_rate / every`` per second, rounded down, at least 1.

    ``every`` is in seconds. The 1e-9 keeps decimal durations from rounding a whole number down
    (``0.7 / 0.1`` is 6.999999999999999 in floats).
    """
    if not (0.0 < max_rate < _INF and 0.0 < every < _INF):
        raise ValueError(f"max_rate and every must be positive and finite, "
                         f"got {max_rate!r}, {every!r}")
    n = math.floor(max_rate / every + 1e-9)
    return n if n > 1 else 1


class TokenBucket:
    """One token bucket; see the module docstring for the rules.

    ``rate`` is tokens per second (> 0), ``capacity`` the burst (an integer >= 1); the bucket is
    full at ``now``.
    """

    __slots__ = ("_rate", "_interval", "_cap", "_tokens", "_last", "_ready")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        if not (0.0 < rate < _INF and 1.0 / rate < _INF):
            raise ValueError(f"rate must be a positive finite number of tokens per second, "
                             f"got {rate!r}")
        if not (1 <= capacity < _INF and capacity == int(capacity)):
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        self._rate = rate
        self._interval = 1.0 / rate
        self._cap = cap = float(capacity)
        self._tokens = cap  # fractional tokens held at _last (may be a hair below 0: debt)
        self._last = now  # time of the last accepted take (or of creation)
        self._ready = now + (1.0 - cap) * self._interval - EPS  # earliest time a take passes

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> int:
        return int(self._cap)

    def take(self, now: float) -> bool:
        """Take one token at ``now``; False (and no state change) when none is available."""
        if now >= self._ready:
            t = self._tokens + (now - self._last) * self._rate
            if t > self._cap:
                t = self._cap
            elif now < self._last:  # clock went back: no refill, keep what is held (x/time/rate)
                t = self._tokens
        elif self._tokens >= 1.0:  # now < _ready <= _last: clock went back, a whole token is held
            t = self._tokens
        else:
            return False
        t -= 1.0
        self._tokens = t
        self._last = now
        self._ready = now + (1.0 - t) * self._interval - EPS
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until a take passes (0.0 if one passes now); ``take(now + result)`` passes."""
        ready = self._ready
        if now >= ready or self._tokens >= 1.0:
            return 0.0
        r = ready - now
        while now + r < ready:  # float rounding of the caller's addition must not fall short
            r = math.nextafter(r, _INF)
        return r

    def remaining(self, now: float) -> int:
        """Whole tokens available at ``now``; 0 exactly when ``take(now)`` would be refused."""
        tokens = self._tokens
        if now < self._ready and tokens < 1.0:
            return 0
        if now > self._last:
            tokens += (now - self._last) * self._rate
        n = int(tokens + EPS * self._rate)
        cap = int(self._cap)
        return cap if n > cap else n if n > 1 else 1

    def reset_after(self, now: float) -> float:
        """Seconds until the bucket is full again (0.0 if it is full at ``now``)."""
        if self._tokens >= self._cap:
            return 0.0
        r = self._last + (self._cap - self._tokens) * self._interval - now
        return r if r > 0.0 else 0.0

    def __repr__(self) -> str:
        return (f"TokenBucket(rate={self._rate!r}, capacity={int(self._cap)}, "
                f"tokens={self._tokens!r}, last={self._last!r})")


class BucketTable:
    """Per-client buckets of one limit (``rate`` tokens/s, ``capacity``), at most ``max_keys``.

    Keys are ``bytes`` or ``str`` (distinct types are distinct keys; long ones are stored as
    digests, see the module docstring). A key seen the first time
    gets a full bucket. Queries (``retry_after``, ``remaining``, ``reset_after``) never insert.
    ``idle_dropped`` and ``evicted`` count full buckets dropped (lossless) and non-full buckets
    evicted (lossy) by the sweeps, for metrics.
    """

    __slots__ = ("_rate", "_interval", "_cap", "_capf", "_max", "_low", "_buckets", "_salt",
                 "idle_dropped", "evicted")

    def __init__(self, rate: float, capacity: int, max_keys: int = 100_000) -> None:
        TokenBucket(rate, capacity, 0.0)  # validates rate and capacity
        if not (isinstance(max_keys, int) and max_keys >= 1):
            raise ValueError(f"max_keys must be an integer >= 1, got {max_keys!r}")
        self._rate = rate
        self._cap = int(capacity)
        self._interval = 1.0 / rate
        self._capf = float(capacity)  # float objects shared by every bucket of the table
        self._max = max_keys
        self._low = max_keys - max(1, max_keys // 8)  # size a sweep shrinks the table to, at most
        self._buckets: dict[_Stored, TokenBucket] = {}
        self._salt = os.urandom(16)  # the digest key of long client keys (see the module docstring)
        self.idle_dropped = 0
        self.evicted = 0

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def capacity(self) -> int:
        return self._cap

    @property
    def max_keys(self) -> int:
        return self._max

    def _digest(self, key: bytes | str) -> int:
        """A long key's stored form: a keyed 128-bit digest, tagged by the key's type."""
        data = b"b" + key if key.__class__ is bytes else b"s" + str(key).encode("utf-8", "surrogatepass")
        return int.from_bytes(blake2b(data, digest_size=16, key=self._salt).digest(), "little")

    def take(self, key: bytes | str, now: float) -> bool:
        k: _Stored = self._digest(key) if len(key) > RAW_KEY_MAX else key
        b = self._buckets.get(k)
        if b is None:
            b = self._insert(k, now)
        return b.take(now)

    def bucket(self, key: bytes | str, now: float) -> TokenBucket:
        """The key's bucket, inserted full if new (for callers that need several answers)."""
        k: _Stored = self._digest(key) if len(key) > RAW_KEY_MAX else key
        b = self._buckets.get(k)
        if b is None:
            b = self._insert(k, now)
        return b

    def retry_after(self, key: bytes | str, now: float) -> float:
        b = self._buckets.get(self._digest(key) if len(key) > RAW_KEY_MAX else key)
        return 0.0 if b is None else b.retry_after(now)

    def remaining(self, key: bytes | str, now: float) -> int:
        b = self._buckets.get(self._digest(key) if len(key) > RAW_KEY_MAX else key)
        return self._cap if b is None else b.remaining(now)

    def reset_after(self, key: bytes | str, now: float) -> float:
        b = self._buckets.get(self._digest(key) if len(key) > RAW_KEY_MAX else key)
        return 0.0 if b is None else b.reset_after(now)

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: bytes | str) -> bool:
        return (self._digest(key) if len(key) > RAW_KEY_MAX else key) in self._buckets

    def _insert(self, key: _Stored, now: float) -> TokenBucket:
        if len(self._buckets) >= self._max:
            self._sweep(now)
        # A full bucket as TokenBucket() makes it, minus the validation and with the table's
        # float objects shared (24 bytes a key less). _ready = -inf is equivalent while the
        # bucket holds >= 1 token: take() then passes at any now, as with the computed value.
        b = TokenBucket.__new__(TokenBucket)
        b._rate, b._interval, b._cap = self._rate, self._interval, self._capf
        b._tokens, b._last, b._ready = self._capf, now, -_INF
        self._buckets[key] = b
        return b

    def _sweep(self, now: float) -> None:
        """Drop every full bucket; if that leaves more than ``_low``, evict the oldest inserted.

        The fullness test is the refill expression of ``take``, so a dropped bucket would have
        been capped to exactly ``capacity`` by its next take at any ``now' >= now``: the state a
        new bucket has. Deleting in place (not rebuilding) keeps the peak memory of a sweep to a
        list of keys; CPython compacts the dict when it next resizes.
        """
        d = self._buckets
        rate, cap = self._rate, self._capf
        full = [k for k, b in d.items() if b._tokens + (now - b._last) * rate >= cap]
        for k in full:
            del d[k]
        self.idle_dropped += len(full)
        extra = len(d) - self._low
        if extra > 0:
            for k in list(islice(d, extra)):  # dict order is insertion order
                del d[k]
            self.evicted += extra

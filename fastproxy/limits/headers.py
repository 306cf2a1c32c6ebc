"""Rate-limit response headers: `Retry-After` and the IETF httpapi-ratelimit-headers draft.

`RateLimit-Policy: "endpoint";q=10;w=1` describes the limit (q requests per w seconds, the
configured max_rate per every); `RateLimit: "endpoint";r=3;t=1` the state of the tightest limit
that applied to this request (r remaining, t seconds until the bucket is full again). Both use
structured-field syntax (RFC 9651): a quoted string item with integer parameters.
"""

import math


def retry_after_value(seconds: float) -> bytes:
    """Whole seconds, rounded up, at least 1 (RFC 9110 §10.2.3 allows only integers)."""
    return b"%d" % max(1, math.ceil(seconds - 1e-9))


class RateLimitInfo:
    """The tightest limit seen by one request: built only on rate-limited routes."""

    __slots__ = ("policy", "remaining", "reset")

    def __init__(self, policy: bytes, remaining: int, reset: float) -> None:
        self.policy = policy  # the precomputed `"name";q=..;w=..` item
        self.remaining = remaining
        self.reset = reset

    def _state(self) -> bytes:
        name = self.policy.split(b";", 1)[0]
        return b"%s;r=%d;t=%d" % (name, self.remaining, max(0, math.ceil(self.reset - 1e-9)))

    def headers(self) -> bytes:
        return b"RateLimit-Policy: " + self.policy + b"\r\nRateLimit: " + self._state() + b"\r\n"

    def header_pairs(self) -> tuple:
        return ((b"RateLimit-Policy", self.policy), (b"RateLimit", self._state()))


def policy_item(name: str, max_rate: float, every: float) -> bytes:
    q = f"{max_rate:g}" if max_rate != int(max_rate) else str(int(max_rate))
    w = every if every != int(every) else int(every)
    # structured fields: integers only for q and w; a fractional rate is expressed per a longer window
    if isinstance(w, float) or "." in q or "e" in q:
        scale = 1
        while (max_rate * scale != int(max_rate * scale) or every * scale != int(every * scale)) and scale < 10**6:
            scale *= 10
        q, w = str(int(max_rate * scale)), int(every * scale)
    return b'"%s";q=%s;w=%d' % (name.encode(), q.encode(), w)

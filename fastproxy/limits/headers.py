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


# The tightest limit seen by one request is kept on the exchange as a plain tuple
# (policy item, remaining, seconds until full): made per limited request, so no class.
RateLimitState = tuple[bytes, int, float]


def _state(rl: RateLimitState) -> bytes:
    name = rl[0].split(b";", 1)[0]
    return b"%s;r=%d;t=%d" % (name, rl[1], max(0, math.ceil(rl[2] - 1e-9)))


_PREFIXES: dict[bytes, bytes] = {}  # policy item -> the constant start of both header lines


def rl_headers(rl: RateLimitState) -> bytes:
    """Header lines for a proxied response (on every limited request: the constant part is
    built once per policy)."""
    policy, remaining, reset = rl
    prefix = _PREFIXES.get(policy)
    if prefix is None:
        if len(_PREFIXES) >= 1024:  # policies come from the config: only reloads add new ones
            _PREFIXES.clear()
        prefix = _PREFIXES[policy] = (b"RateLimit-Policy: " + policy + b"\r\nRateLimit: "
                                      + policy.split(b";", 1)[0] + b";r=")
    return prefix + b"%d;t=%d\r\n" % (remaining, math.ceil(reset - 1e-9) if reset > 1e-9 else 0)


def rl_pairs(rl: RateLimitState) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """(name, value) pairs for a response fastproxy writes itself (a rejection)."""
    return ((b"RateLimit-Policy", rl[0]), (b"RateLimit", _state(rl)))


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

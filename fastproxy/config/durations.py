"""Go-style duration strings ("500ms", "2s", "1m30s", "1h") to float seconds.

KrakenD reads durations with Go's time.ParseDuration; we accept the same grammar: an optional
sign, then one or more decimal numbers each followed by a unit (ns, us, µs, ms, s, m, h). "0"
alone is allowed. Plain JSON numbers are not durations in KrakenD and are refused by the schema.
"""

import re

DAY = 86400.0
# The longest duration a setting takes: beyond it a value is a mistake ("10000h" for "10s"), not
# a wish. A limit's `every` may span a month (KrakenD quotas per day or per month).
MAX_DURATION = DAY
MAX_EVERY = 31 * DAY

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)", re.ASCII)  # Go: ASCII digits only


def parse_duration(text: str) -> float:
    """Return seconds; raise ValueError with the offending text when it is not a Go duration."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as \"2s\", found {text!r}")
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"expected a duration such as \"500ms\" or \"2s\", found {text!r}")
    pos = 0
    total = 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise ValueError(f"expected a duration such as \"500ms\" or \"2s\", found {text!r}")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total

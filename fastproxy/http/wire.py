"""HTTP/1.1 wire rules both directions share, in one place: which headers are hop-by-hop, what
a Connection header names, chunk framing, and how a response is framed for the client.

Rules it keeps:
- Hop-by-hop headers (RFC 9110 §7.6.1) never cross the proxy as received, in either direction;
  the headers a Connection header names are hop-by-hop too. Framing (Content-Length,
  Transfer-Encoding) is regenerated, never copied.
- A request body in chunked coding is cut at exactly the byte llhttp ends it: `ChunkedEnd`
  finds that byte so that the parser is never fed a byte of the next request (pipelining); it
  only measures, llhttp validates (any disagreement is a 400, never a guess).
"""

from enum import IntEnum
from typing import Final, Optional

# Response headers never relayed as received (framing and hop-by-hop).
HOP_BY_HOP: Final = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
                               b"upgrade", b"trailer", b"content-length", b"proxy-authenticate"))

# Request headers never forwarded as received (framing and hop-by-hop), plus those fastproxy
# regenerates (Host, X-Forwarded-*) or answers itself (Expect).
REQUEST_DROP: Final = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding",
                                 b"upgrade", b"trailer", b"host", b"content-length", b"expect",
                                 b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto",
                                 b"proxy-authorization"))


LAST_CHUNK: Final = b"0\r\n\r\n"


# Connection options that name no end-to-end header.
NOT_LISTED: Final = HOP_BY_HOP | {b"close", b""}


def connection_options(value: bytes) -> frozenset[bytes]:
    """Every option of a Connection value, lowercased (`close` and `keep-alive` included)."""
    return frozenset(t.strip(b" \t").lower() for t in value.split(b","))


def connection_tokens(value: bytes) -> frozenset[bytes]:
    """The header names a Connection value lists (lowercased), minus those dropped anyway."""
    return connection_options(value) - NOT_LISTED


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112 §7.1)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Framing(IntEnum):
    """How a response body is delimited for the client."""

    LENGTH = 0  # Content-Length (or no body at all)
    CHUNKED = 1  # re-chunked: the backend's length is unknown and the client speaks HTTP/1.1
    CLOSE = 2  # HTTP/1.0 client, unknown length: the close ends the body


# What the backend's response head says about its body (`ResponseHead.length`).
NO_BODY: Final = -2  # HEAD, 204, 304: nothing follows the head
UNKNOWN_LENGTH: Final = -1  # chunked or close-delimited


def response_framing(length: int, version_11: bool) -> int:
    """The framing decision for the client (a Framing value), from the backend's length and
    the client's version."""
    if length >= 0 or length == NO_BODY:
        return _LENGTH
    return _CHUNKED if version_11 else _CLOSE


_LENGTH: Final = int(Framing.LENGTH)
_CHUNKED: Final = int(Framing.CHUNKED)
_CLOSE: Final = int(Framing.CLOSE)


# ChunkedEnd states
_SIZE, _EXT, _SIZE_LF, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _TRAILER_LF, _LINE, _LINE_LF = range(10)
_HEXVAL: Final = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}
MAX_CHUNK_SIZE: Final = 1 << 62


class ChunkedEnd:
    """Where a chunked request body ends, read incrementally: `feed(data, start)` returns how
    many bytes from `start` belong to the body (all of them unless the body ends inside), and
    `done` says whether it ended. Only the framing is followed (sizes, line ends, the trailer
    section); bytes it cannot follow raise ValueError (llhttp refuses them too)."""

    __slots__ = ("state", "left", "done", "trailer_bytes")

    def __init__(self) -> None:
        self.state = _SIZE
        self.left = 0  # chunk-data bytes still to come, or the size being read
        self.done = False
        self.trailer_bytes = 0  # the trailer section's size so far (bounded like a head)

    def feed(self, data: bytes, start: int) -> int:
        i = start
        n = len(data)
        state = self.state
        left = self.left
        while i < n:
            if state == _DATA:
                take = min(left, n - i)
                i += take
                left -= take
                if left == 0:
                    state = _DATA_CR
                continue
            c = data[i]
            i += 1
            if state == _SIZE:
                v = _HEXVAL.get(c)
                if v is not None:
                    left = left * 16 + v
                    if left > MAX_CHUNK_SIZE:
                        raise ValueError("chunk size too large")
                elif c == 0x0D:
                    state = _SIZE_LF
                elif c == 0x3B or c == 0x20 or c == 0x09:  # extensions (and the OWS before them)
                    state = _EXT
                else:
                    raise ValueError("invalid chunk size")
            elif state == _EXT:
                if c == 0x0D:
                    state = _SIZE_LF
            elif state == _SIZE_LF:
                if c != 0x0A:
                    raise ValueError("invalid chunk size line")
                state = _DATA if left else _TRAILER
            elif state == _DATA_CR:
                if c != 0x0D:
                    raise ValueError("chunk data longer than its size")
                state = _DATA_LF
            elif state == _DATA_LF:
                if c != 0x0A:
                    raise ValueError("chunk data longer than its size")
                state = _SIZE
                left = 0
            elif state == _TRAILER:  # at the start of a trailer line, or of the final CRLF
                self.trailer_bytes += 1
                state = _TRAILER_LF if c == 0x0D else _LINE
            elif state == _TRAILER_LF:
                if c != 0x0A:
                    raise ValueError("invalid end of chunked body")
                self.trailer_bytes += 1
                self.state = _SIZE
                self.left = 0
                self.done = True
                return i - start
            elif state == _LINE:
                self.trailer_bytes += 1
                if c == 0x0D:
                    state = _LINE_LF
            else:  # _LINE_LF
                self.trailer_bytes += 1
                if c != 0x0A:
                    raise ValueError("invalid trailer line")
                state = _TRAILER
        self.state = state
        self.left = left
        return i - start


def joined(values: Optional[bytes], value: bytes) -> bytes:
    """Repeated header values as one comma-separated value (RFC 9110 §5.3)."""
    return value if values is None else values + b"," + value

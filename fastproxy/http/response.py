"""Responses fastproxy writes itself (errors, rejections, health), built as bytes.

Status lines are precomputed; the Date header is rebuilt at most once a second by the server's
clock tick (`DateCache.tick`), never per response.
"""

from email.utils import formatdate
from http import HTTPStatus

REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
STATUS_LINE_11 = {code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in REASONS.items()}


def status_line(code: int, reason: bytes = b"") -> bytes:
    line = STATUS_LINE_11.get(code) if not reason else None
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (code, reason or REASONS.get(code, b"Unknown"))
    return line


class DateCache:
    """`Date: ...\r\n` refreshed by `tick(wall_time)` (called once a second by the worker)."""

    __slots__ = ("header",)

    def __init__(self) -> None:
        self.header = b""
        self.tick(None)

    def tick(self, wall: "float | None") -> None:
        self.header = b"Date: " + formatdate(wall, usegmt=True).encode() + b"\r\n"


# Bodies of the errors fastproxy answers itself, KrakenD's words where KrakenD has some.
ERROR_BODIES = {
    404: b"404 page not found",
    405: b"405 method not allowed",
}


def simple_response(code: int, date: bytes, body: bytes = b"", close: bool = False,
                    extra: tuple[tuple[bytes, bytes], ...] = (), content_type: bytes = b"text/plain; charset=utf-8",
                    head_only: bool = False) -> bytes:
    """A complete response with Content-Length framing; `extra` is a tuple of (name, value)."""
    parts = [status_line(code), date, b"Server: fastproxy\r\n"]
    for name, value in extra:
        parts.append(name + b": " + value + b"\r\n")
    if body:
        parts.append(b"Content-Type: " + content_type + b"\r\n")
    parts.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        parts.append(b"Connection: close\r\n")
    parts.append(b"\r\n")
    if body and not head_only:
        parts.append(body)
    return b"".join(parts)

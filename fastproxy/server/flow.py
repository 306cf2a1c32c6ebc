"""Reading flow control of one connection: why it is paused, named, in one place.

A connection stops reading when any reason holds and resumes when none does (the aiohttp and
uvicorn shape: the protocol asks its FlowControl, never another object's transport).
"""

from enum import IntFlag
from typing import Any, Final


class PauseReason(IntFlag):
    """Why the client connection does not read (several may hold at once)."""

    PIPELINE_BUFFER = 1  # queued requests' bodies fill the pipelining buffer
    BACKEND_BUSY = 2  # the backend connection cannot take more of the request body
    QUEUE_DEPTH = 8  # too many pipelined requests wait
    CLIENT_SLOW = 16  # the client does not read what we write: its next answers would pile up


# The reasons as plain ints for the request path (an IntFlag operation costs a Python call).
PIPELINE_BUFFER: Final = int(PauseReason.PIPELINE_BUFFER)
BACKEND_BUSY: Final = int(PauseReason.BACKEND_BUSY)
QUEUE_DEPTH: Final = int(PauseReason.QUEUE_DEPTH)
CLIENT_SLOW: Final = int(PauseReason.CLIENT_SLOW)


class FlowControl:
    """The read side of one transport: `pause(reason)`, `resume(reason)`; `stop()` once the
    connection closes (nothing is paused or resumed after that)."""

    __slots__ = ("transport", "reasons", "stopped")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.reasons = 0  # PauseReason bits
        self.stopped = False

    def pause(self, reason: int) -> None:
        if not self.reasons and not self.stopped:
            self.transport.pause_reading()
        self.reasons |= reason

    def resume(self, reason: int) -> None:
        if self.reasons & reason:
            self.reasons &= ~reason
            if not self.reasons and not self.stopped:
                self.transport.resume_reading()

    def clear(self) -> None:
        """Read again whatever held it (a closing connection drains what the client sends)."""
        self.reasons = 0
        self.transport.resume_reading()

    def __repr__(self) -> str:
        return f"FlowControl({PauseReason(self.reasons)!r})"

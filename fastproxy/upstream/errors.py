"""How a backend exchange fails, named once: the kinds, what the client gets for each, and the
error a connection attempt raises.

Kinds are mapped here and only here (the shape of httpx's exception map): a pooled connection
the backend had closed before any byte of the answer is STALE (the pool's fault, retried on a
fresh connection when safe, reported to clients and metrics as a reset); a timeout answers 504,
every other failure 502.
"""

from enum import StrEnum


class FailureKind(StrEnum):
    """A backend failure; the value is the `kind` label of fastproxy_upstream_errors_total."""

    CONNECT = "connect"  # refused, unreachable, DNS failure
    CONNECT_TIMEOUT = "connect_timeout"
    TIMEOUT = "timeout"  # no (complete) answer within the route's timeout
    RESET = "reset"  # the connection broke during the exchange
    STALE = "stale"  # a reused connection broke before any byte of the answer
    MALFORMED = "malformed"  # the answer is not HTTP/1.1 we can relay


def status_for(kind: FailureKind) -> int:
    """The status a client gets for a failure before any byte of the response."""
    return 504 if kind is FailureKind.TIMEOUT or kind is FailureKind.CONNECT_TIMEOUT else 502


class ConnectError(Exception):
    """Opening a backend connection failed: `kind` is CONNECT or CONNECT_TIMEOUT."""

    def __init__(self, kind: FailureKind, msg: str) -> None:
        super().__init__(msg)
        self.kind = kind

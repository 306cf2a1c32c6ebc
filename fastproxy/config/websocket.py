"""KrakenD's `websocket` namespace (endpoint `extra_config`), compiled into a `WebSocket`.

fastproxy always tunnels one client connection to one backend connection (KrakenD's
`enable_direct_communication: true`): after the backend's `101` the bytes pass unchanged both
ways. So of the namespace's fields fastproxy reads:
- `input_headers`: more headers the handshake carries to the backend (added to the
  endpoint's; `Upgrade`, `Connection` and `Sec-WebSocket-*` always cross);
- `subprotocols`: when set, the only `Sec-WebSocket-Protocol` values a client may offer (the
  others are removed from the handshake; a client offering none of them gets 400);
- `timeout` (default 5m, as KrakenD): the tunnel closes once no byte has passed either way
  for that long;
- `max_message_size`: when set, the largest WebSocket message (the payloads of its frames
  summed) either side may send; a larger one closes the tunnel (1009 to the client), as
  KrakenD disconnects such a client. Unset, messages are not limited (the tunnel does not
  parse frames: KrakenD's default of 512 bytes applies to its own multiplexing reader).
The options of KrakenD's multiplexing mode (events, buffers, retries, pings) do not apply to a
1:1 tunnel and are warnings.
"""

from dataclasses import dataclass
from typing import Any, Optional

from fastproxy.config.problems import Problems
from fastproxy.http.request import forwardable_name

DEFAULT_TIMEOUT = 300.0  # KrakenD's `timeout` default, 5m
MULTIPLEXING = ("connect_event", "disconnect_event", "message_buffer_size", "read_buffer_size",
                "write_buffer_size", "backoff_strategy", "max_retries", "ping_period", "pong_wait", "write_wait",
                "return_error_details", "disable_otel_metrics")
KNOWN = frozenset(MULTIPLEXING) | {"input_headers", "subprotocols", "timeout", "max_message_size",
                                   "enable_direct_communication"}


@dataclass(frozen=True, slots=True)
class WebSocket:
    """What a route that tunnels WebSocket (or any `Upgrade`) needs."""

    input_headers: frozenset[bytes]  # lowercased, beyond the endpoint's
    forward_all: bool  # `input_headers: ["*"]`
    subprotocols: frozenset[bytes]  # empty: any
    idle_timeout: float
    max_message_size: int  # 0: not limited


def compile_websocket(block: Any, path: str, problems: Problems, label: str) -> Optional[WebSocket]:
    """The namespace block of one endpoint; None (with an error recorded) when it is unusable."""
    if not isinstance(block, dict):
        problems.error(path, f"expected an object, found {type(block).__name__}")
        return None
    ok = True
    for key in block:
        if key.startswith("@") or key in KNOWN:
            continue
        problems.error(f"{path}.{key}", "unknown websocket field: as written it configures nothing")
        ok = False
    for key in MULTIPLEXING:
        if key in block:
            problems.note(f"websocket {key}", f"{path}.{key}",
                          "an option of KrakenD's multiplexing mode: fastproxy tunnels each client connection "
                          "to its own backend connection (enable_direct_communication), so it does not apply",
                          label)
    if block.get("enable_direct_communication") is not True:
        problems.note("websocket multiplexing", path,
                      "KrakenD multiplexes clients over one backend connection unless enable_direct_communication "
                      "is true; fastproxy always tunnels 1:1 (each client its own backend connection)", label)
    headers = _names(block.get("input_headers", []), f"{path}.input_headers", problems)
    protocols = _names(block.get("subprotocols", []), f"{path}.subprotocols", problems, lower=False)
    if headers is None or protocols is None:
        return None
    timeout = problems.duration(block.get("timeout"), f"{path}.timeout", DEFAULT_TIMEOUT, positive=True)
    size = block.get("max_message_size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        problems.error(f"{path}.max_message_size", f"expected a number of bytes >= 0, found {size!r}")
        return None
    if not ok:
        return None
    return WebSocket(input_headers=frozenset(h for h in headers if h != b"*"), forward_all=b"*" in headers,
                     subprotocols=frozenset(protocols), idle_timeout=timeout, max_message_size=size)


def _names(raw: Any, path: str, problems: Problems, lower: bool = True) -> Optional[list[bytes]]:
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        problems.error(path, f"expected a list of non-empty strings, found {raw!r}")
        return None
    out = []
    for i, v in enumerate(raw):
        if lower and v != "*" and not forwardable_name(v):
            problems.error(f"{path}[{i}]", f"{v!r} is a header fastproxy never forwards as received")
            return None
        out.append((v.lower() if lower else v).encode("latin-1"))
    return out

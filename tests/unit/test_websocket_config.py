"""The `websocket` namespace compiled (SPEC §5), and the frame follower that enforces
`max_message_size` (pure logic, byte by byte)."""

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastproxy.config.compile import compile_config
from fastproxy.server.tunnel import FrameLimit
from tests.configutil import errors_of
from tests.integration.wsutil import frame


def cfg(ws, host="ws://127.0.0.1:9000", level="endpoint"):
    endpoint = {"endpoint": "/ws", "backend": [{"url_pattern": "/"}]}
    raw = {"version": 3, "output_encoding": "no-op", "host": [host], "endpoints": [endpoint]}
    if level == "endpoint":
        endpoint["extra_config"] = {"websocket": ws}
    elif level == "backend":
        endpoint["backend"][0]["extra_config"] = {"websocket": ws}
    else:
        raw["extra_config"] = {"websocket": ws}
    return raw


def test_the_namespace_makes_the_route_tunnel_with_krakend_defaults():
    snap = compile_config(cfg({"enable_direct_communication": True}))
    ws = snap.route_list[0].websocket
    assert snap.upgrades
    assert ws is not None and ws.idle_timeout == 300.0 and ws.max_message_size == 0 and not ws.subprotocols
    assert snap.route_list[0].targets[0].key == "http://127.0.0.1:9000"  # ws:// is the HTTP handshake's host


def test_wss_hosts_are_https_and_fields_are_read():
    snap = compile_config(cfg({"enable_direct_communication": True, "timeout": "30s", "max_message_size": 4096,
                               "subprotocols": ["chat", "v2.chat"], "input_headers": ["Origin", "Cookie"]},
                              host="wss://example.com"))
    r = snap.route_list[0]
    assert r.targets[0].scheme == "https" and r.targets[0].port == 443
    assert r.websocket.idle_timeout == 30.0 and r.websocket.max_message_size == 4096
    assert r.websocket.subprotocols == {b"chat", b"v2.chat"}
    assert r.websocket.input_headers == {b"origin", b"cookie"}


def test_without_the_namespace_no_route_tunnels():
    raw = cfg({})
    del raw["endpoints"][0]["extra_config"]
    snap = compile_config(raw)
    assert not snap.upgrades and snap.route_list[0].websocket is None


def test_multiplexing_options_and_multiplexing_mode_are_warnings():
    snap = compile_config(cfg({"connect_event": True, "ping_period": "30s", "message_buffer_size": 10}))
    text = "\n".join(snap.warnings)
    assert "connect_event" in text and "ping_period" in text and "message_buffer_size" in text
    assert "tunnels 1:1" in text


@pytest.mark.parametrize("ws, where", [
    ({"timout": "1s"}, "timout"),
    ({"timeout": "soon"}, "timeout"),
    ({"max_message_size": -1}, "max_message_size"),
    ({"max_message_size": "1k"}, "max_message_size"),
    ({"input_headers": "Origin"}, "input_headers"),
    ({"input_headers": ["Content-Length"]}, "input_headers[0]"),
    ({"subprotocols": [""]}, "subprotocols"),
    ("yes", "websocket"),
])
def test_bad_fields_are_errors_naming_the_field(ws, where):
    assert any(where in e.split(":")[0] for e in errors_of(cfg(ws)))


@pytest.mark.parametrize("level", ["backend", "service"])
def test_the_namespace_elsewhere_is_a_warning_and_tunnels_nothing(level):
    snap = compile_config(cfg({"enable_direct_communication": True}, level=level))
    assert not snap.upgrades
    assert any("websocket" in w and "endpoint" in w for w in snap.warnings)


# -- FrameLimit -------------------------------------------------------------------------------------

def feed_bytewise(limit: FrameLimit, data: bytes) -> int:
    for i in range(len(data)):
        cut = limit.feed(data[i:i + 1])
        if cut >= 0:
            return i + cut
    return -1


def test_messages_within_the_limit_pass_and_the_first_over_it_is_found():
    ok = frame(b"a" * 100) + frame(b"b" * 1000, mask=False) + frame(b"ping", opcode=9)
    assert FrameLimit(1000).feed(ok) == -1
    assert feed_bytewise(FrameLimit(1000), ok) == -1
    big = frame(b"c" * 1001)
    assert FrameLimit(1000).feed(ok + big) == len(ok)
    # fed a byte at a time, it is found at the byte that completes its header (2 + 2 + 4 bytes)
    assert feed_bytewise(FrameLimit(1000), ok + big) == len(ok) + 7


def test_fragments_count_towards_one_message_and_control_frames_do_not():
    parts = frame(b"x" * 600, fin=False) + frame(b"p" * 100, opcode=9) + frame(b"y" * 400, opcode=0)
    assert FrameLimit(1000).feed(parts) == -1
    over = frame(b"x" * 600, fin=False) + frame(b"y" * 401, opcode=0)
    assert FrameLimit(1000).feed(over) == len(frame(b"x" * 600, fin=False))
    # a new message after a finished one starts from zero
    assert FrameLimit(1000).feed(frame(b"a" * 900) + frame(b"b" * 900)) == -1


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70000])
def test_every_length_encoding(size):
    f = frame(os.urandom(size))
    assert FrameLimit(size).feed(f) == -1
    assert FrameLimit(size - 1).feed(f) == 0


def test_boundary_tells_whether_a_frame_of_ours_may_be_written():
    lim = FrameLimit(10_000)
    f = frame(b"q" * 300)
    lim.feed(f[:5])
    assert not lim.boundary
    lim.feed(f[5:200])
    assert not lim.boundary
    lim.feed(f[200:])
    assert lim.boundary


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3000), st.booleans()), min_size=1, max_size=8),
       st.lists(st.integers(1, 500), min_size=1, max_size=20))
def test_any_cut_of_the_stream_finds_the_same_frame(messages, cuts):
    stream = b"".join(frame(b"m" * n, mask=masked) for n, masked in messages)
    whole = FrameLimit(1500).feed(stream)
    lim = FrameLimit(1500)
    pos = 0
    found = -1
    for c in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        if pos >= len(stream):
            break
        cut = lim.feed(stream[pos:pos + c])
        if cut >= 0:
            found = pos + cut
            break
        pos += c
    # cut across reads, a frame header split over two reads is reported at the read it ends in
    # (its first bytes already passed); otherwise exactly where the whole stream says
    if whole < 0:
        assert found < 0
    else:
        assert whole - 14 <= found <= whole + 14 and found >= 0

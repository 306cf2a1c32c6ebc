"""What one client read becomes on the backend side, byte for byte and call for call.

The client protocol is driven with recording transports (no sockets): a request whose head and
body arrive in one read must reach its backend connection in one write call (one syscall),
including when the read is parsed in slices; a request refused within the read sends nothing;
the headers a client's Connection header names are not forwarded.
"""

import asyncio
import json

import pytest
import uvloop

from fastproxy.config.compile import compile_config
from fastproxy.server.connection import ClientConnection
from fastproxy.server.worker import Worker
from fastproxy.upstream.connection import UpstreamConnection


class Recorder:
    """A transport that keeps every write call."""

    def __init__(self) -> None:
        self.calls: list = []

    def write(self, data: bytes) -> None:
        self.calls.append([bytes(data)])

    def writelines(self, parts: list) -> None:
        self.calls.append([bytes(p) for p in parts])

    def data(self) -> bytes:
        return b"".join(b"".join(c) for c in self.calls)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else None

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.fixture
def proxy(tmp_path):
    """(client protocol, client transport, backend transport) over one pooled backend connection."""
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    cfg = {"version": 3, "port": 0, "host": ["http://127.0.0.1:9"],
           "extra_config": {"fastproxy": {"max_head_size": 4096}},
           "endpoints": [{"endpoint": "/post", "method": "POST", "backend": [{"url_pattern": "/post"}]},
                         {"endpoint": "/get", "backend": [{"url_pattern": "/get"}]},
                         {"endpoint": "/fwd", "input_headers": ["*"], "backend": [{"url_pattern": "/fwd"}]}]}
    snap = compile_config(json.loads(json.dumps(cfg)), source="test")
    w = Worker(snap, loop)
    pool = w.pool(snap.route_list[0].targets[0])
    up = UpstreamConnection(pool)
    up_t = Recorder()
    up.connection_made(up_t)
    pool.adopt(up)
    client = ClientConnection(w)
    client_t = Recorder()
    client.connection_made(client_t)
    yield client, client_t, up_t
    loop.close()
    asyncio.set_event_loop(None)


def post(body: bytes) -> bytes:
    return b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def test_head_and_body_of_one_read_leave_in_one_write(proxy):
    client, _, up_t = proxy
    body = b"x" * 3000
    client.data_received(post(body))
    assert len(up_t.calls) == 1
    sent = up_t.data()
    head, _, rest = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /post HTTP/1.1\r\n") and b"\r\nContent-Length: 3000" in head
    assert rest == body


def test_a_read_parsed_in_slices_still_leaves_in_one_write(proxy):
    client, _, up_t = proxy
    body = bytes(range(256)) * 40  # 10 KiB: the read is parsed in three 4 KiB slices
    client.data_received(post(body))
    assert len(up_t.calls) == 1
    assert up_t.data().partition(b"\r\n\r\n")[2] == body


def test_body_of_a_later_read_follows_in_its_own_write(proxy):
    client, _, up_t = proxy
    body = b"y" * 2000
    req = post(body)
    client.data_received(req[:-500])
    client.data_received(req[-500:])
    assert len(up_t.calls) == 2
    assert up_t.calls[1] == [b"y" * 500]
    assert up_t.data().partition(b"\r\n\r\n")[2] == body


def test_a_get_is_one_write_of_its_head(proxy):
    client, _, up_t = proxy
    client.data_received(b"GET /get HTTP/1.1\r\nHost: a\r\n\r\n")
    assert len(up_t.calls) == 1 and len(up_t.calls[0]) == 1
    assert up_t.calls[0][0].startswith(b"GET /get HTTP/1.1\r\n")


def test_a_request_refused_within_the_read_sends_nothing_upstream(proxy):
    client, client_t, up_t = proxy
    # the head is accepted, then the body of the same read breaks the chunked framing
    client.data_received(b"POST /post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\nzz\r\n")
    assert up_t.calls == []
    assert client_t.data().startswith(b"HTTP/1.1 400 ")


def test_headers_named_by_every_connection_header_are_dropped(proxy):
    client, _, up_t = proxy
    client.data_received(b"GET /fwd HTTP/1.1\r\nHost: a\r\nConnection: X-A\r\nX-A: 1\r\n"
                         b"connection: keep-alive, x-b\r\nX-B: 2\r\nX-C: 3\r\nKeep-Alive: 5\r\n\r\n")
    head = up_t.data().lower()
    assert head.startswith(b"get /fwd http/1.1\r\n")
    for gone in (b"\r\nx-a:", b"\r\nx-b:", b"\r\nconnection:", b"\r\nkeep-alive:"):
        assert gone not in head, head
    assert b"\r\nx-c: 3\r\n" in head


def test_plain_keep_alive_connection_forwards_the_other_headers(proxy):
    client, _, up_t = proxy
    client.data_received(b"GET /fwd HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX-C: 3\r\n"
                         b"Accept: */*\r\n\r\n")
    head = up_t.data()
    assert b"\r\nX-C: 3\r\nAccept: */*\r\n" in head and b"Connection" not in head

"""http.wire.ChunkedEnd finds the byte where a chunked body ends, whatever the reads."""

import pytest

from fastproxy.http.wire import ChunkedEnd

BODY = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\nTrailer: x\r\n\r\n"


def feed_in_pieces(data: bytes, size: int) -> tuple[int, bool]:
    c = ChunkedEnd()
    used = 0
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        used += c.feed(piece, 0)
        if c.done:
            break
    return used, c.done


@pytest.mark.parametrize("size", [1, 2, 3, 7, len(BODY)])
def test_the_end_is_found_at_the_last_byte_whatever_the_reads(size):
    assert feed_in_pieces(BODY, size) == (len(BODY), True)


def test_bytes_after_the_end_are_left_for_the_next_request():
    c = ChunkedEnd()
    data = BODY + b"GET / HTTP/1.1\r\n"
    assert c.feed(data, 0) == len(BODY) and c.done


def test_a_start_offset_is_honoured_and_an_unfinished_body_takes_everything():
    c = ChunkedEnd()
    assert c.feed(b"xx" + BODY[:10], 2) == 10 and not c.done


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXX", b"0\r\n\rX", b"5\n"])
def test_framing_it_cannot_follow_is_an_error(bad):
    with pytest.raises(ValueError):
        ChunkedEnd().feed(bad, 0)


def test_trailer_bytes_are_counted():
    c = ChunkedEnd()
    c.feed(BODY, 0)
    assert c.trailer_bytes == len(b"Trailer: x\r\n\r\n")

"""Heads read once, from their raw bytes: the request head a client sent, the response head a
backend sent.

llhttp (httptools) validates every byte of a head but is given no per-header callback: the
connection finds where a head ends (llhttp requires CRLF line ends, so the first empty line
ends it) and these functions scan the raw head once for the few headers a decision needs.
Most header lines are never lowercased or copied one by one: a first-byte table says which
lines may matter, and the header block is forwarded as slices of the raw head with only the
lines that must not cross the proxy cut out.

Rules it keeps (with `http.request` for the value rules):
- one Host in HTTP/1.1 (at most one in 1.0), one Content-Length, one Transfer-Encoding and
  never both, one User-Agent (the bot detector judges exactly one value), `Expect` only
  `100-continue` (417), HTTP/1.0 and 1.1 only (505); sizes: request line (414), one header
  line, the header block and the number of headers (431), a declared body (413);
- values lose their surrounding OWS (RFC 9110 §5.5): a line with trailing OWS is forwarded
  rebuilt, never as received;
- names with `_` are never forwarded by `input_headers: ["*"]` (CGI/WSGI backends read them
  as `-`: nginx's `underscores_in_headers off`), nor are the headers a Connection value names.
"""

from typing import Final, Optional

from fastproxy.http.request import (
    HTTPError,
    check_authority,
    check_transfer_encoding,
    parse_content_length,
    split_target,
)
from fastproxy.http.wire import (
    HOP_BY_HOP,
    NO_BODY,
    NOT_LISTED,
    REQUEST_DROP,
    UNKNOWN_LENGTH,
    connection_options,
    connection_tokens,
    joined,
)

Header = tuple[bytes, bytes, bytes]  # (lowercased name, name, value)


def _first_bytes(names: "frozenset[bytes] | set[bytes]") -> bytes:
    """A 256-byte table: non-zero at the first byte of any of `names` (either case)."""
    firsts = {n[0] for n in names} | {n[:1].upper()[0] for n in names}
    return bytes(1 if c in firsts else 0 for c in range(256))


# Request header names the scan acts on: framing, rules, and everything REQUEST_DROP cuts.
_REQ_HOST, _REQ_CL, _REQ_TE, _REQ_EXPECT, _REQ_CONNECTION, _REQ_UA, _REQ_DROP = range(7)
_REQUEST_NAMES: Final = {b"host": _REQ_HOST, b"content-length": _REQ_CL, b"transfer-encoding": _REQ_TE,
                         b"expect": _REQ_EXPECT, b"connection": _REQ_CONNECTION, b"user-agent": _REQ_UA,
                         **{n: _REQ_DROP for n in REQUEST_DROP
                            if n not in (b"host", b"content-length", b"transfer-encoding", b"expect",
                                         b"connection")}}
_REQUEST_FIRST: Final = _first_bytes(frozenset(_REQUEST_NAMES))
_RESPONSE_FIRST: Final = _first_bytes(HOP_BY_HOP)

# Compiled (setup.py), the byte searches below run as C loops; interpreted, as bytes.find. They
# are the only code with two branches: what they return is the same.
_COMPILED = not __file__.endswith(".py")
_BYTES: Final = tuple(bytes((c,)) for c in range(256))


def find_crlf(data: bytes, pos: int, end: int) -> int:
    """Offset of the first CRLF in data[pos:end], or -1."""
    if _COMPILED:
        p = data  # compiled: a pointer to its bytes (the .pxd types it)
        last = end - 1
        while pos < last:
            if p[pos] == 13 and p[pos + 1] == 10:
                return pos
            pos += 1
        return -1
    return data.find(b"\r\n", pos, end)


def find_char(data: bytes, ch: int, pos: int, end: int) -> int:
    """Offset of the first byte `ch` in data[pos:end], or -1."""
    if _COMPILED:
        p = data
        while pos < end:
            if p[pos] == ch:
                return pos
            pos += 1
        return -1
    return data.find(_BYTES[ch], pos, end)


def find_head_end(data: bytes, pos: int) -> int:
    """Offset of the first CRLFCRLF in data[pos:] (the end of a head), or -1."""
    if _COMPILED:
        p = data
        last = len(data) - 3
        while pos < last:
            c = p[pos + 3]
            if c == 10:
                if p[pos + 2] == 13 and p[pos + 1] == 10 and p[pos] == 13:
                    return pos
                pos += 1
            elif c == 13:
                pos += 1
            else:
                pos += 4  # no CRLFCRLF can end at pos + 3 nor any earlier window covering it
        return -1
    return data.find(b"\r\n\r\n", pos)


class RequestHead:
    """A request head as the scan found it. `raw` is the whole head (request line to the empty
    line); `cuts` the (start, end) offsets of the header lines never forwarded as received."""

    __slots__ = ("raw", "lower", "hdr", "cuts", "dirty", "method", "url", "version", "keep_alive", "host",
                 "host_count", "cl", "chunked", "expect", "ua", "conn_opts", "path", "query", "_headers")

    def __init__(self) -> None:
        self.raw = b""
        self.lower = b""
        self.hdr = 0  # offset of the first header line
        self.cuts: Optional[list[int]] = None  # flat: start0, end0, start1, end1, ...
        self.dirty = False  # a line must be rebuilt to be forwarded (trailing OWS, `_` in a name)
        self.method = b""
        self.url = b""
        self.version = "1.1"
        self.keep_alive = True
        self.host: Optional[bytes] = None
        self.host_count = 0
        self.cl = -1  # the declared Content-Length, -1 without one
        self.chunked = False
        self.expect = False
        self.ua: Optional[bytes] = None
        self.conn_opts: Optional[bytes] = None  # the Connection header's value(s), comma-joined
        self.path = b""
        self.query = b""
        self._headers: Optional[list[Header]] = None

    @property
    def headers(self) -> list[Header]:
        """Every header as (lowercased name, name, value), values without OWS; built on first
        use (only policies that read headers pay for it)."""
        h = self._headers
        if h is None:
            h = self._headers = split_headers(self.raw, self.lower, self.hdr)
        return h

    @headers.setter
    def headers(self, value: list[Header]) -> None:
        self._headers = value
        self.dirty = True  # forwarded from this list from now on


def split_headers(raw: bytes, lower: bytes, start: int) -> list[Header]:
    out: list[Header] = []
    end = len(raw) - 2
    pos = start
    while pos < end:
        eol = find_crlf(raw, pos, end + 2)
        colon = find_char(raw, 58, pos, eol)
        out.append((lower[pos:colon], raw[pos:colon], raw[colon + 1:eol].strip(b" \t")))
        pos = eol + 2
    return out


def scan_request(h: RequestHead, raw: bytes, max_line: int, max_field: int, max_block: int, max_fields: int,
                 max_body: int) -> None:
    """Fill `h` from `raw`, a head llhttp accepted; raise HTTPError for what it must refuse."""
    n = len(raw)
    rp = raw  # compiled: pointers to the bytes (the .pxd types them); slices of them are bytes
    eol = find_crlf(raw, 0, n)
    if eol > max_line:
        raise HTTPError(414, "request line too long")
    sp = find_char(raw, 32, 0, eol)
    sp2 = find_char(raw, 32, sp + 1, eol)  # llhttp allows exactly two spaces
    if sp2 < 0:  # `GET /path`: an HTTP/0.9 request line
        raise HTTPError(505, "HTTP version not supported")
    h.raw = raw
    h.method = rp[:sp]
    url = rp[sp + 1:sp2]
    h.url = url
    ver = rp[sp2 + 1:eol]
    if ver == b"HTTP/1.1":
        version = "1.1"
    elif ver == b"HTTP/1.0":
        version = "1.0"
    elif h.method == b"PRI":  # llhttp refuses it only once the preface's second part arrives
        raise HTTPError(400, "HTTP/2 connection preface: this port speaks HTTP/1.1")
    else:
        raise HTTPError(505, "HTTP version not supported")
    h.version = version
    lower = raw.lower()
    h.lower = lower
    end = n - 2  # the final CRLF
    pos = eol + 2
    h.hdr = pos
    if end - pos > max_block:
        raise HTTPError(431, "request header too large")
    underscores = find_char(raw, 95, pos, end) >= 0
    lp = lower
    fp = _REQUEST_FIRST
    names = _REQUEST_NAMES
    te: Optional[bytes] = None
    count = 0
    while pos < end:
        eol = find_crlf(raw, pos, n)
        count += 1
        if eol - pos + 2 > max_field:
            raise HTTPError(431, "request header too large")
        c = rp[eol - 1]
        if c == 0x20 or c == 0x09:
            h.dirty = True
        if fp[rp[pos]]:
            colon = find_char(raw, 58, pos, eol)
            kind = names.get(lp[pos:colon], -1)
            if kind >= 0:
                if kind == _REQ_HOST:
                    h.host_count += 1
                    h.host = rp[colon + 1:eol].strip(b" \t")
                elif kind == _REQ_UA:
                    if h.ua is not None:  # both would reach the backend, only one judged
                        raise HTTPError(400, "duplicate User-Agent")
                    h.ua = rp[colon + 1:eol].strip(b" \t")
                    kind = -1  # forwarded
                elif kind == _REQ_CL:
                    if h.cl >= 0:
                        raise HTTPError(400, "duplicate Content-Length")
                    h.cl = parse_content_length(rp[colon + 1:eol])
                elif kind == _REQ_TE:
                    if te is not None:
                        raise HTTPError(400, "duplicate Transfer-Encoding")
                    te = rp[colon + 1:eol].strip(b" \t")
                elif kind == _REQ_EXPECT:
                    if rp[colon + 1:eol].strip(b" \t").lower() != b"100-continue":
                        raise HTTPError(417, "unsupported Expect")
                    h.expect = True
                elif kind == _REQ_CONNECTION:  # its options name more hop-by-hop headers
                    h.conn_opts = joined(h.conn_opts, rp[colon + 1:eol].strip(b" \t"))
                if kind >= 0:
                    cuts = h.cuts
                    if cuts is None:
                        h.cuts = [pos, eol + 2]
                    else:
                        cuts += (pos, eol + 2)
            elif underscores and find_char(raw, 95, pos, colon) >= 0:
                h.dirty = True
        elif underscores and find_char(raw, 95, pos, find_char(raw, 58, pos, eol)) >= 0:
            h.dirty = True
        pos = eol + 2
    if count > max_fields:
        raise HTTPError(431, "too many request headers")
    if te is not None:
        check_transfer_encoding(te, version)
        h.chunked = True
        if h.cl >= 0:
            raise HTTPError(400, "both Content-Length and Transfer-Encoding")
    opts = h.conn_opts
    if version == "1.1":
        if h.host_count != 1:
            raise HTTPError(400, "missing Host header" if not h.host_count else "duplicate Host header")
        h.keep_alive = opts is None or opts == b"keep-alive" or b"close" not in connection_options(opts)
    else:
        if h.host_count > 1:
            raise HTTPError(400, "duplicate Host header")
        h.keep_alive = opts is not None and b"keep-alive" in connection_options(opts)
    if h.cl > max_body:
        raise HTTPError(413, "request body too large")
    if url[:1] == b"/" and len(url.translate(None, b"#%.?")) == len(url):
        h.path = url  # split_target's common case, without the call
    else:
        h.path, h.query = split_target(url)
        if url[0] != 0x2F:  # absolute-form: its authority is the Host (RFC 9112 §3.2.2)
            h.host = check_authority(url, h.host)


def forwarded_block(h: RequestHead) -> list[bytes]:
    """The header lines `input_headers: ["*"]` forwards, as pieces ready to join: the raw
    block minus the cut lines, or (a line to rebuild, a Connection naming more headers) each
    forwardable header rebuilt as `name: value`."""
    opts = h.conn_opts
    raw = h.raw
    if not h.dirty and (opts is None or not connection_tokens(opts)):
        parts: list[bytes] = []
        p = h.hdr
        cuts = h.cuts
        if cuts is not None:
            for i in range(0, len(cuts), 2):
                s = cuts[i]
                if s > p:
                    parts.append(raw[p:s])
                p = cuts[i + 1]
        end = len(raw) - 2
        if p < end:
            parts.append(raw[p:end])
        return parts
    drop = REQUEST_DROP if opts is None else REQUEST_DROP | connection_tokens(opts)
    out: list[bytes] = []
    for lname, name, value in h.headers:
        if lname not in drop and find_char(lname, 95, 0, len(lname)) < 0:
            out += (name, b": ", value, b"\r\n")
    return out


_NAMED_FIRST: dict[frozenset[bytes], bytes] = {}  # input_headers sets -> their first-byte table


def named_headers(h: RequestHead, names: frozenset[bytes]) -> list[bytes]:
    """The header lines an `input_headers` list forwards (never a REQUEST_DROP one), in the
    order received: as received, or (a line to rebuild, or a list a policy edited: `headers`)
    rebuilt from `headers` as `name: value`."""
    if h.dirty:
        out: list[bytes] = []
        for lname, name, value in h.headers:
            if lname in names and lname not in REQUEST_DROP:
                out += (name, b": ", value, b"\r\n")
        return out
    first = _NAMED_FIRST.get(names)
    if first is None:
        first = _NAMED_FIRST[names] = _first_bytes(names - REQUEST_DROP)
    fp = first
    raw = h.raw
    rp = raw
    lp = h.lower
    n = len(raw)
    end = n - 2
    pos = h.hdr
    kept: list[bytes] = []
    while pos < end:
        eol = find_crlf(raw, pos, n)
        if fp[rp[pos]]:
            colon = find_char(raw, 58, pos, eol)
            lname = lp[pos:colon]
            if lname in names and lname not in REQUEST_DROP:
                kept.append(rp[pos:eol + 2])
        pos = eol + 2
    return kept


class ResponseHead:
    """A backend's response head, for the client: `status`, the end-to-end header lines as
    pieces (`lines`), the body `length` (>= 0, UNKNOWN_LENGTH, or NO_BODY), `chunked`, and
    whether the backend keeps the connection open."""

    __slots__ = ("status", "lines", "length", "chunked", "keep_alive")

    def __init__(self, status: int, lines: list[bytes], length: int, chunked: bool, keep_alive: bool) -> None:
        self.status = status
        self.lines = lines
        self.length = length
        self.chunked = chunked
        self.keep_alive = keep_alive


def scan_response(raw: bytes, head_request: bool) -> ResponseHead:
    """Read a backend's response head (status line to the empty line). Raise ValueError for a
    head that is not one (llhttp judges the bytes; this judges the framing): a Transfer-Encoding
    other than one final `chunked` (RFC 9112 §6.1: HAProxy answers 502 too; a coding besides
    chunked, `gzip, chunked`, would reach a client that cannot tell) or an unusable length."""
    n = len(raw)
    rp = raw  # compiled: pointers to the bytes (the .pxd types them); slices of them are bytes
    fp = _RESPONSE_FIRST
    eol = find_crlf(raw, 0, n)
    if eol < 12 or rp[:5] != b"HTTP/":
        raise ValueError("not an HTTP/1.x status line")
    status = (rp[9] - 48) * 100 + (rp[10] - 48) * 10 + rp[11] - 48
    if not 100 <= status <= 999:
        raise ValueError("invalid status code")
    keep_alive = rp[5:8] == b"1.1"
    end = n - 2
    pos = eol + 2
    length = -1
    te: Optional[bytes] = None
    conn: Optional[bytes] = None
    lines: list[bytes] = []
    lower: Optional[bytes] = None
    kept = pos  # start of the run of lines kept so far
    while pos < end:
        eol = find_crlf(raw, pos, n)
        if eol < 0:
            raise ValueError("malformed response head")
        if fp[rp[pos]]:
            if lower is None:
                lower = raw.lower()
                lp = lower
            colon = find_char(raw, 58, pos, eol)
            if colon < 0:
                raise ValueError("malformed response header")
            name = lp[pos:colon]
            if name in HOP_BY_HOP:
                value = rp[colon + 1:eol].strip(b" \t")
                if name == b"content-length":
                    if not value.isdigit() or length >= 0 and int(value) != length:
                        raise ValueError("invalid Content-Length from the backend")
                    length = int(value)
                elif name == b"transfer-encoding":
                    te = joined(te, value)
                elif name == b"connection":
                    conn = joined(conn, lp[colon + 1:eol].strip(b" \t"))
                if kept < pos:
                    lines.append(rp[kept:pos])
                kept = eol + 2
        pos = eol + 2
    if kept < end:
        lines.append(rp[kept:end])
    chunked = te is not None
    if te is not None and te != b"chunked" and te.strip(b" \t").lower() != b"chunked":
        raise ValueError(f"unsupported Transfer-Encoding {te[:40]!r} from the backend: only chunked")
    if conn is not None and conn != b"keep-alive":
        tokens = connection_options(conn)
        if keep_alive:
            keep_alive = b"close" not in tokens
        else:
            keep_alive = b"keep-alive" in tokens
        named = tokens - NOT_LISTED
        if named:  # headers the backend named in Connection are hop-by-hop too
            kept_lines = [line for line in b"".join(lines).split(b"\r\n")
                          if line and line.split(b":", 1)[0].strip(b" \t").lower() not in named]
            lines = [b"\r\n".join(kept_lines) + b"\r\n"] if kept_lines else []
    elif conn is not None:
        keep_alive = True
    if head_request or status == 204 or status == 304:
        # HEAD keeps the backend's Content-Length (it describes the GET); no body follows
        if not (head_request and length >= 0 and status != 204 and status != 304):
            length = NO_BODY
    elif chunked:
        length = UNKNOWN_LENGTH
    return ResponseHead(status, lines, length, chunked, keep_alive)

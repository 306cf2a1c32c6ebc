"""Request-head rules httptools (llhttp) does not enforce, as pure functions on bytes.

llhttp rejects most malformed input, but a proxy must also refuse what is ambiguous between two
parsers (RFC 9112 §6.3, §3.2): Content-Length with leading zeros or duplicated, any
Transfer-Encoding other than exactly `chunked`, Transfer-Encoding in HTTP/1.0, a missing or
repeated Host in HTTP/1.1, a fragment in the target, dot-segments that a backend would resolve
(after percent-decoding `%2e`, `%2f`, `%5c`, and `\\` as a separator), an absolute-form target
naming another host than `Host`, a Host that is not an authority (`check_host`). Each rule
raises HTTPError with the status the client gets.
"""


from fastproxy.http.wire import REQUEST_DROP  # the one definition (also re-exported from here)


def forwardable_name(name: str) -> bool:
    """May `input_headers` name this header explicitly? Not when, read with `_` as `-` (as CGI
    and WSGI backends do), it is a header fastproxy never forwards (`Content_Length`)."""
    return name.lower().replace("_", "-").encode() not in REQUEST_DROP


class HTTPError(Exception):
    """A request the proxy refuses: `status` is what the client gets; the connection closes."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_DIGITS = frozenset(b"0123456789")


def parse_content_length(value: bytes) -> int:
    """RFC 9110 §8.6: 1*DIGIT. Leading zeros are refused (one parser's 010 is another's 8)."""
    v = value.strip(b" \t")
    if not v or not all(c in _DIGITS for c in v) or (len(v) > 1 and v[0] == 0x30) or len(v) > 18:
        raise HTTPError(400, f"invalid Content-Length {value[:40]!r}")
    return int(v)


def check_transfer_encoding(value: bytes, version: str) -> None:
    if version == "1.0":
        raise HTTPError(400, "Transfer-Encoding in an HTTP/1.0 request")
    if value.strip(b" \t").lower() != b"chunked":
        raise HTTPError(400, f"unsupported Transfer-Encoding {value[:40]!r}: only 'chunked' is accepted")


def split_target(url: bytes) -> tuple[bytes, bytes]:
    """Origin-form or absolute-form target → (path, query). Raise HTTPError(400)."""
    if url[:1] == b"/" and len(url.translate(None, b"#%.?")) == len(url):
        return url, b""  # the common case: a plain path, nothing to split or check (~60 ns)
    if not url:
        raise HTTPError(400, "empty request target")
    if url[0] != 0x2F:  # '/'
        _, url = _split_absolute(url)
        if not url.startswith(b"/"):
            url = b"/" + url
    if b"#" in url:
        raise HTTPError(400, "fragment in request target")
    q = url.find(b"?")
    if q >= 0:
        path, query = url[:q], url[q + 1:]
    else:
        path, query = url, b""
    check_dot_segments(path)
    return path, query


def check_dot_segments(path: bytes) -> None:
    """Refuse a path with a segment a backend would resolve as `.` or `..`.

    Backends percent-decode before they resolve dot-segments (nginx does), and some take `\\`
    for `/`, so segments are judged after decoding `%2f`, `%5c` (either case) and `\\` as
    separators and `%2e` as a dot: `..%2f..%2fadmin` and `.%2e%5cadmin` are refused. The path
    is forwarded as received (`a%2fb` stays `a%2fb`); only the judgement decodes, and only once
    (`%252f` is data, as it is for a backend that decodes once). Replacing the three encodings in
    turn is one decoding pass: no replacement can create another's sequence.
    """
    if path.find(b"%") >= 0:  # (find, not `in`: see _PLAIN_HOST_MAP)
        path = path.lower().replace(b"%2f", b"/").replace(b"%5c", b"/").replace(b"%2e", b".")
    if path.find(b"/.") < 0 and path.find(b"\\.") < 0:
        return  # no segment starts with a dot (the path starts with "/")
    for seg in path.replace(b"\\", b"/").split(b"/"):
        seg = seg.partition(b";")[0]  # `..;/` is `..` to Tomcat and Spring (path parameters)
        if seg == b"." or seg == b"..":
            raise HTTPError(400, "dot-segment in request path")


def _split_absolute(url: bytes) -> tuple[bytes, bytes]:
    """`http://authority/path?query` → (authority, "/path?query"); only http and https."""
    low = url[:8].lower()
    if low.startswith(b"http://"):
        rest = url[7:]
    elif low.startswith(b"https://"):
        rest = url[8:]
    else:
        raise HTTPError(400, f"request target must be a path, found {url[:40]!r}")
    end = len(rest)
    for sep in (b"/", b"?", b"#"):
        i = rest.find(sep)
        if 0 <= i < end:
            end = i
    return rest[:end], rest[end:]


# RFC 3986 §3.2.2 reg-name (unreserved, sub-delims, pct-encoded) without ",": Host is copied
# into X-Forwarded-Host, which backends split on commas. IPv4 literals are reg-names too.
_REG_NAME = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+;=%")
# translate() tables that keep the allowed bytes and change every other one (c ^ 1 != c), so
# `s.translate(table) == s` tells "only allowed bytes" in one C pass. (`b"%" in s` would cost
# ~1,700 instructions: CPython first tries the operand as an int and clears the TypeError.)
_PLAIN_HOST_MAP = bytes(c if c in _REG_NAME and c != 0x25 else c ^ 1 for c in range(256))  # no '%'
_REG_NAME_MAP = bytes(c if c in _REG_NAME else c ^ 1 for c in range(256))
_IPV6_MAP = bytes(c if c in b"0123456789abcdefABCDEF:." else c ^ 1 for c in range(256))
_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_HOST = 255  # the host part; a port adds at most 6 bytes


def check_host(value: bytes) -> None:
    """RFC 9112 §3.2 / RFC 3986 §3.2: Host = host [ ":" port ], host = reg-name / IPv4 /
    "[" IPv6 "]", port = 0-5 digits. Anything else is a 400: it would be forwarded as
    X-Forwarded-Host. An empty value is valid (RFC 9112 §3.2)."""
    host, _, port = value.partition(b":")
    if (host.translate(_PLAIN_HOST_MAP) != host or len(host) > MAX_HOST
            or port and (not host or len(port) > 5 or not port.isdigit())):
        _check_host_rest(value)  # a pct-encoded name, an IPv6 literal, or invalid


def _check_host_rest(value: bytes) -> None:
    host, _, port = value.partition(b":")
    if host and host.translate(_REG_NAME_MAP) == host and len(host) <= MAX_HOST:
        if not port or len(port) <= 5 and port.isdigit():
            parts = host.split(b"%")  # pct-encoded: two hex digits after each %
            if all(len(p) >= 2 and p[0] in _HEX and p[1] in _HEX for p in parts[1:]):
                return
    elif value[:1] == b"[":
        end = value.find(b"]")
        if end > 0:
            literal, rest = value[1:end], value[end + 1:]
            port = rest[1:]
            if (literal.translate(_IPV6_MAP) == literal and _is_ipv6(literal)
                    and (not rest or rest[:1] == b":" and (not port or len(port) <= 5 and port.isdigit()))):
                return
    raise HTTPError(400, f"invalid Host {value[:40]!r}")


def _is_ipv6(literal: bytes) -> bool:
    import ipaddress

    try:
        ipaddress.IPv6Address(literal.decode("ascii"))
    except ValueError:
        return False
    return True


def check_authority(url: bytes, host: "bytes | None") -> "bytes | None":
    """An absolute-form target (RFC 9112 §3.2.2) must name the same host as `Host`: two parsers
    could route by different ones. Returns the target's authority (None for origin-form)."""
    if url[:1] == b"/":
        return None
    authority, _ = _split_absolute(url)
    if host is not None and host.strip(b" \t").lower() != authority.lower():
        raise HTTPError(400, "absolute-form target names another host than the Host header")
    return authority


def filter_query(query: bytes, names: frozenset[bytes]) -> bytes:
    """Keep only the `names` parameters (KrakenD's input_query_strings: case-sensitive)."""
    if not query:
        return b""
    kept = [p for p in query.split(b"&") if p.split(b"=", 1)[0] in names]
    return b"&".join(kept)

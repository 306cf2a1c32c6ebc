"""Request-head rules on bytes (fastproxy/http/request.py), without a server."""

import pytest

from fastproxy.http.request import HTTPError, check_host, forwardable_name, split_target

# (target, expected path or None for a 400). A backend such as nginx percent-decodes `%2f`,
# `%5c` and `%2e` and treats `\` as a separator before it resolves dot-segments, so whatever
# would resolve to `.` or `..` after that decoding is refused.
TARGETS = [
    # plain paths and harmless encodings: forwarded as received
    (b"/users/42", b"/users/42"),
    (b"/files/a%2fb", b"/files/a%2fb"),
    (b"/files/a%2Fb/c", b"/files/a%2Fb/c"),
    (b"/files/a%5cb", b"/files/a%5cb"),
    (b"/files/site.css", b"/files/site.css"),
    (b"/files/..a/b", b"/files/..a/b"),
    (b"/files/a..", b"/files/a.."),
    (b"/files/...", b"/files/..."),
    (b"/files/%2e%2e%2e", b"/files/%2e%2e%2e"),
    (b"/files/.hidden", b"/files/.hidden"),
    (b"/files/a%252f..%252fb", b"/files/a%252f..%252fb"),  # decoded once: `%2f..%2f` stays data
    (b"/files/a%2e", b"/files/a%2e"),
    # raw dot-segments
    (b"/users/../admin", None),
    (b"/users/./x", None),
    (b"/users/..", None),
    # encoded dots
    (b"/users/%2e%2e/admin", None),
    (b"/users/%2E./admin", None),
    (b"/users/.%2e/admin", None),
    # encoded separators around dot-segments
    (b"/users/..%2f..%2fadmin", None),
    (b"/users/..%2F..%2Fadmin", None),
    (b"/users/%2e%2e%2f%2e%2e%2fadmin", None),
    (b"/users/%2E%2E%2F%2E%2E%2Fadmin", None),
    (b"/users/.%2e%2f.%2e%2fadmin", None),
    (b"/files/..%2f..%2fadmin", None),
    (b"/files/a%2f..", None),
    (b"/files/a%2f.%2fb", None),
    (b"/users/..%5c..%5cadmin", None),
    (b"/users/..%5C..%5Cadmin", None),
    (b"/users/..\\..\\admin", None),
    (b"/users/a\\..\\admin", None),
    (b"/users/%2e%2e\\admin", None),
    # path parameters: `..;` is `..` to Tomcat and Spring
    (b"/a/..;/admin", None),
    (b"/a/%2e%2e;/admin", None),
    (b"/a/..;jsessionid=x/admin", None),
    (b"/a/b;v=1/c", b"/a/b;v=1/c"),
    # the query is not a path: dots and encoded slashes there are data
    (b"/users/42?next=..%2f..%2fadmin", b"/users/42"),
    # absolute form: the path part is judged the same way
    (b"http://a/users/..%2fadmin", None),
    (b"http://a/users/x%2fy", b"/users/x%2fy"),
]


@pytest.mark.parametrize("target,expected", TARGETS, ids=[t.decode("latin-1") for t, _ in TARGETS])
def test_split_target_refuses_what_would_resolve_to_a_dot_segment(target, expected):
    if expected is None:
        with pytest.raises(HTTPError) as e:
            split_target(target)
        assert e.value.status == 400
    else:
        assert split_target(target)[0] == expected


# (Host value, valid?) RFC 9112 §3.2, RFC 3986 §3.2.2-3.2.3
HOSTS = [
    (b"api.example.com", True),
    (b"API.Example.COM", True),
    (b"localhost:8080", True),
    (b"127.0.0.1:19083", True),
    (b"127.0.0.1", True),
    (b"a", True),
    (b"xn--bcher-kva.example", True),
    (b"under_score.example", True),
    (b"host:", True),  # port = *DIGIT
    (b"", True),  # an empty Host is valid (RFC 9112 §3.2)
    (b"%41pi.example", True),
    (b"[::1]", True),
    (b"[::1]:8080", True),
    (b"[2001:db8::1]", True),
    (b"[::ffff:192.0.2.1]:443", True),
    (b"a" * 255, True),
    (b"a" * 255 + b":65535", True),
    (b"a b", False),
    (b"h, evil", False),
    (b"h,evil", False),
    (b"<script>alert(1)</script>", False),
    (b"[::1", False),
    (b"::1", False),
    (b"a:b:c", False),
    (b"a:80:80", False),
    (b"a:123456", False),
    (b"a:-1", False),
    (b":80", False),
    (b"a" * 256, False),
    (b"a" * 4000, False),
    (b"a/b", False),
    (b"a\\b", False),
    (b"a@b", False),
    (b"a?b", False),
    (b"a#b", False),
    (b'a"b', False),
    (b"%zz.example", False),
    (b"a%4", False),
    (b"[::1]x", False),
    (b"[::1]:a", False),
    (b"[zz::1]", False),
    (b"[1:2:3]", False),
    (b"[v1.fe]", False),
    (b"[::1%25eth0]", False),
    (b"\xc3\xa9.example", False),
]


@pytest.mark.parametrize("host,valid", HOSTS, ids=[h[:40].decode("latin-1") for h, _ in HOSTS])
def test_check_host_accepts_only_an_authority(host, valid):
    if valid:
        check_host(host)
    else:
        with pytest.raises(HTTPError) as e:
            check_host(host)
        assert e.value.status == 400


@pytest.mark.parametrize("name,ok", [("X_Legacy", True), ("x-api-key", True), ("Content_Length", False),
                                     ("transfer_encoding", False), ("HOST", False), ("X_Forwarded_For", False),
                                     ("Proxy_Connection", False), ("content-length", False)])
def test_an_explicit_input_header_may_not_spell_a_framing_header_with_underscores(name, ok):
    assert forwardable_name(name) is ok

"""Request-head rules on bytes (fastproxy/http/request.py), without a server."""

import pytest

from fastproxy.http.request import HTTPError, split_target

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

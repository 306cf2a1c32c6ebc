import pytest

from fastproxy.security.clientip import ClientIPResolver, normalize_ip

XFF = b"x-forwarded-for"
XRI = b"x-real-ip"


@pytest.mark.parametrize("text, expected", [
    ("192.0.2.1", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("[2001:DB8::1]", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    ("192.0.2.256", None),
    ("01.2.3.4", None),
    ("127.1", None),
    (" 192.0.2.1", None),
    ("", None),
    ("unknown", None),
    ("1.2.3.4:80", None),
])
def test_normalize_ip(text, expected):
    assert normalize_ip(text) == expected


def test_without_trusted_proxies_the_peer_is_the_client_whatever_the_headers():
    resolver = ClientIPResolver([])
    headers = [(XFF, b"1.1.1.1"), (XRI, b"2.2.2.2")]
    assert resolver.resolve("203.0.113.9", headers) == "203.0.113.9"
    assert resolver.forwarded_for("203.0.113.9", headers) == b"203.0.113.9"


def test_untrusted_peer_headers_are_ignored():
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("203.0.113.9", [(XFF, b"1.1.1.1")]) == "203.0.113.9"
    assert resolver.forwarded_for("203.0.113.9", [(XFF, b"1.1.1.1")]) == b"203.0.113.9"


TRUSTED = ["10.0.0.0/8", "2001:db8::/32", "192.168.1.1"]


@pytest.mark.parametrize("headers, expected", [
    # rightmost untrusted wins; trusted hops are skipped
    ([(XFF, b"1.1.1.1, 2.2.2.2, 10.0.0.5")], "2.2.2.2"),
    ([(XFF, b"1.1.1.1,10.1.1.1,192.168.1.1")], "1.1.1.1"),
    # every item trusted: the leftmost
    ([(XFF, b"10.0.0.7, 10.0.0.6")], "10.0.0.7"),
    # several occurrences are joined in order
    ([(XFF, b"1.1.1.1"), (b"host", b"x"), (XFF, b"3.3.3.3, 10.0.0.2")], "3.3.3.3"),
    # an unparseable item invalidates the header; the next header is tried
    ([(XFF, b"1.1.1.1, bogus, 10.0.0.2"), (XRI, b"4.4.4.4")], "4.4.4.4"),
    # an unparseable item left of the client is never reached
    ([(XFF, b"bogus, 5.5.5.5")], "5.5.5.5"),
    # no usable header: the peer
    ([(XFF, b"bogus")], "10.9.9.9"),
    ([], "10.9.9.9"),
    ([(XFF, b"")], "10.9.9.9"),
    # X-Real-IP when no X-Forwarded-For
    ([(XRI, b" 6.6.6.6 ")], "6.6.6.6"),
    # IPv6 and mapped addresses come back canonical
    ([(XFF, b"2001:DB9::1, 2001:db8::9")], "2001:db9::1"),
    ([(XFF, b"::ffff:7.7.7.7")], "7.7.7.7"),
    ([(XFF, b"::ffff:10.0.0.1, ::ffff:8.8.8.8")], "8.8.8.8"),
])
def test_trusted_peer_headers_walked_right_to_left(headers, expected):
    assert ClientIPResolver(TRUSTED).resolve("10.9.9.9", headers) == expected


def test_mapped_peer_counts_as_trusted_ipv4():
    resolver = ClientIPResolver(["10.0.0.0/8"])
    assert resolver.resolve("::ffff:10.0.0.1", [(XFF, b"1.1.1.1")]) == "1.1.1.1"


def test_configured_headers_are_read_in_order_case_insensitively():
    resolver = ClientIPResolver(["10.0.0.0/8"], remote_ip_headers=["CF-Connecting-IP", "X-Forwarded-For"])
    headers = [(XFF, b"1.1.1.1"), (b"cf-connecting-ip", b"9.9.9.9")]
    assert resolver.resolve("10.0.0.1", headers) == "9.9.9.9"
    assert resolver.resolve("10.0.0.1", headers[:1]) == "1.1.1.1"


def test_forwarded_for_appends_trusted_peer_to_its_chain():
    resolver = ClientIPResolver(["10.0.0.0/8"])
    headers = [(XFF, b"1.1.1.1"), (XFF, b"2.2.2.2")]
    assert resolver.forwarded_for("10.0.0.1", headers) == b"1.1.1.1,2.2.2.2, 10.0.0.1"
    assert resolver.forwarded_for("10.0.0.1", []) == b"10.0.0.1"


@pytest.mark.parametrize("trusted, bad", [
    (["10.0.0.300/8"], "10.0.0.300/8"),
    (["10.0.0.0/33"], "10.0.0.0/33"),
    (["proxy.local"], "proxy.local"),
])
def test_bad_trusted_proxy_is_rejected_by_name(trusted, bad):
    with pytest.raises(ValueError, match=f"invalid CIDR '{bad}'"):
        ClientIPResolver(trusted)


def test_bad_header_name_is_rejected():
    with pytest.raises(ValueError, match="invalid header name 'X Bad'"):
        ClientIPResolver(["10.0.0.0/8"], ["X Bad"])

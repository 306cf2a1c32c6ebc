import statistics
import time

import pytest

from fastproxy.security.cidr import CIDRSet, parse_ip
from fastproxy.security.ipfilter import IPFilter


@pytest.mark.parametrize("networks, ip, inside", [
    (["10.0.0.0/8"], "10.0.0.0", True),
    (["10.0.0.0/8"], "10.255.255.255", True),
    (["10.0.0.0/8"], "9.255.255.255", False),
    (["10.0.0.0/8"], "11.0.0.0", False),
    (["10.1.2.3/8"], "10.200.0.1", True),  # host bits ignored, as Go's ParseCIDR
    (["192.0.2.128/25"], "192.0.2.127", False),
    (["192.0.2.128/25"], "192.0.2.128", True),
    (["192.0.2.1/32"], "192.0.2.1", True),
    (["192.0.2.1/32"], "192.0.2.2", False),
    (["192.0.2.1"], "192.0.2.1", True),  # a bare address is a /32
    (["0.0.0.0/0"], "255.255.255.255", True),
    (["0.0.0.0/0"], "::1", False),
    (["::/0"], "2001:db8::1", True),
    (["::/0"], "1.2.3.4", False),  # Go: an IPv6 network never holds an IPv4 address
    (["2001:db8::/32"], "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", True),
    (["2001:db8::/32"], "2001:db9::", False),
    (["2001:db8::/32"], "2001:db7:ffff::", False),
    (["2001:db8::1/128"], "2001:db8::1", True),
    (["2001:db8::1/128"], "2001:db8::2", False),
    (["2001:db8::1"], "[2001:db8::1]", True),
    (["fe80::/10"], "fe80::1%eth0", True),
    # IPv4-mapped IPv6 addresses are IPv4
    (["10.0.0.0/8"], "::ffff:10.1.1.1", True),
    (["::ffff:10.0.0.0/104"], "10.1.1.1", True),
    (["::ffff:10.0.0.0/104"], "11.1.1.1", False),
    (["::ffff:0:0/96"], "8.8.8.8", True),
    (["10.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"], "10.0.0.1", True),
    ([], "10.0.0.1", False),
    (["10.0.0.0/8"], "not-an-ip", False),
])
def test_cidr_membership(networks, ip, inside):
    assert (ip in CIDRSet(networks)) is inside


@pytest.mark.parametrize("bad", [
    "10.0.0.300/8", "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/-1", "10.0.0.0/",
    "10.0.0.0/255.0.0.0", "host.example", "", " / ", "fe80::1%eth0/64", "01.0.0.0/8",
])
def test_bad_cidr_is_rejected_by_name(bad):
    with pytest.raises(ValueError) as err:
        CIDRSet(["10.0.0.0/8", bad])
    assert str(err.value) == f"invalid CIDR {bad!r}"


@pytest.mark.parametrize("allow, ip, permitted", [
    (True, "192.0.2.10", True),
    (True, "198.51.100.1", False),
    (True, None, False),
    (True, "garbage", False),
    (False, "192.0.2.10", False),
    (False, "198.51.100.1", True),
    (False, None, True),
    (False, "garbage", True),
    (False, "::ffff:192.0.2.10", False),
    (True, "2001:db8::5", True),
])
def test_ip_filter_modes(allow, ip, permitted):
    f = IPFilter(["192.0.2.0/24", "2001:db8::/64"], allow=allow)
    assert f.permits(ip) is permitted


def test_parse_ip_returns_version_and_integer():
    assert parse_ip("0.0.0.1") == (4, 1)
    assert parse_ip("::ffff:0.0.0.1") == (4, 1)
    assert parse_ip("::1") == (6, 1)
    assert parse_ip("1.2.3.4.5") is None


def _median_lookup_ns(table: CIDRSet, probes: list[str]) -> float:
    samples = []
    for _ in range(15):
        start = time.perf_counter_ns()
        for ip in probes:
            ip in table
        samples.append((time.perf_counter_ns() - start) / len(probes))
    return statistics.median(samples)


def test_lookup_cost_does_not_grow_with_the_number_of_networks():
    # Same prefix-length mix in both tables, so only the network count differs.
    big = [f"10.{i >> 8 & 255}.{i & 255}.0/24" for i in range(50_000)]
    big += [f"2001:db8:{i:x}::/48" for i in range(50_000)]
    small = big[:5] + big[-5:]
    probes = ["10.3.4.5", "172.16.0.1", "2001:db8:17::1", "2001:db9::1"] * 250
    t_small = _median_lookup_ns(CIDRSet(small), probes)
    t_big = _median_lookup_ns(CIDRSet(big), probes)
    assert t_big < 3 * t_small, (t_small, t_big)

"""DNS cache: IP literals skip the resolver, names are resolved once per TTL, concurrent misses
share one query, failures are DNSError. The resolver itself is replaced by a counting fake."""

import asyncio

import pytest

from fastproxy.upstream.dns import DNSCache, DNSError


def run(coro):
    return asyncio.run(coro)


def make(answers, ttl=30.0):
    async def build():
        cache = DNSCache(asyncio.get_running_loop())
        calls = []

        async def query(host):
            calls.append(host)
            await asyncio.sleep(0)
            if host not in answers:
                raise DNSError(f"cannot resolve {host!r}: not found")
            return cache.loop.time() + ttl, list(answers[host])

        cache._query = query
        return cache, calls

    return build


def test_ip_literals_never_reach_the_resolver():
    async def go():
        cache, calls = await make({})()
        assert await cache.resolve("127.0.0.1") == "127.0.0.1"
        assert await cache.resolve("::1") == "::1"
        assert calls == []

    run(go())


def test_a_name_is_resolved_once_while_its_ttl_lasts_and_again_after():
    async def go():
        cache, calls = await make({"api.internal": ["10.0.0.1"]}, ttl=0.05)()
        assert await cache.resolve("api.internal") == "10.0.0.1"
        assert await cache.resolve("api.internal") == "10.0.0.1"
        assert calls == ["api.internal"]
        await asyncio.sleep(0.06)
        assert await cache.resolve("api.internal") == "10.0.0.1"
        assert calls == ["api.internal", "api.internal"]

    run(go())


def test_concurrent_misses_share_one_query_and_records_rotate():
    async def go():
        cache, calls = await make({"multi": ["10.0.0.1", "10.0.0.2"]})()
        got = await asyncio.gather(*(cache.resolve("multi") for _ in range(6)))
        assert calls == ["multi"]
        assert set(got) == {"10.0.0.1", "10.0.0.2"}

    run(go())


def test_an_unknown_name_is_a_dns_error():
    async def go():
        cache, _ = await make({})()
        with pytest.raises(DNSError, match="nowhere"):
            await cache.resolve("nowhere")

    run(go())


def test_localhost_resolves_through_the_real_resolver():
    async def go():
        cache = DNSCache(asyncio.get_running_loop())
        assert await cache.resolve("localhost") in ("127.0.0.1", "::1")

    run(go())


def test_every_address_is_returned_starting_one_further_each_time():
    async def go():
        cache, _ = await make({"multi": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]})()
        a = await cache.resolve_all("multi")
        b = await cache.resolve_all("multi")
        assert sorted(a) == sorted(b) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        assert a[0] != b[0] and b == a[1:] + a[:1]

    run(go())

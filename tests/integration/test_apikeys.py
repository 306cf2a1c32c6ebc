"""`auth/api-keys` end to end: keys by header and by query string, hashed with a salt, roles, and
the propagated role as the key of a tier the client cannot pick."""

import hashlib
import json

from tests.support import Proxy, config, ep, get

GOLD, FREE = "gold-key-1", "free-key-2"


def sha(key: str) -> str:
    return hashlib.sha256(b"salt:" + key.encode()).hexdigest()


def test_keys_roles_and_a_tier_keyed_on_the_propagated_role(upstream, tmp_path):
    root = {"auth/api-keys": {"keys": [{"key": sha(GOLD), "roles": ["gold"]}, {"key": sha(FREE), "roles": ["free"]}],
                              "hash": "sha256", "salt": "salt:", "propagate_role": "X-Role"}}
    tiered = {"tier_key": "X-Role", "tiers": [
        {"tier_value": "gold", "ratelimit": {"max_rate": 100}},
        {"tier_value": "free", "ratelimit": {"max_rate": 1, "capacity": 1, "every": "1h"}},
    ]}
    endpoints = [
        ep("/api", "/echo/api", input_headers=["X-Role"],
           extra_config={"auth/api-keys": {"roles": ["gold", "free"]}, "qos/ratelimit/tiered": tiered}),
        ep("/gold", "/echo/gold", extra_config={"auth/api-keys": {"roles": ["gold"]}}),
        ep("/q", "/echo/q", extra_config={"auth/api-keys": {"strategy": "query_string", "identifier": "apikey"}}),
    ]
    p = Proxy(config(upstream, endpoints, extra_config=root), tmp_path)
    try:
        before = len(upstream.requests)
        assert get(p.port, "/api")[0] == 401
        assert get(p.port, "/api", headers={"Authorization": "Bearer nope"})[0] == 401
        assert get(p.port, "/api", headers={"Authorization": f"Bearer {sha(GOLD)}"})[0] == 401  # the digest is no key
        assert get(p.port, "/gold", headers={"Authorization": f"Bearer {FREE}"})[0] == 403
        assert len(upstream.requests) == before  # refusals never reach the backend
        status, _, body = get(p.port, "/api", headers={"Authorization": f"Bearer {FREE}", "X-Role": "gold"})
        assert status == 200
        assert [v for n, v in json.loads(body)["headers"] if n.lower() == "x-role"] == ["free"]
        # the free tier's one token is spent; claiming gold by header changes nothing
        assert get(p.port, "/api", headers={"Authorization": f"Bearer {FREE}", "X-Role": "gold"})[0] == 503
        assert [get(p.port, "/api", headers={"Authorization": f"Bearer {GOLD}"})[0] for _ in range(3)] == [200] * 3
        assert get(p.port, f"/q?apikey={GOLD}")[0] == 200
        assert get(p.port, "/q", headers={"Authorization": f"Bearer {GOLD}"})[0] == 401
    finally:
        p.stop()

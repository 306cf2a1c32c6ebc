"""`security/cors` end to end (SPEC §6): preflights answered before routing, authentication and
any limit (they spend no token), actual responses decorated, fastproxy's own refusals too."""

import pytest

from tests.identity import JWKSServer, SigningKey, jwks
from tests.support import Proxy, config, ep, get

SITE = "https://app.example"
PREFLIGHT = {"Origin": SITE, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "authorization"}


@pytest.fixture(scope="module")
def key():
    return SigningKey("ES256", "c1")


@pytest.fixture(scope="module")
def idp(key):
    server = JWKSServer(jwks(key))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream, idp, tmp_path_factory):
    cors = {"allow_origins": [SITE, "https://*.partner.example"], "allow_methods": ["GET", "PUT"],
            "allow_headers": ["Authorization", "Content-Type"], "expose_headers": ["RateLimit"],
            "allow_credentials": True, "max_age": "10m"}
    validator = {"alg": "ES256", "jwk_url": idp.url, "disable_jwk_security": True, "cache": True}
    endpoints = [
        ep("/limited", "/echo/limited", method="PUT",
           extra_config={"qos/ratelimit/router": {"max_rate": 1, "capacity": 1}}),
        ep("/private", "/echo/private", extra_config={"auth/validator": validator}),
        ep("/open", "/echo/open"),
    ]
    p = Proxy(config(upstream, endpoints, extra_config={"security/cors": cors}), tmp_path_factory.mktemp("cors"))
    yield p
    p.stop()


def test_a_preflight_is_answered_by_the_gateway_and_never_reaches_the_backend(proxy, upstream):
    before = len(upstream.requests)
    status, h, body = get(proxy.port, "/private", method="OPTIONS", headers=PREFLIGHT)
    assert status == 204 and body == b""
    assert h["access-control-allow-origin"] == SITE and h["access-control-allow-methods"] == "PUT"
    assert h["access-control-allow-headers"] == "authorization"
    assert h["access-control-allow-credentials"] == "true" and h["access-control-max-age"] == "600"
    assert "Origin" in h["vary"]
    # any path: before routing (no OPTIONS endpoint exists)
    assert get(proxy.port, "/no/such/path", method="OPTIONS", headers=PREFLIGHT)[0] == 204
    assert len(upstream.requests) == before


def test_preflights_spend_no_token(proxy):
    for _ in range(5):
        assert get(proxy.port, "/limited", method="OPTIONS", headers=PREFLIGHT)[0] == 204
    status, h, _ = get(proxy.port, "/limited", method="PUT", headers={"Origin": SITE}, body=b"x")
    assert status == 200 and h["access-control-allow-origin"] == SITE
    status, h, _ = get(proxy.port, "/limited", method="PUT", headers={"Origin": SITE}, body=b"x")
    assert status == 503  # the one token is spent now: the limit is live
    assert h["access-control-allow-origin"] == SITE  # a refusal is decorated too


def test_a_preflight_from_a_disallowed_origin_gets_no_allow_headers(proxy):
    status, h, _ = get(proxy.port, "/open", method="OPTIONS", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert status == 204 and "access-control-allow-origin" not in h
    status, h, _ = get(proxy.port, "/open", method="OPTIONS",
                       headers={**PREFLIGHT, "Access-Control-Request-Method": "DELETE"})
    assert status == 204 and "access-control-allow-methods" not in h


def test_actual_responses_carry_the_cors_headers_for_allowed_origins_only(proxy, key):
    status, h, _ = get(proxy.port, "/open", headers={"Origin": "https://eu.partner.example"})
    assert status == 200
    assert h["access-control-allow-origin"] == "https://eu.partner.example"
    assert h["access-control-expose-headers"] == "RateLimit" and h["vary"] == "Origin"
    status, h, _ = get(proxy.port, "/open", headers={"Origin": "https://evil.example"})
    assert status == 200 and "access-control-allow-origin" not in h and h["vary"] == "Origin"
    status, h, _ = get(proxy.port, "/open")
    assert status == 200 and "access-control-allow-origin" not in h


def test_the_gateways_own_refusals_are_decorated(proxy, key):
    status, h, _ = get(proxy.port, "/private", headers={"Origin": SITE})
    assert status == 401 and h["access-control-allow-origin"] == SITE and "www-authenticate" in h
    status, h, _ = get(proxy.port, "/private", headers={"Origin": SITE, "Authorization": f"Bearer {key.token()}"})
    assert status == 200 and h["access-control-allow-origin"] == SITE
    status, h, _ = get(proxy.port, "/nothing-here", headers={"Origin": SITE})
    assert status == 404 and h["access-control-allow-origin"] == SITE


def test_without_cors_no_cors_header_is_added(upstream, tmp_path):
    p = Proxy(config(upstream, [ep("/open", "/echo/open")]), tmp_path)
    try:
        status, h, _ = get(p.port, "/open", headers={"Origin": SITE})
        assert status == 200 and "vary" not in h and "access-control-allow-origin" not in h
        assert get(p.port, "/open", method="OPTIONS", headers=PREFLIGHT)[0] == 405
    finally:
        p.stop()


def test_options_passthrough_sends_the_preflight_to_the_backend_and_decorates_its_answer(upstream, tmp_path):
    cors = {"allow_origins": [SITE], "allow_methods": ["PUT"], "allow_headers": ["*"], "options_passthrough": True}
    p = Proxy(config(upstream, [ep("/thing", "/echo/thing", method="OPTIONS")], extra_config={"security/cors": cors}),
              tmp_path)
    try:
        before = len(upstream.requests)
        status, h, _ = get(p.port, "/thing", method="OPTIONS", headers=PREFLIGHT)
        assert status == 200 and len(upstream.requests) == before + 1
        assert h["access-control-allow-origin"] == SITE and h["access-control-allow-methods"] == "PUT"
    finally:
        p.stop()

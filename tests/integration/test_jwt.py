"""`auth/validator` end to end (SPEC §6): tokens minted here, a JWK Set served on 127.0.0.1, the
proxy started through its CLI, and a backend that echoes what it received.
"""

import json
import time

import pytest

from tests.identity import JWKSServer, SigningKey, jwks, unsigned
from tests.integration.netutil import wait_for
from tests.integration.test_admin import _metrics, _value
from tests.support import Proxy, config, ep, free_port, get

ISS = "https://idp.example"


@pytest.fixture(scope="module")
def k1():
    return SigningKey("RS256", "k1")


@pytest.fixture(scope="module")
def k2():
    return SigningKey("RS256", "k2")


@pytest.fixture()
def idp(k1):
    server = JWKSServer(jwks(k1))
    yield server
    server.stop()


def validator(idp, **kw) -> dict:
    return {"alg": "RS256", "jwk_url": idp.url, "disable_jwk_security": True, "cache": True, **kw}


def bearer(token: str, **headers: str) -> dict:
    return {"Authorization": f"Bearer {token}", **headers}


def echoed(body: bytes) -> dict:
    return json.loads(body)


def header_values(req: dict, name: str) -> list:
    return [v for n, v in req["headers"] if n.lower() == name.lower()]


@pytest.fixture()
def proxy(upstream, idp, tmp_path):
    admin = free_port()
    v = validator(idp, issuer=ISS, audience=["api"])
    endpoints = [
        ep("/me", "/echo/me", extra_config={"auth/validator": v}),
        ep("/admin", "/echo/admin", extra_config={"auth/validator": {**v, "roles_key": "realm.roles",
                                                                     "roles_key_is_nested": True,
                                                                     "roles": ["admin"]}}),
        ep("/scoped", "/echo/scoped", extra_config={"auth/validator": {**v, "scopes_key": "scope",
                                                                      "scopes": ["read", "write"],
                                                                      "scopes_matcher": "all"}}),
        ep("/public", "/echo/public"),
    ]
    p = Proxy(config(upstream, endpoints, extra_config={"fastproxy": {"admin": {"port": admin}}}), tmp_path)
    p.admin = admin
    yield p
    p.stop()


def good(k, **claims):
    return k.token({"iss": ISS, "aud": "api", **claims})


CASES = [
    ("valid", "/me", lambda k: bearer(good(k)), 200, None),
    ("no token", "/me", lambda k: {}, 401, 'Bearer realm="fastproxy"'),
    ("another scheme", "/me", lambda k: {"Authorization": "Basic YTpi"}, 401, 'Bearer realm="fastproxy"'),
    ("expired", "/me", lambda k: bearer(good(k, exp=int(time.time()) - 60)), 401, 'error="invalid_token"'),
    ("not yet valid", "/me", lambda k: bearer(good(k, nbf=int(time.time()) + 600)), 401, "not valid yet"),
    ("wrong issuer", "/me", lambda k: bearer(good(k, iss="https://evil.example")), 401, "wrong issuer"),
    ("wrong audience", "/me", lambda k: bearer(good(k, aud="other")), 401, "wrong audience"),
    ("alg none", "/me", lambda k: bearer(unsigned({"iss": ISS, "aud": "api", "sub": "root"})), 401,
     "algorithm not accepted"),
    ("another alg", "/me", lambda k: bearer(k.token({"iss": ISS, "aud": "api"}, alg="RS512")), 401,
     "algorithm not accepted"),
    ("bad signature", "/me", lambda k: bearer(SigningKey("RS256", "k1").token({"iss": ISS, "aud": "api"})), 401,
     "bad signature"),
    ("garbage", "/me", lambda k: bearer("not-a-token"), 401, 'error="invalid_token"'),
    ("roles present", "/admin", lambda k: bearer(good(k, realm={"roles": ["user", "admin"]})), 200, None),
    ("roles missing", "/admin", lambda k: bearer(good(k, realm={"roles": ["user"]})), 403, "insufficient_scope"),
    ("scopes all", "/scoped", lambda k: bearer(good(k, scope="read write")), 200, None),
    ("a scope missing", "/scoped", lambda k: bearer(good(k, scope="read")), 403, "insufficient_scope"),
]


@pytest.mark.parametrize("name,path,headers,status,challenge", CASES, ids=[c[0] for c in CASES])
def test_each_reason_gets_its_status_and_challenge_and_a_refused_request_never_reaches_the_backend(
        proxy, upstream, k1, name, path, headers, status, challenge):
    before = len(upstream.requests)
    got, h, _ = get(proxy.port, path, headers=headers(k1))
    assert got == status, (name, h)
    if challenge is None:
        assert len(upstream.requests) == before + 1
    else:
        assert challenge in h["www-authenticate"]
        assert len(upstream.requests) == before


def test_a_header_line_in_the_tokens_alg_never_reaches_the_answer(proxy):
    """The token's text is never echoed: an `alg` carrying CR LF would inject a header line (or
    end the head) of the 401."""
    import base64
    import json as _json
    import socket

    def seg(obj) -> str:
        return base64.urlsafe_b64encode(_json.dumps(obj).encode()).rstrip(b"=").decode()

    for alg in ("\r\nX-Injected: yes", "\r\n\r\nHTTP/1.1 200 OK"):
        token = f"{seg({'alg': alg, 'kid': 'k1'})}.{seg({'sub': 'x'})}.AAAA"
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(f"GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.startswith(b"HTTP/1.1 401")
        assert b"x-injected" not in head.lower() and b"HTTP/1.1 200" not in data
        assert b"content-length:" in head.lower()  # the framing is in the head, not pushed into a body


def test_refusals_are_counted_by_reason(proxy, k1):
    get(proxy.port, "/me", headers=bearer(good(k1, exp=int(time.time()) - 60)))
    get(proxy.port, "/admin", headers=bearer(good(k1)))
    text = _metrics(proxy.admin)
    assert _value(text, 'fastproxy_rejections_total{route="/me",reason="jwt expired"}') == 1
    assert _value(text, 'fastproxy_rejections_total{route="/admin",reason="jwt roles"}') == 1


def test_a_public_route_next_to_validated_ones_needs_no_token(proxy):
    assert get(proxy.port, "/public")[0] == 200


def test_claims_are_propagated_and_the_clients_own_copies_are_dropped(upstream, idp, k1, tmp_path):
    v = validator(idp, propagate_claims=[["sub", "X-User"], ["realm.roles", "X-Roles"]])
    p = Proxy(config(upstream, [ep("/me", "/echo/me", input_headers=["*"], extra_config={"auth/validator": v})]),
              tmp_path)
    try:
        token = k1.token({"realm": {"roles": ["a", "b"]}})
        status, _, body = get(p.port, "/me", headers=bearer(token, **{"X-User": "mallory", "X-Roles": "admin"}))
        assert status == 200
        req = echoed(body)
        assert header_values(req, "X-User") == ["alice"]
        assert header_values(req, "X-Roles") == ["a,b"]
        # a `_` spelling (read as `-` by CGI backends) is the same header: dropped too
        status, _, body = get(p.port, "/me", headers=bearer(token, **{"X_User": "mallory"}))
        assert status == 200 and not [n for n, _ in echoed(body)["headers"] if n.lower() == "x_user"]
        assert header_values(echoed(body), "X-User") == ["alice"]
    finally:
        p.stop()


def test_a_jwt_placeholder_in_url_pattern_is_the_verified_claim(upstream, idp, k1, tmp_path):
    v = validator(idp)
    p = Proxy(config(upstream, [ep("/me", "/echo/users/{JWT.sub}", extra_config={"auth/validator": v})]), tmp_path)
    try:
        status, _, body = get(p.port, "/me", headers=bearer(k1.token(sub="bob/../admin")))
        assert status == 200
        assert echoed(body)["url"] == "/echo/users/bob%2F..%2Fadmin"
    finally:
        p.stop()


def test_a_token_in_a_cookie(upstream, idp, k1, tmp_path):
    v = validator(idp, cookie_key="session")
    p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
    try:
        assert get(p.port, "/me", headers={"Cookie": f"theme=dark; session={k1.token()}"})[0] == 200
        assert get(p.port, "/me", headers={"Cookie": "theme=dark"})[0] == 401
        assert get(p.port, "/me", headers={"Cookie": f"session={unsigned({'sub': 'x'})}"})[0] == 401
    finally:
        p.stop()


def test_a_tier_chosen_by_a_claim_that_the_client_cannot_override(upstream, idp, k1, tmp_path):
    v = validator(idp, propagate_claims=[["plan", "X-Plan"], ["sub", "X-User"]])
    tiered = {"tier_key": "X-Plan", "tiers": [
        {"tier_value": "gold", "ratelimit": {"client_max_rate": 100, "strategy": "header", "key": "X-User"}},
        {"tier_value": "free", "ratelimit": {"client_max_rate": 1, "client_capacity": 1, "every": "1h",
                                             "strategy": "header", "key": "X-User"}},
    ]}
    p = Proxy(config(upstream, [ep("/api", "/echo/api", extra_config={"auth/validator": v,
                                                                      "qos/ratelimit/tiered": tiered})]), tmp_path)
    try:
        free = k1.token(plan="free")
        assert get(p.port, "/api", headers=bearer(free))[0] == 200
        # the free user claims the gold tier by header: the gateway's value (from the token) wins
        assert get(p.port, "/api", headers=bearer(free, **{"X-Plan": "gold"}))[0] == 429
        assert get(p.port, "/api", headers=bearer(free, **{"X-User": "somebody-else"}))[0] == 429
        gold = k1.token(plan="gold", sub="carol")
        assert [get(p.port, "/api", headers=bearer(gold))[0] for _ in range(5)] == [200] * 5
        # no plan claim: no tier header at all, whatever the client sends
        assert get(p.port, "/api", headers=bearer(k1.token(sub="dave"), **{"X-Plan": "gold"}))[0] == 403
    finally:
        p.stop()


def test_a_root_tier_on_a_propagated_claim_cannot_be_forged_on_a_route_without_a_validator(
        upstream, idp, k1, tmp_path):
    """The gateway owns X-Plan (a validator propagates it on /api): on /public, which has no
    validator, a client's own X-Plan is dropped before the root tier reads it, and never reaches
    the backend."""
    v = validator(idp, propagate_claims=[["plan", "X-Plan"]])
    tiered = {"tier_key": "X-Plan", "tiers": [
        {"tier_value": "gold", "ratelimit": {"max_rate": 1000}},
        {"tier_value": "", "tier_value_as": "*", "ratelimit": {"max_rate": 1, "capacity": 1, "every": "1h"}},
    ]}
    p = Proxy(config(upstream, [ep("/api", "/echo/api", extra_config={"auth/validator": v}),
                                ep("/public", "/echo/public", input_headers=["*"])],
                     extra_config={"qos/ratelimit/tiered": tiered}), tmp_path)
    try:
        forged = {"X-Plan": "gold", "X_Plan": "gold"}
        status, _, body = get(p.port, "/public", headers=forged)
        assert status == 200
        assert not header_values(echoed(body), "X-Plan") and not header_values(echoed(body), "X_Plan")
        assert get(p.port, "/public", headers=forged)[0] == 503  # the default tier (capacity 1), not gold
    finally:
        p.stop()


def test_a_client_limit_keyed_on_the_subject_and_refused_requests_spend_no_token(upstream, idp, k1, tmp_path):
    v = validator(idp, propagate_claims=[["sub", "X-User"]])
    limit = {"max_rate": 1, "capacity": 3, "every": "1h", "client_max_rate": 1, "client_capacity": 1,
             "strategy": "header", "key": "X-User"}
    p = Proxy(config(upstream, [ep("/api", "/echo/api", extra_config={"auth/validator": v,
                                                                      "qos/ratelimit/router": limit})]), tmp_path)
    try:
        expired = k1.token(exp=int(time.time()) - 60)
        assert [get(p.port, "/api", headers=bearer(expired))[0] for _ in range(5)] == [401] * 5
        assert get(p.port, "/api", headers=bearer(k1.token()))[0] == 200  # alice's token was not spent
        assert get(p.port, "/api", headers=bearer(k1.token()))[0] == 429
        assert get(p.port, "/api", headers=bearer(k1.token(sub="bob")))[0] == 200
    finally:
        p.stop()


def test_key_rotation_through_an_unknown_kid_and_one_refetch_per_cooldown(upstream, idp, k1, k2, tmp_path):
    v = validator(idp, failed_jwk_key_cooldown="1m")
    p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
    try:
        assert get(p.port, "/me", headers=bearer(k1.token()))[0] == 200
        idp.document = jwks(k2)  # the provider rotated to k2
        fetched = idp.requests
        assert get(p.port, "/me", headers=bearer(k2.token()))[0] == 200  # unknown kid: one refetch
        assert idp.requests == fetched + 1
        k3 = SigningKey("RS256", "k3")
        assert [get(p.port, "/me", headers=bearer(k3.token()))[0] for _ in range(5)] == [401] * 5
        assert idp.requests == fetched + 1  # within the cooldown: no more fetches
        assert get(p.port, "/me", headers=bearer(k1.token()))[0] == 401  # k1 rotated out
    finally:
        p.stop()


def test_a_jwks_endpoint_down_after_start_keeps_the_keys(upstream, idp, k1, tmp_path):
    v = validator(idp, cache_duration=1)
    p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
    try:
        token = k1.token()
        assert get(p.port, "/me", headers=bearer(token))[0] == 200
        idp.status = 503
        fetched = idp.requests
        wait_for(lambda: idp.requests >= fetched + 2, timeout=10)  # refreshes failed since
        assert get(p.port, "/me", headers=bearer(token))[0] == 200
        assert get(p.port, "/me", headers=bearer(k1.token(sub="new")))[0] == 200  # first-seen token too
        assert "keeping the 1 keys read before" in p.stderr()
    finally:
        p.stop()


def test_a_jwks_endpoint_down_at_start_answers_503_never_a_pass(upstream, k1, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/jwks.json"
    v = {"alg": "RS256", "jwk_url": dead, "disable_jwk_security": True, "cache": True}
    p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
    try:
        before = len(upstream.requests)
        for _ in range(3):
            status, h, _ = get(p.port, "/me", headers=bearer(k1.token()))
            assert status == 503 and h["retry-after"]
        assert get(p.port, "/me")[0] == 401  # no token: refused before any key is needed
        assert len(upstream.requests) == before
    finally:
        p.stop()


def test_requests_before_the_first_fetch_completes_wait_for_it(upstream, k1, tmp_path):
    # the proxy is ready before its JWK Set is: the first request waits for the fetch
    server = JWKSServer(jwks(k1))
    server.delay = 0.8
    try:
        v = {"alg": "RS256", "jwk_url": server.url, "disable_jwk_security": True}
        p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
        try:
            started = time.monotonic()
            assert get(p.port, "/me", headers=bearer(k1.token()))[0] == 200
            assert server.requests == 1
            assert time.monotonic() - started > 0.3  # it did wait for the answer
        finally:
            p.stop()
    finally:
        server.stop()


def test_keys_from_a_local_file(upstream, tmp_path):
    k = SigningKey("ES256", "local")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(k)))
    v = {"alg": "ES256", "jwk_local_path": str(path)}
    p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": v})]), tmp_path)
    try:
        assert get(p.port, "/me", headers=bearer(k.token()))[0] == 200
        assert get(p.port, "/me", headers=bearer(SigningKey("ES256", "local").token()))[0] == 401
    finally:
        p.stop()


def test_an_https_jwk_url_is_verified_against_jwk_local_ca(upstream, k1, tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = JWKSServer(jwks(k1), ssl=ctx)
    try:
        trusted = {"alg": "RS256", "jwk_url": server.url, "jwk_local_ca": str(ca_path)}
        unknown_ca = {"alg": "RS256", "jwk_url": server.url}
        p = Proxy(config(upstream, [ep("/me", "/echo/me", extra_config={"auth/validator": trusted}),
                                    ep("/other", "/echo/other", extra_config={"auth/validator": unknown_ca})]),
                  tmp_path)
        try:
            assert get(p.port, "/me", headers=bearer(k1.token()))[0] == 200
            # the same server, its certificate checked against the system's CAs: no keys, never a pass
            assert get(p.port, "/other", headers=bearer(k1.token()))[0] == 503
            assert "CERTIFICATE_VERIFY_FAILED" in p.stderr()
        finally:
            p.stop()
    finally:
        server.stop()

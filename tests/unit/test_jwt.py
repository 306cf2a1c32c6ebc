"""The token verifier (`fastproxy.auth.jwt`) as pure logic: keys read from JWK Sets, every reason a
token is refused, roles and scopes. Tokens are minted here; the clock is a fake one.
"""

import base64
import json

import pytest

from fastproxy.auth.jwt import Failure, Verifier, challenge, claim_at, claim_text, read_jwks
from tests.identity import SigningKey, jwks, unsigned

NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def keys():
    return {alg: SigningKey(alg, f"{alg.lower()}-1") for alg in ("RS256", "ES256", "EdDSA", "HS256", "PS256")}


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def verifier(alg: str, clock=None, **kw) -> Verifier:
    return Verifier(alg, clock or Clock(), **kw)


def kind(fn) -> str:
    with pytest.raises(Failure) as exc:
        fn()
    return exc.value.kind


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "HS256", "PS256"])
def test_a_token_signed_by_a_key_of_the_set_is_verified_for_each_family(keys, alg):
    k = keys[alg]
    v = verifier(alg)
    got = v.verify(k.token(exp=int(NOW) + 60).encode(), read_jwks(jwks(k), alg))
    assert got.claims["sub"] == "alice" and got.exp == NOW + 60


def test_alg_none_is_refused_before_any_key(keys):
    k = keys["RS256"]
    assert kind(lambda: verifier("RS256").verify(unsigned({"sub": "root"}, k.kid).encode(),
                                                 read_jwks(jwks(k), "RS256"))) == "alg"


def test_an_hs256_token_keyed_with_the_rsa_public_key_is_refused(keys):
    # algorithm confusion: the public key's PEM used as an HMAC secret
    from cryptography.hazmat.primitives import serialization

    k = keys["RS256"]
    pem = k.private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": k.kid}).encode()).rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "root", "exp": NOW + 60}).encode()).rstrip(b"=")
    import hashlib
    import hmac
    sig = base64.urlsafe_b64encode(hmac.new(pem, header + b"." + body, hashlib.sha256).digest()).rstrip(b"=")
    forged = header + b"." + body + b"." + sig
    assert kind(lambda: verifier("RS256").verify(forged, read_jwks(jwks(k), "RS256"))) == "alg"


def test_another_algorithm_than_the_configured_one_is_refused(keys):
    k = keys["RS256"]
    token = k.token(alg="RS384").encode()
    assert kind(lambda: verifier("RS256").verify(token, read_jwks(jwks(k), "RS256"))) == "alg"


def test_a_tampered_payload_fails_its_signature(keys):
    k = keys["ES256"]
    h, _, s = k.token(exp=int(NOW) + 60).split(".")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "root", "exp": NOW + 60}).encode()).rstrip(b"=").decode()
    assert kind(lambda: verifier("ES256").verify(f"{h}.{body}.{s}".encode(), read_jwks(jwks(k), "ES256"))) \
        == "signature"


@pytest.mark.parametrize("token", [b"", b"abc", b"a.b", b"a.b.c.d", b"!!!.e30.x"])
def test_garbage_is_malformed(keys, token):
    assert kind(lambda: verifier("RS256").verify(token, read_jwks(jwks(keys["RS256"]), "RS256"))) == "malformed"


@pytest.mark.parametrize("claims,now,leeway,expected", [
    ({"exp": NOW - 1}, NOW, 0, "expired"),
    ({"exp": NOW - 1}, NOW, 2, None),  # within the leeway
    ({"exp": NOW}, NOW, 0, None),  # exp is the last valid second
    ({"nbf": NOW + 10}, NOW, 0, "early"),
    ({"nbf": NOW + 10}, NOW, 10, None),
    ({"iat": NOW + 30}, NOW, 0, "early"),
    ({"exp": "tomorrow"}, NOW, 0, "malformed"),
    ({"exp": True}, NOW, 0, "malformed"),
], ids=["expired", "expired within leeway", "exp now", "nbf ahead", "nbf within leeway", "iat ahead",
        "exp a string", "exp a boolean"])
def test_token_times_are_judged_with_the_injected_clock_and_leeway(keys, claims, now, leeway, expected):
    k = keys["HS256"]
    v = verifier("HS256", Clock(now), leeway=leeway)
    token = k.token({"exp": None, **claims}).encode()
    if expected is None:
        v.verify(token, read_jwks(jwks(k), "HS256"))
    else:
        assert kind(lambda: v.verify(token, read_jwks(jwks(k), "HS256"))) == expected


def test_a_verified_token_expires_when_the_clock_passes_exp(keys):
    k = keys["HS256"]
    clock = Clock()
    v = verifier("HS256", clock)
    token = k.token(exp=int(NOW) + 5).encode()
    ks = read_jwks(jwks(k), "HS256")
    v.verify(token, ks)
    clock.t += 6
    assert kind(lambda: v.verify(token, ks)) == "expired"


@pytest.mark.parametrize("claims,expected", [
    ({"iss": "https://idp.example"}, None),
    ({"iss": "https://evil.example"}, "issuer"),
    ({}, "issuer"),
])
def test_issuer(keys, claims, expected):
    k = keys["RS256"]
    v = verifier("RS256", issuer="https://idp.example")
    token = k.token(claims, exp=int(NOW) + 60).encode()
    if expected is None:
        v.verify(token, read_jwks(jwks(k), "RS256"))
    else:
        assert kind(lambda: v.verify(token, read_jwks(jwks(k), "RS256"))) == expected


@pytest.mark.parametrize("aud,expected", [
    (["api", "billing"], None),
    (["api", "billing", "other"], None),
    (["api"], "audience"),  # KrakenD: every configured audience must be present, not any
    ("api", "audience"),
    (None, "audience"),
])
def test_every_configured_audience_must_be_present(keys, aud, expected):
    k = keys["EdDSA"]
    v = verifier("EdDSA", audience=["api", "billing"])
    token = k.token({"aud": aud}, exp=int(NOW) + 60).encode()
    if expected is None:
        v.verify(token, read_jwks(jwks(k), "EdDSA"))
    else:
        assert kind(lambda: v.verify(token, read_jwks(jwks(k), "EdDSA"))) == expected


def test_a_single_audience_may_be_a_string(keys):
    k = keys["EdDSA"]
    verifier("EdDSA", audience=["api"]).verify(k.token({"aud": "api"}, exp=int(NOW) + 60).encode(),
                                                read_jwks(jwks(k), "EdDSA"))


def test_keys_are_found_by_kid_and_a_token_without_kid_only_against_a_set_of_one(keys):
    a, b = SigningKey("ES256", "a"), SigningKey("ES256", "b")
    both = read_jwks(jwks(a, b), "ES256")
    v = verifier("ES256")
    v.verify(b.token(exp=int(NOW) + 60).encode(), both)
    assert kind(lambda: v.verify(a.token(kid="c", exp=int(NOW) + 60).encode(), both)) == "kid"
    assert kind(lambda: v.verify(a.token(kid=None, exp=int(NOW) + 60).encode(), both)) == "kid"
    v.verify(a.token(kid=None, exp=int(NOW) + 60).encode(), read_jwks(jwks(a), "ES256"))


def test_a_token_signed_by_another_key_with_the_same_kid_fails_its_signature(keys):
    impostor = SigningKey("RS256", keys["RS256"].kid)
    assert kind(lambda: verifier("RS256").verify(impostor.token().encode(), read_jwks(jwks(keys["RS256"]), "RS256"))) \
        == "signature"


def test_keys_that_do_not_fit_the_algorithm_are_left_out_of_the_set(keys):
    es384 = {**keys["ES256"].jwk, "crv": "P-384", "kid": "wrong-curve"}
    doc = {"keys": [keys["RS256"].jwk, {**keys["ES256"].jwk, "alg": "ES512", "kid": "other-alg"},
                    {**keys["ES256"].jwk, "use": "enc", "kid": "enc"}, es384, keys["HS256"].jwk, keys["ES256"].jwk]}
    ks = read_jwks(doc, "ES256")
    assert list(ks.by_kid) == [keys["ES256"].kid]
    assert len(ks.skipped) == 5


@pytest.mark.parametrize("doc", [b"not json", {"no": "keys"}, {"keys": []}, {"keys": [{"kty": "RSA", "n": "x"}]}],
                         ids=["not json", "no keys list", "empty", "unreadable key"])
def test_a_set_without_a_usable_key_is_refused(doc):
    with pytest.raises(ValueError):
        read_jwks(doc if isinstance(doc, bytes) else doc, "RS256")


@pytest.mark.parametrize("cfg,claims,expected", [
    ({"roles_key": "roles", "roles": ["admin", "ops"]}, {"roles": ["user", "ops"]}, None),
    ({"roles_key": "roles", "roles": ["admin"]}, {"roles": ["user"]}, "roles"),
    ({"roles_key": "roles", "roles": ["admin"]}, {}, "roles"),
    ({"roles_key": "roles", "roles": ["admin"]}, {"roles": "admin"}, None),
    ({"roles_key": "realm_access.roles", "roles_nested": True, "roles": ["admin"]},
     {"realm_access": {"roles": ["admin"]}}, None),
    ({"roles_key": "realm_access.roles", "roles_nested": True, "roles": ["admin"]},
     {"realm_access": {"roles": ["user"]}}, "roles"),
    ({"roles_key": "realm_access.roles", "roles": ["admin"]}, {"realm_access": {"roles": ["admin"]}}, "roles"),
    ({"roles_key": "https://example.com/roles", "roles": ["admin"]}, {"https://example.com/roles": ["admin"]}, None),
    ({"scopes_key": "scope", "scopes": ["read", "write"]}, {"scope": "openid write"}, None),
    ({"scopes_key": "scope", "scopes": ["read", "write"], "scopes_all": True}, {"scope": "openid write"}, "scopes"),
    ({"scopes_key": "scope", "scopes": ["read", "write"], "scopes_all": True}, {"scope": "write read"}, None),
    ({"scopes_key": "data.scopes", "scopes": ["read"]}, {"data": {"scopes": ["read"]}}, None),
    ({"scopes_key": "scope", "scopes": ["read"]}, {"scope": 5}, "scopes"),
], ids=["roles any", "roles none", "roles absent", "one role as a string", "nested roles", "nested roles missing",
        "dotted key without nesting is literal", "url-like roles key", "scopes any", "scopes all missing one",
        "scopes all", "nested scopes list", "scopes not a list"])
def test_roles_and_scopes(keys, cfg, claims, expected):
    v = verifier("RS256", **cfg)
    if expected is None:
        v.authorize(claims)
    else:
        assert kind(lambda: v.authorize(claims)) == expected


@pytest.mark.parametrize("value,text", [
    ("alice", "alice"), (42, "42"), (1.5, "1.5"), (2.0, "2"), (True, "true"), (None, None),
    (["a", "b", 3], "a,b,3"), ({"x": 1}, '{"x":1}'),
])
def test_claims_become_header_text_as_krakend_renders_them(value, text):
    assert claim_text(value) == text


def test_nested_claims_are_found_by_dotted_path_unless_a_claim_has_the_whole_name():
    claims = {"a": {"b": 1}, "a.b": 2, "c": {"d": {"e": "x"}}}
    assert claim_at(claims, "a.b") == 2 and claim_at(claims, "c.d.e") == "x" and claim_at(claims, "c.x") is None


def test_challenges_follow_rfc_6750():
    assert challenge("missing", "no token") == b'Bearer realm="fastproxy"'
    assert challenge("expired", 'token "expired"') == (
        b'Bearer realm="fastproxy", error="invalid_token", error_description="token ?expired?"')
    # nothing that could end the header line or the quoted string survives
    assert challenge("alg", 'a\r\nX-Injected: yes\\"\x00\xe9') == (
        b'Bearer realm="fastproxy", error="invalid_token", error_description="a??X-Injected: yes????"')
    assert b'error="insufficient_scope"' in challenge("roles", "missing role")

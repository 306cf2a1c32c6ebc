"""`auth/validator` compiled and run without a loop: the config errors it is refused with, the
cache of verified tokens (with a fake clock), claim propagation, placeholders and tokens in
cookies or custom headers.
"""

import json

import pytest

import fastproxy.auth.jwt as jwt_mod
from fastproxy.auth import validator as vmod
from fastproxy.auth.validator import LiveValidator, ValidatorPolicy
from fastproxy.config.compile import compile_config
from fastproxy.http.head import RequestHead, scan_request
from fastproxy.policies import Rejection
from tests.configutil import assert_problem, errors_of
from tests.identity import SigningKey, jwks

NOW = 1_800_000_000.0
E0 = '$.endpoints[0].extra_config["auth/validator"]'


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def key():
    return SigningKey("RS256", "k1")


@pytest.fixture()
def jwk_file(tmp_path, key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    return str(path)


def cfg(block: dict, url_pattern: str = "/x", **ep) -> dict:
    return {"version": 3, "host": ["http://127.0.0.1:1"], "output_encoding": "no-op",
            "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": url_pattern}],
                           "extra_config": {"auth/validator": block}, **ep}]}


class Req(RequestHead):
    """What a policy sees of the exchange: the head, its parameters."""

    __slots__ = ("params",)


def request(*headers: str) -> Req:
    x = Req()
    raw = "GET /a HTTP/1.1\r\nHost: h\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    scan_request(x, raw.encode(), 8192, 8192, 32768, 100, 1 << 20)
    x.params = None
    return x


def live(block: dict, clock: Clock, url_pattern: str = "/x") -> LiveValidator:
    snap = compile_config(cfg(block, url_pattern))
    (policy,) = [c for c in snap.route_list[0].checks if isinstance(c, ValidatorPolicy)]
    policy.verifier.clock = clock  # the wall clock, injected
    return LiveValidator(policy, None)


def refused(lv: LiveValidator, x) -> Rejection:
    with pytest.raises(Rejection) as exc:
        lv.check(x, 0.0)
    return exc.value


# -- config errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("block,path,words", [
    ({"alg": "HS257", "jwk_url": "https://idp/jwks"}, f"{E0}.alg", ["expected one of EdDSA, HS256"]),
    ({"alg": "RS256"}, E0, ["expected jwk_url or jwk_local_path"]),
    ({"jwk_url": "http://idp/jwks"}, f"{E0}.jwk_url", ["expected an https:// URL", "disable_jwk_security"]),
    ({"jwk_url": "ftp://idp/jwks"}, f"{E0}.jwk_url", ["expected an http(s) URL"]),
    ({"jwk_local_path": "/nonexistent/jwks.json"}, f"{E0}.jwk_local_path", ["cannot read the JWK Set"]),
    ({"jwk_url": "https://idp/jwks", "auth_header_name": "X Auth"}, f"{E0}.auth_header_name",
     ["expected a header name"]),
    ({"jwk_url": "https://idp/jwks", "cookie_key": "a;b"}, f"{E0}.cookie_key", ["expected a cookie name"]),
    ({"jwk_url": "https://idp/jwks", "propagate_claims": [["sub"]]}, f"{E0}.propagate_claims[0]",
     ["expected [claim, header]"]),
    ({"jwk_url": "https://idp/jwks", "propagate_claims": [["sub", "X_User"]]}, f"{E0}.propagate_claims[0][1]",
     ["without '_'"]),
    ({"jwk_url": "https://idp/jwks", "propagate_claims": [["sub", "Host"]]}, f"{E0}.propagate_claims[0][1]",
     ["cannot carry a claim"]),
    ({"jwk_url": "https://idp/jwks", "roles": ["admin"]}, f"{E0}.roles_key", ["expected roles_key"]),
    ({"jwk_url": "https://idp/jwks", "scopes": ["read"], "scopes_key": "scope", "scopes_matcher": "most"},
     f"{E0}.scopes_matcher", ["expected 'any' or 'all'"]),
    ({"jwk_url": "https://idp/jwks", "jwk_fingerprints": ["abc="]}, f"{E0}.jwk_fingerprints",
     ["not implemented", "fail closed"]),
    ({"jwk_url": "https://idp/jwks", "key_identify_strategy": "x5t"}, f"{E0}.key_identify_strategy",
     ["only 'kid'"]),
    ({"jwk_url": "https://idp/jwks", "leeway": "soon"}, f"{E0}.leeway", ["expected a duration"]),
    ({"jwk_url": "https://idp/jwks", "roels": ["admin"]}, f"{E0}.roels", ["did you mean `roles`?"]),
])
def test_a_validator_it_cannot_enforce_as_written_is_a_config_error_at_its_path(block, path, words):
    assert_problem(errors_of(cfg(block)), path, words)


def test_a_jwk_file_without_a_key_for_the_algorithm_is_refused(tmp_path, key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(jwks(key)))
    assert_problem(errors_of(cfg({"alg": "ES256", "jwk_local_path": str(path)})), f"{E0}.jwk_local_path",
                   ["no key usable for ES256"])


def test_a_jwt_placeholder_is_accepted_on_a_validated_endpoint(jwk_file):
    snap = compile_config(cfg({"jwk_local_path": jwk_file}, "/users/{JWT.sub}"))
    (policy,) = snap.route_list[0].checks
    assert policy.placeholders == ("JWT.sub",)


def test_the_root_block_only_declares_the_shared_cache():
    raw = cfg({"jwk_url": "https://idp/jwks"})
    raw["extra_config"] = {"auth/validator": {"shared_cache_duration": 900}}
    assert_problem(list(compile_config(raw).warnings), '$.extra_config["auth/validator"].shared_cache_duration',
                   ["each worker keeps its own JWK cache"])
    raw["extra_config"] = {"auth/validator": {"alg": "RS256"}}
    assert_problem(errors_of(raw), '$.extra_config["auth/validator"].alg', ["protected by its own"])


def test_the_validator_runs_after_the_filters_and_before_every_limit(jwk_file):
    raw = cfg({"jwk_local_path": jwk_file})
    raw["endpoints"][0]["extra_config"].update({"qos/ratelimit/router": {"max_rate": 5, "client_max_rate": 1,
                                                                         "strategy": "header", "key": "X-User"},
                                                "security/bot-detector": {"deny": ["bad"]}})
    raw["extra_config"] = {"qos/ratelimit/service": {"max_rate": 100}}
    names = [type(c).__name__ for c in compile_config(raw).route_list[0].checks]
    assert names == ["BotCheck", "ValidatorPolicy", "Limit", "ClientLimit", "Limit"]


# -- per request ---------------------------------------------------------------------------------

def test_a_repeated_token_is_one_lookup_not_a_signature_check(jwk_file, key, monkeypatch):
    calls = []
    real = jwt_mod.pyjwt.decode
    monkeypatch.setattr(jwt_mod.pyjwt, "decode", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    lv = live({"jwk_local_path": jwk_file}, Clock())
    token = key.token(exp=int(NOW) + 60)
    for _ in range(5):
        assert lv.check(request(f"Authorization: Bearer {token}"), 0.0) is None
    assert len(calls) == 1


def test_a_cached_token_expires_at_its_exp(jwk_file, key):
    clock = Clock()
    lv = live({"jwk_local_path": jwk_file, "leeway": "2s"}, clock)
    token = key.token(exp=int(NOW) + 60)
    lv.check(request(f"Authorization: Bearer {token}"), 0.0)
    clock.t = NOW + 62  # within the leeway
    lv.check(request(f"Authorization: Bearer {token}"), 0.0)
    clock.t = NOW + 63
    rej = refused(lv, request(f"Authorization: Bearer {token}"))
    assert rej.status == 401 and rej.reason == "jwt expired"
    assert token.encode() not in lv.cache


def test_a_token_refused_for_its_roles_is_remembered_as_refused(jwk_file, key):
    lv = live({"jwk_local_path": jwk_file, "roles_key": "roles", "roles": ["admin"]}, Clock())
    token = key.token({"roles": ["user"]}, exp=int(NOW) + 60)
    for _ in range(2):
        assert refused(lv, request(f"Authorization: Bearer {token}")).status == 403
    assert lv.cache[token.encode()].rejection is not None


def test_the_cache_is_bounded(jwk_file, key, monkeypatch):
    monkeypatch.setattr(vmod, "MAX_TOKENS", 3)
    lv = live({"jwk_local_path": jwk_file}, Clock())
    for i in range(10):
        lv.check(request(f"Authorization: Bearer {key.token(sub=f'u{i}', exp=int(NOW) + 60)}"), 0.0)
    assert len(lv.cache) == 3


def test_propagated_claims_replace_the_clients_own_headers(jwk_file, key):
    lv = live({"jwk_local_path": jwk_file, "propagate_claims": [["sub", "X-User"], ["tenant.id", "X-Tenant"]]},
              Clock())
    token = key.token({"tenant": {"id": 7}}, exp=int(NOW) + 60)
    for _ in range(2):  # verified, then cached: the same edit both times
        x = request(f"Authorization: Bearer {token}", "X-User: mallory", "x_user: mallory", "X-Tenant: 1",
                    "Accept: */*")
        lv.check(x, 0.0)
        assert [(n, v) for _, n, v in x.headers if n.lower() not in (b"host", b"authorization")] == [
            (b"Accept", b"*/*"), (b"X-User", b"alice"), (b"X-Tenant", b"7")]
        assert x.dirty  # forwarded from the edited list


def test_an_absent_claim_sets_no_header_but_still_drops_the_clients(jwk_file, key):
    lv = live({"jwk_local_path": jwk_file, "propagate_claims": [["plan", "X-Plan"]]}, Clock())
    x = request(f"Authorization: Bearer {key.token(exp=int(NOW) + 60)}", "X-Plan: gold")
    lv.check(x, 0.0)
    assert not [h for h in x.headers if h[0] == b"x-plan"]


def test_a_claim_that_would_inject_a_header_line_is_refused(jwk_file, key):
    lv = live({"jwk_local_path": jwk_file, "propagate_claims": [["sub", "X-User"]]}, Clock())
    token = key.token(sub="a\r\nX-Admin: 1", exp=int(NOW) + 60)
    rej = refused(lv, request(f"Authorization: Bearer {token}"))
    assert rej.status == 401 and rej.reason == "jwt claim"


def test_placeholders_are_filled_percent_encoded_and_a_missing_claim_is_refused(jwk_file, key):
    lv = live({"jwk_local_path": jwk_file}, Clock(), "/users/{JWT.sub}/{JWT.org}")
    x = request(f"Authorization: Bearer {key.token(org='a b', exp=int(NOW) + 60)}")
    lv.check(x, 0.0)
    assert x.params == {"JWT.sub": b"alice", "JWT.org": b"a%20b"}
    rej = refused(lv, request(f"Authorization: Bearer {key.token(exp=int(NOW) + 60)}"))
    assert rej.status == 401 and b"claim org is required" in dict(rej.headers)[b"WWW-Authenticate"]


@pytest.mark.parametrize("block,headers,ok", [
    ({}, ["Authorization: bearer {t}"], True),
    ({}, ["Authorization: {t}"], False),  # Authorization needs the Bearer scheme
    ({"auth_header_name": "X-Token"}, ["X-Token: {t}"], True),
    ({"auth_header_name": "X-Token"}, ["X-Token: Bearer {t}"], True),
    ({"auth_header_name": "X-Token"}, ["Authorization: Bearer {t}"], False),
    ({"cookie_key": "jwt"}, ["Cookie: a=1; jwt={t}; b=2"], True),
    ({"cookie_key": "jwt"}, ["Cookie: xjwt={t}"], False),
    ({}, ["Cookie: jwt={t}"], False),  # no cookie_key: cookies are not read
], ids=["bearer any case", "no scheme", "custom header", "custom header with bearer", "custom header only",
        "cookie", "another cookie", "cookie without cookie_key"])
def test_where_the_token_is_read(jwk_file, key, block, headers, ok):
    lv = live({"jwk_local_path": jwk_file, **block}, Clock())
    token = key.token(exp=int(NOW) + 60)
    x = request(*[h.format(t=token) for h in headers])
    if ok:
        assert lv.check(x, 0.0) is None
    else:
        rej = refused(lv, x)
        assert rej.status == 401 and rej.reason == "jwt missing"


def test_owned_headers_guard_the_routes_whose_own_validator_does_not_set_them(jwk_file):
    """A route whose validator sets every owned header drops the client's copies itself (no
    second pass); a route without one, or setting other headers, gets OwnedHeaders for the rest."""
    from fastproxy.auth import OwnedHeaders

    raw = cfg({"jwk_local_path": jwk_file, "propagate_claims": [["sub", "X-User"]]})
    raw["endpoints"] += [
        {"endpoint": "/b", "backend": [{"url_pattern": "/x"}]},
        {"endpoint": "/c", "backend": [{"url_pattern": "/x"}],
         "extra_config": {"auth/validator": {"jwk_local_path": jwk_file, "propagate_claims": [["plan", "X-Plan"]]}}},
    ]
    routes = {r.name: r for r in compile_config(raw).route_list}
    owned = {name: [c.names for c in r.checks if isinstance(c, OwnedHeaders)] for name, r in routes.items()}
    assert owned == {"/a": [frozenset({b"x-plan"})], "/b": [frozenset({b"x-user", b"x-plan"})],
                     "/c": [frozenset({b"x-user"})]}

"""`auth/api-keys` compiled and run without a loop: each strategy and hash, roles, the propagated
role, and the config errors."""

import hashlib

import pytest

from fastproxy.auth.apikeys import ApiKeyCheck, fnv128, stored_form
from fastproxy.config.compile import compile_config
from fastproxy.http.head import RequestHead, scan_request
from fastproxy.policies import Rejection
from tests.configutil import assert_problem, errors_of

R = '$.extra_config["auth/api-keys"]'
E0 = '$.endpoints[0].extra_config["auth/api-keys"]'
KEY = "4d2c61e1-34c4-e96c-9456-15bd983c5019"


def cfg(root: dict, endpoint: dict, ns: str = "auth/api-keys") -> dict:
    return {"version": 3, "host": ["http://127.0.0.1:1"], "output_encoding": "no-op",
            "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/a"}], "extra_config": {ns: endpoint}}],
            "extra_config": {ns: root}}


def check_of(root: dict, endpoint: dict) -> ApiKeyCheck:
    # (with propagate_role the chain also drops the client's copies on every route: OwnedHeaders)
    (c,) = [c for c in compile_config(cfg(root, endpoint)).route_list[0].checks if isinstance(c, ApiKeyCheck)]
    return c


def req(target: str = "/a", *headers: str) -> RequestHead:
    x = RequestHead()
    raw = f"GET {target} HTTP/1.1\r\nHost: h\r\n" + "".join(f"{h}\r\n" for h in headers) + "\r\n"
    scan_request(x, raw.encode(), 8192, 8192, 32768, 100, 1 << 20)
    return x


def status(c: ApiKeyCheck, x) -> int:
    try:
        c.check(x, 0.0)
    except Rejection as rej:
        return rej.status
    return 200


def test_fnv128_is_gos_fnv1_128():
    # Go: fmt.Sprintf("%x", fnv.New128().Sum(nil)) for "" and for "a"
    assert fnv128(b"").hex() == "6c62272e07bb014262b821756295c58d"
    assert fnv128(b"a").hex() == "d228cb69101a8caf78912b704e4a141e"


@pytest.mark.parametrize("hash_name", ["plain", "sha256", "sha1", "fnv128"])
def test_each_hash_with_a_salt(hash_name):
    salt = "" if hash_name == "plain" else "pepper"
    stored = stored_form(KEY.encode(), hash_name, salt.encode()).decode()
    if hash_name == "sha256":
        assert stored == hashlib.sha256(b"pepper" + KEY.encode()).hexdigest()
    c = check_of({"keys": [{"key": stored.upper() if hash_name != "plain" else stored, "roles": ["user"]}],
                  "hash": hash_name, "salt": salt}, {})
    assert status(c, req("/a", f"Authorization: Bearer {KEY}")) == 200
    assert status(c, req("/a", f"Authorization: Bearer {KEY}x")) == 401
    if hash_name != "plain":  # the stored digest itself is not a key
        assert status(c, req("/a", f"Authorization: Bearer {stored}")) == 401


@pytest.mark.parametrize("root,endpoint,target,headers,expected", [
    ({}, {}, "/a", [f"Authorization: Bearer {KEY}"], 200),
    ({}, {}, "/a", [f"Authorization: {KEY}"], 401),  # Authorization needs the Bearer scheme
    ({}, {}, "/a", [], 401),
    ({"identifier": "X-Key"}, {}, "/a", [f"X-Key: {KEY}"], 200),
    ({"identifier": "X-Key"}, {}, "/a", [f"Authorization: Bearer {KEY}"], 401),
    ({"strategy": "query_string"}, {}, f"/a?key={KEY}&x=1", [], 200),
    ({"strategy": "query_string", "identifier": "api_key"}, {}, f"/a?x=1&api_key={KEY}", [], 200),
    ({"strategy": "query_string"}, {}, "/a?key=nope", [], 401),
    ({"strategy": "query_string"}, {}, "/a", [f"Authorization: Bearer {KEY}"], 401),
    ({}, {"strategy": "query_string", "identifier": "k"}, f"/a?k={KEY}", [], 200),  # the endpoint overrides
], ids=["bearer", "no scheme", "none", "custom header", "custom header only", "query", "query custom name",
        "query unknown", "query strategy ignores headers", "endpoint override"])
def test_each_strategy_and_identifier(root, endpoint, target, headers, expected):
    c = check_of({"keys": [{"key": KEY, "roles": ["user"]}], **root}, endpoint)
    assert status(c, req(target, *headers)) == expected


def test_roles_any_403_and_the_propagated_role_replaces_the_clients():
    root = {"keys": [{"key": KEY, "roles": ["a", "b"]}, {"key": "other", "roles": ["c"]}], "propagate_role": "X-Role"}
    c = check_of(root, {"roles": ["b", "c"]})
    x = req("/a", f"Authorization: Bearer {KEY}", "X-Role: admin", "x_role: admin")
    c.check(x, 0.0)
    assert [(n, v) for lname, n, v in x.headers if lname.replace(b"_", b"-") == b"x-role"] == [(b"X-Role", b"b")]
    assert status(check_of(root, {"roles": ["z"]}), req("/a", f"Authorization: Bearer {KEY}")) == 403
    x = req("/a", "Authorization: Bearer other")
    check_of(root, {}).check(x, 0.0)
    assert [v for lname, _, v in x.headers if lname == b"x-role"] == [b"ANY"]


def test_refusals_carry_a_challenge_and_a_fixed_reason():
    c = check_of({"keys": [{"key": KEY}]}, {})
    with pytest.raises(Rejection) as exc:
        c.check(req("/a", "Authorization: Bearer x"), 0.0)
    assert exc.value.reason == "api key unknown" and dict(exc.value.headers)[b"WWW-Authenticate"].startswith(b"Bearer")


def test_the_krakend_1x_name_is_read_too():
    (c,) = compile_config(cfg({"keys": [{"key": KEY}]}, {}, "github_com/devopsfaith/krakend-apikeys")).route_list[0].checks
    assert isinstance(c, ApiKeyCheck)


@pytest.mark.parametrize("root,endpoint,path,words", [
    ({"keys": [{"key": "abc"}], "hash": "sha256"}, {}, f"{R}.keys[0].key", ["64 hex digits"]),
    ({"keys": [{"key": "k"}], "hash": "md5"}, {}, f"{R}.hash", ["expected one of plain, sha256, sha1, fnv128"]),
    ({"keys": [{"key": "k"}], "strategy": "cookie"}, {}, f"{R}.strategy", ["expected 'header' or 'query_string'"]),
    ({"keys": [{"key": "k"}, {"key": "k"}]}, {}, f"{R}.keys[1].key", ["declared twice"]),
    ({"keys": []}, {}, f"{R}.keys", ["at least one key"]),
    ({"keys": [{"key": "k"}], "propagate_role": "X_Role"}, {}, f"{R}.propagate_role", ["without '_'"]),
    ({"keys": [{"key": "k", "role": ["a"]}]}, {}, f"{R}.keys[0].role", ["did you mean `roles`?"]),
    ({"keys": [{"key": "k"}]}, {"roles": "admin"}, f"{E0}.roles", ["expected array"]),
    ({"keys": [{"key": "k"}]}, {"strategy": "body"}, f"{E0}.strategy", ["expected 'header' or 'query_string'"]),
])
def test_config_errors(root, endpoint, path, words):
    assert_problem(errors_of(cfg(root, endpoint)), path, words)


def test_an_endpoint_block_without_the_root_keys_is_an_error():
    raw = cfg({"keys": [{"key": "k"}]}, {"roles": ["a"]})
    raw["extra_config"] = {}
    assert_problem(errors_of(raw), E0, ["expected the keys it checks in the root"])


def test_the_root_block_alone_protects_nothing_and_is_no_error():
    raw = cfg({"keys": [{"key": "k"}]}, {})
    raw["endpoints"][0]["extra_config"] = {}
    assert compile_config(raw).route_list[0].checks == ()

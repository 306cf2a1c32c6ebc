"""What `fastproxy check` tells a migrating user (SPEC §1): fail closed on the guards fastproxy
does not implement, "did you mean" for misspelt names, flexible-configuration templates, the
behaviour that differs from KrakenD summarised once per kind, and values out of any sane range.

Each case is asserted on its exact JSON path and on the words of its message.
"""

import json

import pytest

from fastproxy.config.compile import compile_config, load
from fastproxy.config.load import ConfigError
from tests.configutil import assert_problem, errors_of

HOST = "http://127.0.0.1:8081"


def cfg(*endpoints: dict, **root) -> dict:
    return {"version": 3, "host": [HOST], "output_encoding": "no-op", "endpoints": list(endpoints), **root}


def ep(path: str = "/a", method: str = "GET", extra: dict = None, backend_extra: dict = None, **kw) -> dict:
    backend = {"url_pattern": "/x"}
    if backend_extra is not None:
        backend["extra_config"] = backend_extra
    return {"endpoint": path, "method": method, "backend": [backend], "extra_config": extra or {}, **kw}


def settings(**kw) -> dict:
    return {"fastproxy": kw}


def warnings_of(raw) -> list:
    return list(compile_config(raw).warnings)


def at(items: list, path: str) -> list:
    return [p for p in items if p.startswith(path + ": ")]


# ---------------------------------------------------------------------------------------------
# Fail closed: a guard fastproxy does not implement is an error naming the endpoint it would
# leave unprotected, and `ignore_unsupported` turns exactly that one into a warning.

E0 = "$.endpoints[0].extra_config"
B0 = "$.endpoints[0].backend[0].extra_config"

# (namespace as written, the level it stands at, its block, the name ignore_unsupported takes)
GUARDS = [
    ("auth/basic", "endpoint", {"htpasswd_path": "/etc/htpasswd"}, "auth/basic"),
    ("auth/basic", "service", {"htpasswd_path": "/etc/htpasswd"}, "auth/basic"),
    ("auth/revoker", "service", {"N": 1000, "P": 0.01, "hash_name": "optimal", "TTL": 1500}, "auth/revoker"),
    ("auth/client-credentials", "backend", {"client_id": "a", "client_secret": "b"}, "auth/client-credentials"),
    ("auth/gcp", "backend", {"audience": "x"}, "auth/gcp"),
    ("auth/ntlm", "backend", {"user": "u", "password": "p"}, "auth/ntlm"),
    ("security/policies", "endpoint", {"req": {"policies": ["false"]}}, "security/policies"),
    ("security/policies", "backend", {"req": {"policies": ["false"]}}, "security/policies"),
    ("security/http", "service", {"allowed_hosts": ["api.example.com"]}, "security/http"),
    ("validation/cel", "endpoint", [{"check_expr": "'x' in req_headers"}], "validation/cel"),
    ("validation/cel", "backend", [{"check_expr": "true"}], "validation/cel"),
    ("validation/json-schema", "endpoint", {"type": "object", "required": ["id"]}, "validation/json-schema"),
    ("modifier/martian", "backend", {"header.Modifier": {"scope": ["request"], "name": "Authorization",
                                                          "value": "Basic c2VjcmV0"}}, "modifier/martian"),
    ("modifier/lua-proxy", "endpoint", {"sources": ["a.lua"], "pre": "check()"}, "modifier/lua-proxy"),
    ("modifier/lua-endpoint", "endpoint", {"sources": ["a.lua"], "pre": "check()"}, "modifier/lua-endpoint"),
    ("modifier/lua-backend", "backend", {"sources": ["a.lua"], "pre": "check()"}, "modifier/lua-backend"),
    ("modifier/request-body-generator", "endpoint", {"template": "e30="}, "modifier/request-body-generator"),
    ("plugin/middleware", "endpoint", {"name": ["my-middleware"]}, "plugin/middleware"),
    ("plugin/middleware", "service", {"name": ["my-middleware"]}, "plugin/middleware"),
    ("plugin/req-resp-modifier", "endpoint", {"name": ["my-modifier"]}, "plugin/req-resp-modifier"),
    ("plugin/http-client", "backend", {"name": "my-client"}, "plugin/http-client"),
    ("plugin/http-server", "service", {"name": ["my-auth-plugin"]}, "plugin/http-server"),
    ("governance/quota", "endpoint", {"quota_name": "q", "tier_key": "X-Tier"}, "governance/quota"),
    ("governance/processors", "service", {"quotas": []}, "governance/processors"),
    ("qos/ratelimit/proxy/redis", "backend", {"max_rate": 1, "connection_name": "main"}, "qos/ratelimit/proxy/redis"),
    # KrakenD 1.x names: refused as their 2.x names, and accepted by either name
    ("github.com/devopsfaith/krakend-martian", "backend", {"header.Modifier": {}}, "modifier/martian"),
    ("github.com/devopsfaith/krakend-lua/router", "endpoint", {"pre": "x()"}, "modifier/lua-endpoint"),
    ("github.com/devopsfaith/krakend-cel", "endpoint", [{"check_expr": "true"}], "validation/cel"),
    ("github_com/devopsfaith/bloomfilter", "service", {"N": 1000, "P": 0.01, "TTL": 1500}, "auth/revoker"),
    ("github.com/devopsfaith/krakend/transport/http/client/executor", "backend",
     {"name": "middleware", "roles": [1, 2]}, "plugin/http-client"),
    # the 1.x name of plugin/http-server: none of its plugins is read there, ip-filter included
    ("github_com/devopsfaith/krakend/transport/http/server/handler", "service", {"name": ["ip-filter"]},
     "plugin/http-server"),
    ("github.com/devopsfaith/krakend-oauth2-clientcredentials", "backend", {"client_id": "a"},
     "auth/client-credentials"),
    ("github_com/devopsfaith/krakend-ipfilter", "service", {"deny": ["1.2.3.4"]},
     "github_com/devopsfaith/krakend-ipfilter"),
]


def guarded(ns: str, level: str, block, **root) -> dict:
    others = ep("/public", "GET")
    if level == "service":
        return cfg(ep("/private", "DELETE"), others, extra_config={ns: block, **root.pop("extra", {})}, **root)
    if level == "endpoint":
        return cfg(ep("/private", "DELETE", extra={ns: block}), others, extra_config=root.pop("extra", {}), **root)
    return cfg(ep("/private", "DELETE", backend_extra={ns: block}), others, extra_config=root.pop("extra", {}),
               **root)


def guard_path(ns: str, level: str) -> str:
    return {"service": "$.extra_config", "endpoint": E0, "backend": B0}[level] + f'["{ns}"]'


@pytest.mark.parametrize("ns,level,block,name", GUARDS, ids=[f"{g[0]}@{g[1]}" for g in GUARDS])
def test_a_guard_fastproxy_does_not_implement_is_an_error_naming_the_endpoints_it_leaves_open(ns, level, block, name):
    problems = errors_of(guarded(ns, level, block))
    mine = at(problems, guard_path(ns, level))
    assert len(mine) == 1, problems
    msg = mine[0]
    assert f"`{ns}`" in msg and "is not implemented by fastproxy" in msg and "(fail closed)" in msg
    assert "DELETE /private without it" in msg or "every endpoint without it (2: DELETE /private, GET /public)" in msg
    if level != "service":
        assert "GET /public" not in msg  # only the endpoint it guards is named
    assert f'"ignore_unsupported": ["{name}"]' in msg


@pytest.mark.parametrize("ns,level,block,name", GUARDS, ids=[f"{g[0]}@{g[1]}" for g in GUARDS])
def test_ignore_unsupported_turns_exactly_that_guard_into_a_warning(ns, level, block, name):
    snap = compile_config(guarded(ns, level, block, extra=settings(ignore_unsupported=[name])))
    mine = at(snap.warnings, guard_path(ns, level))
    assert len(mine) == 1, snap.warnings
    assert "ignore_unsupported accepts serving" in mine[0]
    assert len(snap.route_list) == 2


def test_ignoring_one_guard_leaves_the_others_errors():
    raw = cfg(ep("/a", extra={"auth/basic": {}, "validation/cel": []}),
              extra_config=settings(ignore_unsupported=["auth/basic"]))
    problems = errors_of(raw)
    assert at(problems, f'{E0}["validation/cel"]')
    assert not at(problems, f'{E0}["auth/basic"]')


def test_the_implemented_http_server_plugins_are_not_guards_but_the_others_are():
    snap = compile_config(cfg(ep("/a"), extra_config={"plugin/http-server": {
        "name": ["ip-filter"], "ip-filter": {"CIDR": ["10.0.0.0/8"], "allow": False}}}))
    assert len(snap.route_list) == 1
    problems = errors_of(cfg(ep("/a"), extra_config={"plugin/http-server": {
        "name": ["ip-filter", "url-rewrite"], "ip-filter": {"CIDR": ["10.0.0.0/8"]}}}))
    assert_problem(problems, '$.extra_config["plugin/http-server"]', ["'url-rewrite'", "every endpoint without it"])


def test_a_signer_is_a_guard_only_when_a_validator_depends_on_it():
    signer = {"alg": "HS256", "kid": "k", "keys_to_sign": ["access_token"]}
    alone = compile_config(cfg(ep("/token", "POST", extra={"auth/signer": signer})))
    assert_problem(alone.warnings, f'{E0}["auth/signer"]', ["token signing is not implemented", "unsigned"])
    jwt = {"alg": "RS256", "jwk_url": "https://idp.example/jwks"}
    both = cfg(ep("/token", "POST", extra={"auth/signer": signer}), ep("/me", extra={"auth/validator": jwt}))
    problems = errors_of(both)
    assert_problem(problems, f'{E0}["auth/signer"]', ["POST /token without it", "(fail closed)"])
    assert not at(problems, '$.endpoints[1].extra_config["auth/validator"]')  # implemented: not a guard


def test_guards_of_an_endpoint_with_other_errors_are_still_reported():
    raw = cfg(ep("/a", extra={"auth/basic": {}}, timeout="soon"))
    problems = errors_of(raw)
    assert at(problems, "$.endpoints[0].timeout")
    assert at(problems, f'{E0}["auth/basic"]')


def test_an_ignore_unsupported_entry_the_file_does_not_use_is_a_warning_with_a_hint():
    snap = compile_config(cfg(ep("/a"), extra_config=settings(ignore_unsupported=["auth/basik"])))
    assert_problem(snap.warnings, '$.extra_config["fastproxy"].ignore_unsupported[0]',
                   ["'auth/basik' is listed but no block of the file uses it", "did you mean `auth/basic`?"])


def test_the_migrated_config_that_served_private_decks_unauthenticated_is_now_enforced(tmp_path):
    # the shape of the real config that was once served without its tokens checked: each private
    # endpoint now runs a validator (tests/integration/test_jwt.py shows the 401s)
    from fastproxy.auth.validator import ValidatorPolicy

    jwt = {"alg": "RS256", "jwk_url": "https://auth.example/.well-known/jwks.json", "cache": True}
    endpoints = [ep(f"/api/v3/private/decks{s}", m, extra={"auth/validator": jwt})
                 for s, m in (("", "GET"), ("/{id}", "GET"), ("/{id}", "DELETE"))]
    endpoints.append(ep("/api/v3/public/cards"))
    path = tmp_path / "krakend.json"
    path.write_text(json.dumps(cfg(*endpoints), indent=2))
    snap = load(str(path))
    guarded = {(r.method, r.name): [c for c in r.checks if isinstance(c, ValidatorPolicy)] for r in snap.route_list}
    assert {k for k, v in guarded.items() if v} == {("GET", "/api/v3/private/decks"),
                                                   ("GET", "/api/v3/private/decks/{id}"),
                                                   ("DELETE", "/api/v3/private/decks/{id}")}
    (policy,) = guarded[("GET", "/api/v3/private/decks")]
    assert policy.source is not None and policy.source.url.geturl() == jwt["jwk_url"]
    assert policy.source.refresh == 900.0


# ---------------------------------------------------------------------------------------------
# Misspelt and misplaced names: an error where the control they name would be off

NAME_ERRORS = [
    ("misspelt endpoint limit", cfg(ep("/a", extra={"qos/ratelimit/routr": {"max_rate": 1}})),
     f'{E0}["qos/ratelimit/routr"]', ["unknown namespace", "did you mean `qos/ratelimit/router`?"]),
    ("misspelt ip filter", cfg(ep("/a", extra={"security/ip-filtre": {"CIDR": ["1.2.3.4"]}})),
     f'{E0}["security/ip-filtre"]', ["did you mean `security/ip-filter`?"]),
    ("misspelt breaker", cfg(ep("/a", backend_extra={"qos/circuit-breakr": {"max_errors": 1}})),
     f'{B0}["qos/circuit-breakr"]', ["did you mean `qos/circuit-breaker`?"]),
    ("misspelt guard", cfg(ep("/a", extra={"auth/validater": {}})),
     f'{E0}["auth/validater"]', ["did you mean `auth/validator`?"]),
    ("misspelt router block", cfg(ep("/a"), extra_config={"routr": {"trusted_proxies": ["10.0.0.0/8"]}}),
     '$.extra_config["routr"]', ["did you mean `router`?"]),
    ("unknown name in a guarding family", cfg(ep("/a", extra={"security/anti-scraper": {}})),
     f'{E0}["security/anti-scraper"]', ["a family that guards access", '"ignore_unsupported": ["security/anti-scraper"]']),
    ("endpoint limit at the root", cfg(ep("/a"), extra_config={"qos/ratelimit/router": {"max_rate": 1}}),
     '$.extra_config["qos/ratelimit/router"]', ["is read on endpoints, not at the root", "controls nothing"]),
    ("breaker on an endpoint", cfg(ep("/a", extra={"qos/circuit-breaker": {"max_errors": 1}})),
     f'{E0}["qos/circuit-breaker"]', ["is read on backends, not on endpoints"]),
    ("misspelt field of a limit", cfg(ep("/a", extra={"qos/ratelimit/router": {"max_rate": 5, "clinet_max_rate": 1}})),
     f'{E0}["qos/ratelimit/router"].clinet_max_rate', ["did you mean `client_max_rate`?"]),
    ("misspelt field of a backend limit", cfg(ep("/a", backend_extra={"qos/ratelimit/proxy": {"max_rat": 5}})),
     f'{B0}["qos/ratelimit/proxy"].max_rat', ["did you mean `max_rate`?"]),
    ("misspelt field of a breaker", cfg(ep("/a", backend_extra={"qos/circuit-breaker": {"max_error": 1}})),
     f'{B0}["qos/circuit-breaker"].max_error', ["did you mean `max_errors`?"]),
    ("misspelt field of a bot detector", cfg(ep("/a", extra={"security/bot-detector": {"paterns": ["x"]}})),
     f'{E0}["security/bot-detector"].paterns', ["did you mean `patterns`?"]),
    ("misspelt field of an ip filter", cfg(ep("/a", extra={"security/ip-filter": {"CIDRs": ["1.2.3.4"]}})),
     f'{E0}["security/ip-filter"].CIDRs', ["did you mean `CIDR`?"]),
    ("misspelt fastproxy setting", cfg(ep("/a"), extra_config=settings(max_conections=5)),
     '$.extra_config["fastproxy"].max_conections', ["unknown setting (did you mean `max_connections`?)"]),
    ("KrakenD policy tiers", cfg(ep("/a", extra={"qos/ratelimit/tiered": {"tier_key": "X-Tier", "tiers": [
        {"tier_value": "x", "tier_value_as": "policy", "ratelimit": {"max_rate": 1}}]}})),
     f'{E0}["qos/ratelimit/tiered"].tiers[0].tier_value_as', ["KrakenD's 'policy' matcher", "not implemented"]),
    ("JWT placeholder without a validator", cfg({"endpoint": "/me", "backend": [{"url_pattern": "/users/{JWT.sub}"}]}),
     "$.endpoints[0].backend[0].url_pattern", ["{JWT.sub} is KrakenD's placeholder for a claim of the validated token",
                                               "this endpoint has no auth/validator"]),
    ("sequential proxy placeholder", cfg({"endpoint": "/a", "backend": [{"url_pattern": "/b/{resp0_id}"}]}),
     "$.endpoints[0].backend[0].url_pattern", ["{resp0_id}", "sequential proxy"]),
    ("DNS SRV discovery", cfg({"endpoint": "/a", "backend": [{"url_pattern": "/a", "sd": "dns",
                                                              "host": ["users.service.consul"]}]}),
     "$.endpoints[0].backend[0].sd", ["DNS SRV service discovery is not implemented"]),
    ("a validator on a backend", cfg(ep("/a", backend_extra={"auth/validator": {"alg": "RS256"}})),
     f'{B0}["auth/validator"]', ["is read at the root (service level) and on endpoints, not on backends",
                                  "protects nothing"]),
    ("martian on an endpoint", cfg(ep("/a", extra={"modifier/martian": {}})),
     f'{E0}["modifier/martian"]', ["is read on backends, not on endpoints"]),
    ("a Lambda backend", cfg(ep("/a", backend_extra={"backend/lambda": {"function_name": "f"}})),
     f'{B0}["backend/lambda"]', ["this backend is an AWS Lambda function", "HTTP backends only",
                                 "would send GET /a's requests as plain HTTP to its host",
                                 '"ignore_unsupported": ["backend/lambda"]']),
    ("a 1.x AMQP backend", cfg(ep("/a", backend_extra={"github.com/devopsfaith/krakend-amqp/produce": {}})),
     f'{B0}["github.com/devopsfaith/krakend-amqp/produce"]', ["this backend is an AMQP producer"]),
    ("a declared health endpoint", cfg(ep("/__health")),
     "$.endpoints[0].endpoint", ["'/__health' is reserved"]),
    ("admin on the main port", cfg(ep("/a"), port=8080, extra_config=settings(admin={"port": 8080})),
     '$.extra_config["fastproxy"].admin.port', ["a port other than the main port 8080"]),
    ("allow and deny countries", cfg(ep("/a", extra={"security/geofence": {
        "db_path": "/nonexistent.mmdb", "allow_countries": ["ES"], "deny_countries": ["FR"]}})),
     f'{E0}["security/geofence"]', ["allow_countries or deny_countries, found both"]),
    ("absurd worker count", cfg(ep("/a"), extra_config=settings(workers=100000)),
     '$.extra_config["fastproxy"].workers', ["at most 512", "found 100000"]),
    ("a timeout of years", cfg(ep("/a", timeout="87600h")),
     "$.endpoints[0].timeout", ["at most 24h", "'87600h'"]),
    ("an idle timeout of years", cfg(ep("/a"), idle_timeout="8760h"),
     "$.idle_timeout", ["at most 24h"]),
    ("a limit window of years", cfg(ep("/a", extra={"qos/ratelimit/router": {"max_rate": 1, "every": "8760h"}})),
     f'{E0}["qos/ratelimit/router"].every', ["at most 31 days"]),
    ("a breaker timeout of years", cfg(ep("/a", backend_extra={"qos/circuit-breaker": {"timeout": 10 ** 8}})),
     f'{B0}["qos/circuit-breaker"].timeout', ["at most 86400 seconds"]),
    ("template left in a value", cfg(ep("/a"), host=['{{ env "BACKEND" }}']),
     "$.host[0]", ["KrakenD flexible-configuration template", "render the template first"]),
    ("template left in a namespace", cfg(ep("/a"), extra_config=settings(drain_timeout="{{ .drain }}")),
     '$.extra_config["fastproxy"].drain_timeout', ["KrakenD flexible-configuration template"]),
]


@pytest.mark.parametrize("raw,path,words", [c[1:] for c in NAME_ERRORS], ids=[c[0] for c in NAME_ERRORS])
def test_check_refuses_what_would_silently_turn_a_control_off(raw, path, words):
    assert_problem(errors_of(raw), path, words)


def test_every_bad_item_of_a_list_is_reported_with_its_index():
    raw = cfg(ep("/a", extra={
        "security/ip-filter": {"CIDR": ["10.0.0.0/8", "bad", "10.0.0.0/33", "::1"]},
        "security/bot-detector": {"patterns": ["ok", "a(", "(?P<x"]},
        "security/geofence": {"db_path": "/nonexistent.mmdb", "deny_countries": ["ES", "Spain", "F"]},
    }), extra_config={"router": {"trusted_proxies": ["1.2.3.4", "nope", "300.1.1.1"]}})
    problems = errors_of(raw)
    f = f'{E0}["security/ip-filter"].CIDR'
    assert [p.split(":")[0] for p in problems if p.startswith(f)] == [f"{f}[1]", f"{f}[2]"]
    b = f'{E0}["security/bot-detector"].patterns'
    assert [p.split(":")[0] for p in problems if p.startswith(b)] == [f"{b}[1]", f"{b}[2]"]
    g = f'{E0}["security/geofence"].deny_countries'
    assert [p.split(":")[0] for p in problems if p.startswith(g)] == [f"{g}[1]", f"{g}[2]"]
    t = '$.extra_config["router"].trusted_proxies'
    assert [p.split(":")[0] for p in problems if p.startswith(t)] == [f"{t}[1]", f"{t}[2]"]


# ---------------------------------------------------------------------------------------------
# Warnings: what differs from KrakenD, once per kind with the endpoints it affects

def test_endpoints_relying_on_the_default_json_encoding_are_named_in_one_warning():
    raw = cfg(ep("/a"), ep("/b", "POST"), ep("/c", output_encoding="no-op"), ep("/d", output_encoding="json"))
    del raw["output_encoding"]
    mine = [w for w in warnings_of(raw) if "output_encoding 'json'" in w]
    assert len(mine) == 1, mine
    assert mine[0].startswith("$.endpoints[0]: output_encoding 'json' (KrakenD's default) is not implemented")
    assert mine[0].endswith("; 3 endpoints: GET /a, POST /b, GET /d")


def test_a_root_no_op_encoding_covers_every_endpoint():
    assert warnings_of(cfg(ep("/a"), ep("/b"))) == []


def test_krakend_defaults_written_out_are_not_reported():
    raw = cfg(ep("/a", backend_extra={}, output_encoding="no-op"))
    raw["endpoints"][0]["backend"][0].update(sd="static", disable_host_sanitize=False, encoding="json")
    assert warnings_of(raw) == []  # behind a no-op endpoint lura forces the backend to no-op too


def test_a_misspelt_output_encoding_gets_a_hint():
    (w,) = warnings_of(cfg(ep("/a", output_encoding="no_op")))
    assert "unknown output_encoding 'no_op' (did you mean `no-op`?)" in w


def test_an_accepted_backend_kind_is_a_warning():
    snap = compile_config(cfg(ep("/a", backend_extra={"backend/graphql": {"type": "query"}}),
                              extra_config=settings(ignore_unsupported=["backend/graphql"])))
    assert_problem(snap.warnings, f'{B0}["backend/graphql"]', ["ignore_unsupported accepts sending GET /a's requests"])


def test_an_ignored_field_on_many_endpoints_is_one_warning_naming_them():
    raw = cfg(*[ep(f"/e{i}", concurrent_calls=2) for i in range(5)])
    mine = [w for w in warnings_of(raw) if "concurrent_calls" in w]
    assert mine == ["$.endpoints[0].concurrent_calls: recognised KrakenD field, not implemented by fastproxy: "
                    "ignored; 5 endpoints: GET /e0, GET /e1, GET /e2, GET /e3, GET /e4"]


def test_backends_calling_krakend_debug_or_echo_endpoints_are_summarised():
    raw = cfg({"endpoint": "/a", "backend": [{"url_pattern": "/__debug/a"}]},
              {"endpoint": "/b", "backend": [{"url_pattern": "/__echo/b"}]})
    mine = [w for w in warnings_of(raw) if "__debug" in w]
    assert len(mine) == 1
    assert mine[0].startswith("$.endpoints[0].backend[0].url_pattern: calls KrakenD's own /__debug/ or /__echo/")
    assert mine[0].endswith("2 endpoints: GET /a, GET /b")


WARNINGS = [
    ("unknown root field close to a known one", cfg(ep("/a"), endpoint=[]),
     "$.endpoint", "unknown field: ignored (did you mean `endpoints`?)"),
    ("unknown endpoint field close to a known one", cfg(ep("/a", input_header=["X"])),
     "$.endpoints[0].input_header", "unknown field: ignored (did you mean `input_headers`?)"),
    ("unknown harmless namespace close to a known one", cfg(ep("/a"), extra_config={"telemetry/loging": {}}),
     '$.extra_config["telemetry/loging"]', "unknown namespace: ignored (did you mean `telemetry/logging`?)"),
    ("KrakenD 1.x querystring_params", cfg(ep("/a", querystring_params=["q"])),
     "$.endpoints[0].querystring_params", "KrakenD 1.x name of `input_query_strings`"),
]


@pytest.mark.parametrize("raw,path,words", [w[1:] for w in WARNINGS], ids=[w[0] for w in WARNINGS])
def test_check_warns_with_a_hint(raw, path, words):
    mine = at(warnings_of(raw), path)
    assert len(mine) == 1 and words in mine[0], warnings_of(raw)


def test_krakend_comments_pass_silently_everywhere():
    raw = cfg(ep("/a", extra={"@comment": "limits", "qos/ratelimit/router": {"max_rate": 1, "@comment": "1/s"}},
                 **{"@comment": "x"}),
              **{"$schema": "https://www.krakend.io/schema/v2.7/krakend.json", "@comment": "root", "_note": "n"})
    raw["endpoints"][0]["backend"][0]["#todo"] = "render {{ .x }} later"
    assert warnings_of(raw) == []


def test_a_file_with_errors_still_carries_every_warning():
    with pytest.raises(ConfigError) as exc:
        compile_config(cfg(ep("/a", concurrent_calls=2, extra={"auth/validator": {}}), cache_ttl="1s"))
    assert at(exc.value.warnings, "$.cache_ttl")
    assert at(exc.value.warnings, "$.endpoints[0].concurrent_calls")
    assert at(exc.value.problems, f'{E0}["auth/validator"]')


# ---------------------------------------------------------------------------------------------
# Positions: an error in a file says where its value stands

def test_an_out_of_range_number_gets_its_line_and_column(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{\n  "version": 3,\n  "output_encoding": "no-op",\n  "host": ["http://127.0.0.1:1"],\n'
                    '  "port": 99999,\n  "endpoints": [\n    {"endpoint": "/a", "backend": [{"url_pattern": "/a"}],\n'
                    '     "extra_config": {"qos/ratelimit/router": {"max_rate": -1}}}\n  ]\n}\n')
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    assert "$.port: expected a TCP port 0-65535, found 99999 (line 5, column 11)" in exc.value.problems
    assert_problem(exc.value.problems, '$.endpoints[0].extra_config["qos/ratelimit/router"].max_rate',
                   ["found -1", "(line 8, column 60)"])


def test_a_yaml_error_gets_its_line_and_column(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text("version: 3\nhost: [http://127.0.0.1:1]\nendpoints:\n  - endpoint: /a\n    timeout: 90000h\n"
                    "    backend:\n      - url_pattern: /a\n")
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    assert_problem(exc.value.problems, "$.endpoints[0].timeout", ["at most 24h", "(line 5, column 14)"])


def test_a_missing_field_points_at_the_object_that_lacks_it(tmp_path):
    path = tmp_path / "k.json"
    path.write_text('{"version": 3, "host": ["http://127.0.0.1:1"],\n "endpoints": [\n  {"endpoint": "/a"},\n'
                    '   {"endpoint": "/b"}]}')
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    assert_problem(exc.value.problems, "$.endpoints[1].backend", ["required", "(line 4, column 4)"])


@pytest.mark.parametrize("name,text", [
    ("k.json", '{\n  "version": 3,\n  "port": {{ .service.port }},\n  "endpoints": []\n}\n'),
    ("k.yaml", "version: 3\nport: {{ .service.port }}\nendpoints: []\n"),
])
def test_a_flexible_configuration_template_is_named_as_such(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    (problem,) = exc.value.problems
    assert problem.startswith(f"{path}: line ")
    assert "KrakenD flexible-configuration template" in problem and "render it first" in problem


# ---------------------------------------------------------------------------------------------
# The root `tls` block and the `router` block

def test_a_tls_block_is_read_not_waived_a_missing_file_is_an_error_naming_it():
    # the block is implemented (config/tls.py): it is never silently served as plain HTTP
    problems = errors_of(cfg(ep("/a"), tls={"public_key": "/nowhere/c.pem", "private_key": "/nowhere/k.pem"}))
    assert_problem(problems, "$.tls.public_key", ["cannot read the certificate '/nowhere/c.pem'"])
    assert_problem(problems, "$.tls.private_key", ["cannot read the private key '/nowhere/k.pem'"])


def test_a_disabled_tls_block_is_plain_http_as_in_krakend():
    assert warnings_of(cfg(ep("/a"), tls={"disabled": True, "public_key": "/c.pem"})) == []


def test_router_block_fields_are_checked_like_any_control():
    problems = errors_of(cfg(ep("/a"), extra_config={"router": {"trusted_proxie": ["10.0.0.0/8"]}}))
    assert_problem(problems, '$.extra_config["router"].trusted_proxie', ["did you mean `trusted_proxies`?"])
    snap = compile_config(cfg(ep("/a"), extra_config={"router": {"health_path": "/health", "colour": 1}}))
    assert_problem(snap.warnings, '$.extra_config["router"].health_path', ["recognised KrakenD field"])
    assert_problem(snap.warnings, '$.extra_config["router"].colour', ["unknown field: ignored"])


def test_krakend_max_payload_is_the_body_limit_unless_fastproxy_sets_its_own():
    assert compile_config(cfg(ep("/a"), extra_config={"router": {"max_payload": 4096}})).protocol.max_body_size == 4096
    both = compile_config(cfg(ep("/a"), extra_config={"router": {"max_payload": 4096}, **settings(max_body_size=100)}))
    assert both.protocol.max_body_size == 100
    assert compile_config(cfg(ep("/a"))).protocol.max_body_size == 10 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# What lura normalises is accepted, not refused

@pytest.mark.parametrize("backend,host,path", [
    ({"url_pattern": "users", "host": ["api.internal:8080"]}, "http://api.internal:8080", b"/users"),
    ({"url_pattern": "", "host": ["http://a:1"]}, "http://a:1", b"/"),
    ({"host": ["a:1"]}, "http://a:1", b"/"),
])
def test_hosts_without_a_scheme_and_paths_without_a_slash_are_normalised_as_lura_does(backend, host, path):
    snap = compile_config(cfg({"endpoint": "/x", "backend": [backend]}))
    (route,) = snap.route_list
    assert [t.key for t in route.targets] == [host]
    assert route.template == (path,)


def test_response_filtering_krakend_would_apply_is_named_with_the_fields_that_now_reach_the_client():
    raw = cfg({"endpoint": "/me", "output_encoding": "json",
               "backend": [{"url_pattern": "/me", "deny": ["password", "token"]}]})
    assert_problem(warnings_of(raw), "$.endpoints[0].backend[0].deny",
                   ["response filtering is not implemented", "what `deny` removes included (password, token)"])
    noop = cfg({"endpoint": "/me", "backend": [{"url_pattern": "/me", "deny": ["password"]}]})
    assert warnings_of(noop) == []  # behind a no-op endpoint KrakenD does not filter either


def test_summaries_name_ten_endpoints_and_count_the_rest():
    raw = cfg(*[ep(f"/e{i}", concurrent_calls=2) for i in range(14)])
    (w,) = [w for w in warnings_of(raw) if "concurrent_calls" in w]
    assert w.endswith("14 endpoints: GET /e0, GET /e1, GET /e2, GET /e3, GET /e4, GET /e5, GET /e6, GET /e7, "
                      "GET /e8, GET /e9 and 4 more")


def test_every_template_expression_of_a_file_is_one_error():
    raw = cfg(ep("/a"), ep("/b"), host=["{{ .host }}"], timeout="{{ .timeout }}")
    raw["endpoints"][1]["backend"][0]["host"] = ["{{ .b }}"]
    problems = errors_of(raw)
    (t,) = [p for p in problems if "template" in p]
    assert t.startswith("$.host[0]: found a KrakenD flexible-configuration template expression '{{ .host }}'; "
                        "2 more at $.endpoints[1].backend[0].host[0], $.timeout")
    assert not [p for p in problems if "scheme://" in p]  # no second error for the same value


def test_an_unset_strategy_on_many_endpoints_is_one_warning():
    limit = {"qos/ratelimit/router": {"client_max_rate": 1}}
    raw = cfg(ep("/a", extra=limit), ep("/b", extra=limit))
    (w,) = [w for w in warnings_of(raw) if "strategy" in w]
    assert w.endswith("2 endpoints: GET /a, GET /b")


def test_did_you_mean_suggests_the_names_krakend_2_reads():
    problems = errors_of(cfg(ep("/a", extra={"auth/validater": {}})))
    assert_problem(problems, f'{E0}["auth/validater"]', ["did you mean `auth/validator`?"])
    w = warnings_of(cfg(ep("/a"), extra_config={"telemetry/loging": {}}))
    assert any("did you mean `telemetry/logging`?" in x for x in w)


def test_a_1x_name_in_ignore_unsupported_accepts_the_2x_block_without_calling_itself_unused():
    snap = compile_config(cfg(ep("/a", extra={"validation/cel": []}), extra_config=settings(
        ignore_unsupported=["github.com/devopsfaith/krakend-cel"])))
    assert not at(snap.warnings, '$.extra_config["fastproxy"].ignore_unsupported[0]')
    assert at(snap.warnings, f'{E0}["validation/cel"]')


# ---------------------------------------------------------------------------------------------
# Found by review: misplaced controls that protect nothing, and files check must not crash on

@pytest.mark.parametrize("raw,path,words", [
    (cfg(ep("/a", extra={"plugin/http-server": {"name": ["ip-filter"], "ip-filter": {"CIDR": ["1.2.3.4"]}}})),
     f'{E0}["plugin/http-server"]', ["is read at the root (service level), not on endpoints", "protects nothing"]),
    (cfg(ep("/a", extra={"backend/grpc": {}})),
     f'{E0}["backend/grpc"]', ["is read on backends, not on endpoints"]),
    (cfg(ep("/a"), extra_config={"backend/lambda": {}}),
     '$.extra_config["backend/lambda"]', ["is read on backends, not at the root"]),
], ids=["http-server on an endpoint", "backend kind on an endpoint", "backend kind at the root"])
def test_a_control_placed_where_krakend_does_not_read_it_is_an_error(raw, path, words):
    assert_problem(errors_of(raw), path, words)


@pytest.mark.parametrize("raw", [
    {"version": 3, "host": [HOST], "endpoints": 5},
    cfg({"endpoint": "/a", "backend": True}),
    cfg({"endpoint": "/a", "backend": 3, "extra_config": {"auth/validator": {}}}),
    cfg(ep("/a"), extra_config={"plugin/http-server": {"name": None}}),
    cfg(ep("/a"), extra_config={"plugin/http-server": {"name": 5}}),
    cfg(ep("/a"), extra_config={"plugin/http-server": {"name": [["ip-filter"]]}}),
    cfg(ep("/a"), extra_config={"plugin/http-server": {"name": [{"a": 1}]}}),
    cfg(ep("/a"), output_encoding=["x"]),
    cfg(ep("/a"), tls=True),
], ids=["endpoints a number", "backend true", "backend a number", "plugin names null",
        "plugin names a number", "plugin name a list", "plugin name an object", "output_encoding a list",
        "tls true"])
def test_odd_types_are_refused_with_an_error_not_a_traceback(raw):
    assert errors_of(raw)


def test_a_file_refused_early_still_names_its_guards():
    raw = cfg(ep("/a", extra={"auth/basic": {}}))
    raw["version"] = "3"
    problems = errors_of(raw)
    assert at(problems, "$.version") and at(problems, f'{E0}["auth/basic"]')


def test_unreadable_propagate_claims_are_an_error_not_a_crash():
    problems = errors_of(cfg(ep("/a", extra={"auth/validator": {"jwk_url": "https://idp.example/jwks",
                                                                "propagate_claims": 5}}, input_headers=["*"])))
    assert_problem(problems, f'{E0}["auth/validator"].propagate_claims', ["expected array, found int"])


def test_a_key_of_the_wrong_type_is_named_as_a_key(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text("version: 3\nhost: [http://127.0.0.1:1]\noutput_encoding: no-op\nextra_config:\n  1: x\n"
                    "endpoints:\n  - endpoint: /a\n    backend:\n      - url_pattern: /a\n")
    with pytest.raises(ConfigError) as exc:
        load(str(path))
    assert "$.extra_config: expected str, found int as a key (line 5, column 3)" in exc.value.problems

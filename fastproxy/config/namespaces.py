"""What fastproxy knows of KrakenD's `extra_config` namespaces, and the fail-closed rule.

Owns the catalogue of namespace names fastproxy does not implement, split in two:
- GUARDS decide who may reach an endpoint or what the backend is sent on the client's behalf
  (authentication, request validation and modification, quotas). Running a file that has one
  would serve its endpoints without that control, so each occurrence is a configuration *error*
  naming the endpoints it would leave unprotected (SPEC §1, "Fail closed"), unless the operator
  accepts the loss by listing the namespace in the fastproxy setting `ignore_unsupported`.
- IGNORABLE guard nothing (telemetry, documentation, response shaping, other backend kinds):
  a warning each.
Also here: the families whose unknown or misspelt names are errors (`auth/`, `security/`,
`qos/`, `governance/`, `validation/`): a typo there turns a control silently off.

Pure data and functions on names; the compile step (`compile.py`, `policies/registry.py`) asks.
"""

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the collector imports this module: only its type is needed here
    from fastproxy.config.problems import Problems

# A namespace that guards access, with the words the error uses for what would be lost.
GUARDS: dict[str, str] = {
    "auth/basic": "basic authentication",
    "auth/revoker": "token revocation",
    "auth/client-credentials": "the OAuth2 client credentials the backend is called with",
    "auth/gcp": "the Google Cloud identity token the backend is called with",
    "auth/ntlm": "the NTLM authentication the backend is called with",
    "security/policies": "security policies",
    "security/http": "HTTP security checks (allowed hosts, HTTPS redirect, security headers)",
    "validation/cel": "CEL request validation",
    "validation/json-schema": "request body validation",
    "modifier/martian": "the request modification sent to the backend (headers, credentials, query)",
    "modifier/lua-proxy": "the Lua request/response scripts",
    "modifier/lua-endpoint": "the Lua request/response scripts",
    "modifier/lua-backend": "the Lua request/response scripts",
    "modifier/request-body-generator": "the request body generated for the backend",
    "modifier/body-generator": "the request body generated for the backend",
    "plugin/middleware": "the middleware plugins",
    "plugin/req-resp-modifier": "the request/response modifier plugins",
    "plugin/http-client": "the HTTP client plugins (what the backend is sent)",
    "governance/quota": "the quota",
    "governance/processors": "the quota processors",
    "qos/ratelimit/proxy/redis": "the backend rate limit shared through Redis",
    # KrakenD 1.x's IP filter has another shape than security/ip-filter: not read, so a guard
    "github_com/devopsfaith/krakend-ipfilter": "the IP filter in its KrakenD 1.x form (write it as security/ip-filter)",
    # auth/signer: a guard only when a validator checks what it signs (see `guards_in`)
    "auth/signer": "the token signing its validators depend on",
    # plugin/http-server: a guard for every plugin name fastproxy does not implement
    "plugin/http-server": "the http-server plugin",
}

# KrakenD 1.x names of the namespaces above.
GUARD_ALIASES: dict[str, str] = {
    "github.com/devopsfaith/krakend-jose/signer": "auth/signer",
    "github.com/devopsfaith/krakend-martian": "modifier/martian",
    "github.com/devopsfaith/krakend-lua/router": "modifier/lua-endpoint",
    "github.com/devopsfaith/krakend-lua/proxy": "modifier/lua-proxy",
    "github.com/devopsfaith/krakend-lua/proxy/backend": "modifier/lua-backend",
    "github.com/devopsfaith/krakend-cel": "validation/cel",
    "github.com/devopsfaith/krakend-jsonschema": "validation/json-schema",
    "github.com/devopsfaith/krakend-httpsecure": "security/http",
    "github_com/devopsfaith/krakend-httpsecure": "security/http",
    "github_com/devopsfaith/bloomfilter": "auth/revoker",
    "github.com/devopsfaith/krakend-oauth2-clientcredentials": "auth/client-credentials",
    "github.com/devopsfaith/krakend/transport/http/client/executor": "plugin/http-client",
    # plugin/http-server's 1.x name: fastproxy reads none of its plugins there, so all are guards
    "github_com/devopsfaith/krakend/transport/http/server/handler": "plugin/http-server",
}

# The names of `auth/validator` (implemented: policies/registry.py): an `auth/signer` is a guard
# when the file validates the tokens it would sign.
VALIDATOR_NAMES = frozenset({"auth/validator", "github.com/devopsfaith/krakend-jose/validator"})

# Where KrakenD reads a guard (the others: at every level). Elsewhere it protects nothing.
GUARD_LEVELS: dict[str, tuple[str, ...]] = {
    "auth/validator": ("service", "endpoint"), "auth/api-keys": ("service", "endpoint"),
    "auth/signer": ("endpoint",), "auth/revoker": ("service",), "plugin/http-server": ("service",),
    "auth/client-credentials": ("backend",), "auth/gcp": ("backend",), "auth/ntlm": ("backend",),
    "modifier/martian": ("backend",), "modifier/lua-backend": ("backend",), "plugin/http-client": ("backend",),
    "validation/json-schema": ("endpoint",), "qos/ratelimit/proxy/redis": ("backend",),
}
LEVEL_WORDS = {"service": "at the root (service level)", "endpoint": "on endpoints", "backend": "on backends"}

# Backends that are not HTTP servers taking the client's request: fastproxy would send that
# request, as plain HTTP, to a host that expects something else. A configuration error.
BACKEND_KINDS: dict[str, str] = {
    "backend/amqp/consumer": "an AMQP consumer", "backend/amqp/producer": "an AMQP producer",
    "backend/pubsub/publisher": "a Pub/Sub publisher", "backend/pubsub/subscriber": "a Pub/Sub subscriber",
    "backend/lambda": "an AWS Lambda function", "backend/grpc": "a gRPC service",
    "backend/graphql": "a GraphQL query built from the request", "backend/soap": "a SOAP request built from a template",
    "backend/static-filesystem": "files on the gateway's disk",
    "backend/conditional": "a backend chosen by a condition",
    "github.com/devopsfaith/krakend-lambda": "an AWS Lambda function",
    "github.com/devopsfaith/krakend-amqp/consume": "an AMQP consumer",
    "github.com/devopsfaith/krakend-amqp/produce": "an AMQP producer",
    "github.com/devopsfaith/krakend-pubsub/publisher": "a Pub/Sub publisher",
    "github.com/devopsfaith/krakend-pubsub/subscriber": "a Pub/Sub subscriber",
}

# Recognised, not implemented, and guarding nothing: ignored with a warning.
IGNORABLE = frozenset({
    "modifier/jmespath", "modifier/response-body-generator", "modifier/response-headers",
    "proxy", "websocket", "backend/http", "backend/http/client", "qos/http-cache",
    "validation/response-json-schema", "telemetry/logging", "telemetry/metrics",
    "telemetry/opencensus", "telemetry/opentelemetry", "telemetry/opentelemetry-security",
    "telemetry/influx", "telemetry/gelf", "telemetry/logstash", "telemetry/newrelic",
    "telemetry/moesif", "telemetry/ganalytics", "server/static-filesystem", "server/virtualhost",
    "grpc", "documentation/openapi", "documentation/mcp", "ai/llm", "ai/mcp",
    "github_com/devopsfaith/krakend-gologging", "github_com/devopsfaith/krakend-metrics",
    "github_com/devopsfaith/krakend-opencensus", "github_com/letgoapp/krakend-influx",
    "github_com/devopsfaith/krakend-logstash", "github.com/devopsfaith/krakend/proxy",
    "github.com/devopsfaith/krakend-httpcache",
})

# `plugin/http-server` plugins fastproxy implements (SPEC §3.11, §3.12).
HTTP_SERVER_PLUGINS = frozenset({"ip-filter", "geoip"})

# Families where an unknown name is an error: a misspelt name there is a control turned off.
CONTROL_FAMILIES = ("auth/", "security/", "qos/", "governance/", "validation/")


def canonical(name: str) -> str:
    return GUARD_ALIASES.get(name, name)


def is_comment(key: object) -> bool:
    """KrakenD's schema lets any key starting with @, $, _ or # stand anywhere: a comment."""
    return isinstance(key, str) and key[:1] in ("@", "$", "_", "#")


def is_control(name: str) -> bool:
    return name.startswith(CONTROL_FAMILIES) or canonical(name) in GUARDS


def refused(name: str) -> bool:
    """Whether `fail_closed` reports this namespace (compile_level then leaves it alone)."""
    return canonical(name) in GUARDS or name in BACKEND_KINDS


def closest(name: str, known: Iterable[str], cutoff: float = 0.8) -> Optional[str]:
    """The known name `name` most likely misspells, or None."""
    hits = difflib.get_close_matches(name, sorted(set(known)), n=1, cutoff=cutoff)
    return hits[0] if hits else None


LISTED = 10  # a message names this many endpoints, then counts the rest


def listing(items: list[str]) -> str:
    """`A, B, C`, or the first LISTED and `and N more`: a line stays readable at 140 endpoints."""
    if len(items) <= LISTED:
        return ", ".join(items)
    return f"{', '.join(items[:LISTED])} and {len(items) - LISTED} more"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    hit = closest(name, known)
    return f" (did you mean `{hit}`?)" if hit else ""


def http_server_guards(block: object) -> list[str]:
    """The names of a `plugin/http-server` block's plugins fastproxy does not implement."""
    names = block.get("name", []) if isinstance(block, dict) else []
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list):
        return [f"named by {names!r}"]  # unreadable: whatever it names is not enforced
    return [n if isinstance(n, str) else f"named by {n!r}" for n in names
            if not isinstance(n, str) or n not in HTTP_SERVER_PLUGINS]


def guards_in(extra: object, has_validator: bool) -> list[tuple[str, str, str]]:
    """The guards an `extra_config` block holds: (key as written, canonical name, what is lost).

    `auth/signer` counts only when the file also validates tokens (`has_validator`): it then
    signs what those validators check. `plugin/http-server` counts for the plugins fastproxy
    does not implement.
    """
    out: list[tuple[str, str, str]] = []
    if not isinstance(extra, dict):
        return out
    for key, block in extra.items():
        name = canonical(key)
        if name not in GUARDS:
            continue
        if name == "auth/signer" and not has_validator:
            continue
        if name == "plugin/http-server":
            if key != name:  # the 1.x name: fastproxy reads none of the plugins listed there
                out.append((key, name, "the http-server plugins it lists"))
                continue
            missing = http_server_guards(block)
            if missing:
                out.append((key, name, f"the http-server plugin{'s' if len(missing) > 1 else ''} "
                                       f"{', '.join(repr(m) for m in missing)}"))
            continue
        out.append((key, name, GUARDS[name]))
    return out


def has_validator(raw_root: dict[str, Any]) -> bool:
    """Whether any level of the file validates tokens (auth/validator or its 1.x name)."""
    def holds(extra: object) -> bool:
        return isinstance(extra, dict) and any(k in VALIDATOR_NAMES for k in extra)

    return any(holds(extra) for _, extra, _, _ in _extra_configs(raw_root))


def _extra_configs(raw_root: dict[str, Any]) -> list[tuple[str, object, Optional[int], str]]:
    """Every `extra_config` of the file: (JSON path, block, endpoint index or None for the root,
    level)."""
    out: list[tuple[str, object, Optional[int], str]] = [("$.extra_config", raw_root.get("extra_config"), None,
                                                          "service")]
    for i, ep in enumerate(_endpoints(raw_root)):
        if not isinstance(ep, dict):
            continue
        out.append((f"$.endpoints[{i}].extra_config", ep.get("extra_config"), i, "endpoint"))
        backends = ep.get("backend")
        for j, be in enumerate(backends if isinstance(backends, list) else []):
            if isinstance(be, dict):
                out.append((f"$.endpoints[{i}].backend[{j}].extra_config", be.get("extra_config"), i, "backend"))
    return out


def _endpoints(raw_root: dict[str, Any]) -> list[Any]:
    """The raw endpoint list, whatever the file holds there (its type is reported elsewhere)."""
    endpoints = raw_root.get("endpoints")
    return endpoints if isinstance(endpoints, list) else []


def endpoint_labels(raw_root: dict[str, Any]) -> list[str]:
    """`METHOD /path` of each endpoint of the file, as far as it can be read."""
    labels = []
    for ep in _endpoints(raw_root):
        ep = ep if isinstance(ep, dict) else {}
        method, path = ep.get("method", "GET"), ep.get("endpoint", "?")
        labels.append(f"{method.upper() if isinstance(method, str) and method else 'GET'} {path}")
    return labels


def fail_closed(raw_root: dict[str, Any], problems: "Problems", ignore: list[str], ignore_path: str) -> None:
    """Report every guard of the file (SPEC §1 "Fail closed"): an error naming the endpoints it
    would leave unprotected, or a warning where `ignore_unsupported` accepts the loss."""
    accepted = {canonical(n) for n in ignore} | set(ignore)
    labels = endpoint_labels(raw_root)
    every = f"every endpoint without it ({len(labels)}: {listing(labels)})"
    validator = has_validator(raw_root)
    present: set[str] = set()

    def report(where: str, key: str, name: str, what: str, would: str, accepts: str) -> None:
        if key in accepted or name in accepted:
            problems.warn(where, f"{what}; ignore_unsupported accepts {accepts}")
        else:
            problems.error(where, f"{what}: running this file would {would} (fail closed). Remove the "
                                  f'block, or accept the loss with "ignore_unsupported": ["{name}"] in '
                                  'extra_config["fastproxy"]')

    def unimplemented(key: str, lost: str) -> str:
        return f"`{key}` ({lost}) is not implemented by fastproxy"

    for path, extra, index, level in _extra_configs(raw_root):
        if not isinstance(extra, dict):
            continue
        present.update(extra)
        present.update(canonical(k) for k in extra)
        who = every if index is None else f"{labels[index]} without it"
        misplaced = set()
        for key in extra:
            name = canonical(key)
            read_at = ("backend",) if key in BACKEND_KINDS else GUARD_LEVELS.get(name, (level,))
            if level not in read_at:  # (plugin/http-server with implemented plugins only, too)
                misplaced.add(key)
                read = " and ".join(LEVEL_WORDS[lv] for lv in read_at)
                problems.error(f'{path}["{key}"]', f"`{key}` is read {read}, not {LEVEL_WORDS[level]}: placed here "
                                                   "it protects nothing (KrakenD ignores it here too); move it")
        for key, name, lost in guards_in(extra, validator):
            where = f'{path}["{key}"]'
            if key in misplaced:
                continue
            else:
                report(where, key, name, unimplemented(key, lost), f"serve {who}", f"serving {who}")
        if level == "backend" and index is not None:
            for key in extra:
                if key in BACKEND_KINDS:
                    sent = f"{labels[index]}'s requests as plain HTTP to its host"
                    report(f'{path}["{key}"]', key, key, f"this backend is {BACKEND_KINDS[key]} (`{key}`), and "
                           "fastproxy calls HTTP backends only", f"send {sent}", f"sending {sent}")
        for key in extra:
            if canonical(key) == "auth/signer" and not validator:
                problems.note("auth/signer", f'{path}["{key}"]', "token signing is not implemented by fastproxy: "
                              "the backend's response is returned unsigned", labels[index] if index is not None
                              else "every endpoint")
    for i, name in enumerate(ignore):
        if name not in present and canonical(name) not in present:
            known = [n for n in present if is_control(n)] + list(GUARDS)
            problems.warn(f"{ignore_path}[{i}]", f"{name!r} is listed but no block of the file uses it"
                                                 f"{did_you_mean(name, known)}")

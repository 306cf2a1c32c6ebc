"""The KrakenD `version: 3` configuration as msgspec structs, plus fastproxy's own settings.

These structs are the decoding targets only: values keep their file types (durations stay
strings) so that a type error points at the exact JSON path. `compile.py` turns them into the
runtime snapshot and checks meaning (durations, ranges, namespaces).

Unknown fields are accepted here and reported by `compile.py`: a migrating `krakend.json` is
full of fields fastproxy does not implement, and refusing them all would make migration
impossible; the ones that guard access are errors (`namespaces.py`), the others warnings.
"""

from typing import Any, Optional

import msgspec


class Backend(msgspec.Struct, frozen=True):
    url_pattern: str = "/"  # lura: an empty pattern is the backend's root
    host: list[str] = []
    method: Optional[str] = None
    encoding: Optional[str] = None
    extra_config: dict[str, Any] = {}


class Endpoint(msgspec.Struct, frozen=True):
    endpoint: str
    backend: list[Any]
    method: str = "GET"
    timeout: Optional[str] = None
    input_headers: Optional[list[str]] = None
    input_query_strings: Optional[list[str]] = None
    output_encoding: Optional[str] = None
    extra_config: dict[str, Any] = {}


class Root(msgspec.Struct, frozen=True):
    version: int
    port: int = 8080
    listen_ip: str = ""
    timeout: str = "2s"
    host: list[str] = []
    endpoints: list[Any] = []
    extra_config: dict[str, Any] = {}
    read_header_timeout: Optional[str] = None
    idle_timeout: Optional[str] = None
    dialer_timeout: Optional[str] = None
    response_header_timeout: Optional[str] = None
    max_idle_connections_per_host: int = 250


class TLSKey(msgspec.Struct, frozen=True):
    public_key: str
    private_key: str


class ServerTLS(msgspec.Struct, frozen=True):
    """Root `tls` (KrakenD service settings): the main port terminates TLS. `config/tls.py`
    reads it; a field not listed here is an error there (fail closed)."""

    public_key: Optional[str] = None  # KrakenD's older single-key form
    private_key: Optional[str] = None
    keys: list[TLSKey] = []
    disabled: bool = False
    min_version: Optional[str] = None  # default TLS13
    max_version: Optional[str] = None  # default TLS13
    cipher_suites: list[int] = []
    curve_preferences: list[int] = []
    prefer_server_cipher_suites: bool = False
    enable_mtls: bool = False
    ca_certs: list[str] = []
    disable_system_ca_pool: bool = False


class ClientCert(msgspec.Struct, frozen=True):
    certificate: str
    private_key: str


class ClientTLS(msgspec.Struct, frozen=True):
    """Root `client_tls`: how fastproxy connects to `https://` backends."""

    allow_insecure_connections: bool = False
    ca_certs: list[str] = []
    disable_system_ca_pool: bool = False
    client_certs: list[ClientCert] = []
    min_version: Optional[str] = None  # default TLS12
    max_version: Optional[str] = None  # default TLS13
    cipher_suites: list[int] = []
    curve_preferences: list[int] = []


class Admin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Admin listener: `/__health` and `/metrics`. Loopback by default; port 0 disables it."""

    listen_ip: str = "127.0.0.1"
    port: int = 0


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Root `extra_config["fastproxy"]`: fastproxy's own knobs, each with its default."""

    workers: int = 1
    admin: Admin = Admin()
    max_request_line: int = 8192
    max_header_size: int = 8192
    max_head_size: int = 32768
    max_headers: int = 100
    max_body_size: int = 10 * 1024 * 1024
    max_connections: int = 10000
    read_header_timeout: Optional[str] = None  # default: root read_header_timeout, else 10s
    idle_timeout: Optional[str] = None  # default: root idle_timeout, else 15s
    connect_timeout: Optional[str] = None  # default: root dialer_timeout, else 5s
    upstream_idle_timeout: str = "30s"  # how long a pooled backend connection may sit idle
    max_idle_per_host: Optional[int] = None  # default: root max_idle_connections_per_host
    drain_timeout: str = "30s"
    access_log: bool = False
    ratelimit_headers: bool = True
    tls_handshake_timeout: Optional[str] = None  # default: read_header_timeout (the head's)
    redis_timeout: str = "50ms"  # a Redis limit decision falls back to the local bucket after this
    # Namespaces that guard access and that fastproxy does not implement: each is an error
    # (fail closed) unless listed here, which turns it into a warning (the operator's choice).
    ignore_unsupported: list[str] = []


class RouterOptions(msgspec.Struct, frozen=True):
    """Root `extra_config["router"]`: the parts with a meaning here."""

    trusted_proxies: list[str] = []
    remote_ip_headers: list[str] = msgspec.field(default_factory=lambda: ["X-Forwarded-For", "X-Real-IP"])
    forwarded_by_client_ip: Optional[bool] = None
    return_error_msg: bool = False
    max_payload: int = 0  # KrakenD EE: the request body limit; the default of max_body_size here


# The other fields of KrakenD's `router` block: recognised, and without a meaning here.
IGNORED_ROUTER_FIELDS = frozenset({
    "app_engine", "auto_options", "decompress_gzip", "disable_access_log", "disable_gzip",
    "disable_handle_method_not_allowed", "disable_health", "disable_path_decoding",
    "disable_redirect_fixed_path", "disable_redirect_trailing_slash", "error_body", "health_path",
    "hide_version_header", "logger_skip_paths", "max_multipart_memory", "remove_extra_slash", "use_h2c",
})


# Root and endpoint fields KrakenD knows that fastproxy reads but does not act on. `check` lists
# them so a migrating user sees what is ignored.
IGNORED_ROOT_FIELDS = {
    "name", "cache_ttl", "output_encoding", "debug_endpoint", "echo_endpoint", "disable_rest",
    "read_timeout", "write_timeout", "max_header_bytes", "disable_keep_alives",
    "disable_compression", "max_idle_connections", "expect_continue_timeout",
    "plugin", "sequential_start", "allow_insecure_connections", "use_h2c",
    "dns_cache_ttl", "async_agent", "disable_strict_rest", "dialer_keep_alive",
    "dialer_fallback_delay", "idle_connection_timeout",
}
IGNORED_ENDPOINT_FIELDS = {"cache_ttl", "concurrent_calls", "output_encoding"}
IGNORED_BACKEND_FIELDS = {
    "encoding", "sd", "sd_scheme", "allow", "deny", "group", "target", "mapping",
    "is_collection", "disable_host_sanitize", "input_headers", "input_query_strings",
}

"""TLS on the main port and to https:// backends (SPEC §5), over real sockets on 127.0.0.1.

Every test starts fastproxy through the real CLI with certificates made by `trustme` at test
time; clients are Python's ssl. Waits are polls against a deadline, never fixed sleeps.
"""

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme
from cryptography import x509

from tests.integration.netutil import wait_for
from tests.support import ROOT, Proxy, Upstream, config, ep, free_port, get


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.stop()


def write_cert(ca, tmp_path, name: str, *hosts: str) -> dict:
    """A certificate for `hosts` signed by `ca`, as KrakenD's `keys` entry."""
    cert = ca.issue_cert(*hosts)
    pub, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(pub))
    cert.private_key_pem.write_to_path(str(key))
    return {"public_key": str(pub), "private_key": str(key)}


def tls_config(upstream, keys: list, **tls) -> dict:
    return config(upstream, [ep("/echo"), ep("/a")], tls={"keys": keys, **tls},
                  extra_config={"fastproxy": {"read_header_timeout": "2s"}})


def client_context(ca, maximum=None, minimum=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if maximum is not None:
        ctx.maximum_version = maximum
    if minimum is not None:
        ctx.minimum_version = minimum
    return ctx


def https(port: int, ctx: ssl.SSLContext, host: str = "localhost") -> http.client.HTTPSConnection:
    """A keep-alive client connection; `host` is the SNI name (and the name verified)."""
    c = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
    # connect to 127.0.0.1 whatever the name: the SNI name need not resolve
    c._create_connection = lambda addr, timeout=None, source_address=None: socket.create_connection(  # type: ignore
        ("127.0.0.1", port), timeout)
    return c


def request(c: http.client.HTTPSConnection, path: str = "/a") -> tuple:
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def served_names(c: http.client.HTTPSConnection) -> list:
    der = c.sock.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


@pytest.fixture
def proxies():
    started: list = []
    yield started
    for p in started:
        p.stop()


def start(proxies, cfg: dict, tmp_path) -> Proxy:
    p = Proxy(cfg, tmp_path)
    proxies.append(p)
    assert p.ready_line.startswith("fastproxy ready: listening on https://"), p.ready_line
    return p


# -- versions ---------------------------------------------------------------------------------------
def test_default_is_tls13_only_a_tls12_client_is_refused(ca, upstream, tmp_path, proxies):
    p = start(proxies, tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")]), tmp_path)
    c = https(p.port, client_context(ca))
    assert request(c) == (200, b"ok")
    assert c.sock.version() == "TLSv1.3"
    assert c.sock.selected_alpn_protocol() is None  # http.client offers no ALPN; the server imposes none
    old = https(p.port, client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))
    with pytest.raises(ssl.SSLError):
        request(old)


def test_min_version_tls12_accepts_a_tls12_client(ca, upstream, tmp_path, proxies):
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")], min_version="TLS12")
    p = start(proxies, cfg, tmp_path)
    c = https(p.port, client_context(ca, maximum=ssl.TLSVersion.TLSv1_2))
    assert request(c) == (200, b"ok")
    assert c.sock.version() == "TLSv1.2"


def test_the_port_speaks_tls_only_and_alpn_offers_http11(ca, upstream, tmp_path, proxies):
    p = start(proxies, tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")]), tmp_path)
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"HTTP/1.1" not in s.recv(4096)  # a plain request is not answered
    ctx = client_context(ca)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", p.port), timeout=5), server_hostname="localhost") as t:
        assert t.selected_alpn_protocol() == "http/1.1"


# -- what the backend sees ------------------------------------------------------------------------------
def test_the_backend_sees_x_forwarded_proto_https_and_the_admin_listener_stays_plain(ca, upstream, tmp_path,
                                                                                     proxies):
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")])
    admin_port = free_port()
    cfg["extra_config"]["fastproxy"]["admin"] = {"port": admin_port}
    p = start(proxies, cfg, tmp_path)
    status, _, body = get(admin_port, "/__health")  # plain HTTP on loopback
    assert status == 200 and b'"ok"' in body
    c = https(p.port, client_context(ca))
    c.request("GET", "/echo", headers={"X-Forwarded-Proto": "http"})  # a client's own is not passed on
    r = c.getresponse()
    seen = json.loads(r.read())
    assert r.status == 200
    protos = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-proto"]
    assert protos == ["https"]


# -- SNI --------------------------------------------------------------------------------------------
def test_sni_chooses_the_key_whose_certificate_names_the_host(ca, upstream, tmp_path, proxies):
    first = write_cert(ca, tmp_path, "first", "first.test")
    second = write_cert(ca, tmp_path, "second", "*.second.test", "second.test")
    p = start(proxies, tls_config(upstream, [first, second]), tmp_path)
    ctx = client_context(ca)
    for host, names in [("first.test", ["first.test"]), ("api.second.test", ["*.second.test", "second.test"]),
                        ("second.test", ["*.second.test", "second.test"])]:
        c = https(p.port, ctx, host)
        assert request(c) == (200, b"ok"), host
        assert served_names(c) == names, host
        c.close()
    # a name no certificate has (or no SNI at all) gets the first key
    loose = client_context(ca)
    loose.check_hostname = False
    for host in ("other.test", "127.0.0.1"):
        c = https(p.port, loose, host)
        assert request(c) == (200, b"ok")
        assert served_names(c) == ["first.test"], host
        c.close()


# -- mTLS --------------------------------------------------------------------------------------------
def test_mtls_requires_and_verifies_a_client_certificate(ca, upstream, tmp_path, proxies):
    clients = trustme.CA()
    (tmp_path / "clients-ca.pem").write_bytes(clients.cert_pem.bytes())
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")], enable_mtls=True,
                     ca_certs=[str(tmp_path / "clients-ca.pem")], disable_system_ca_pool=True)
    p = start(proxies, cfg, tmp_path)
    with_cert = client_context(ca)
    clients.issue_cert("client@example.test").configure_cert(with_cert)
    c = https(p.port, with_cert)
    assert request(c) == (200, b"ok")
    # TLS 1.3: the server's refusal arrives after the client's side of the handshake
    for ctx in (client_context(ca), _signed_by_another_ca(ca)):
        c = https(p.port, ctx)
        with pytest.raises((ssl.SSLError, ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError)):
            request(c)
    assert len(upstream.requests) == 1


def _signed_by_another_ca(ca) -> ssl.SSLContext:
    ctx = client_context(ca)
    trustme.CA().issue_cert("intruder@example.test").configure_cert(ctx)
    return ctx


# -- the handshake timeout --------------------------------------------------------------------------------
def test_a_stalled_handshake_is_closed_at_its_timeout_and_blocks_nobody(ca, upstream, tmp_path, proxies):
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")])
    cfg["extra_config"]["fastproxy"]["tls_handshake_timeout"] = "700ms"
    p = start(proxies, cfg, tmp_path)
    stalled = socket.create_connection(("127.0.0.1", p.port), timeout=5)  # connects, sends nothing
    opened = time.monotonic()
    c = https(p.port, client_context(ca))
    assert request(c) == (200, b"ok")  # served while the other handshake waits
    assert time.monotonic() - opened < 0.7
    try:
        assert stalled.recv(1) == b""
    except ConnectionResetError:
        pass
    waited = time.monotonic() - opened
    assert 0.6 < waited < 3.0, waited
    stalled.close()
    assert request(c) == (200, b"ok")


# -- rotation ---------------------------------------------------------------------------------------------
def test_sighup_rotates_the_certificate_and_open_connections_keep_serving(ca, upstream, tmp_path, proxies):
    key = write_cert(ca, tmp_path, "live", "localhost", "old.test")
    p = start(proxies, tls_config(upstream, [key]), tmp_path)
    ctx = client_context(ca)
    before = https(p.port, ctx)
    assert request(before) == (200, b"ok")
    assert "old.test" in served_names(before)

    write_cert(ca, tmp_path, "live", "localhost", "new.test")  # the same paths, a new certificate
    p.signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in p.stderr())

    assert request(before) == (200, b"ok")  # the keep-alive connection opened before still serves
    assert request(before) == (200, b"ok")
    assert "old.test" in served_names(before)
    after = https(p.port, ctx)
    assert request(after) == (200, b"ok")
    assert "new.test" in served_names(after)

    # a reload that would turn TLS off is refused: the port keeps speaking TLS
    p.write_config(config(upstream, [ep("/a")]))
    p.signal(signal.SIGHUP)
    wait_for(lambda: "turn TLS off" in p.stderr())
    again = https(p.port, ctx)
    assert request(again) == (200, b"ok")
    assert request(before) == (200, b"ok")


def test_a_reload_with_an_unreadable_key_is_refused_and_tls_keeps_serving(ca, upstream, tmp_path, proxies):
    key = write_cert(ca, tmp_path, "live", "localhost")
    p = start(proxies, tls_config(upstream, [key]), tmp_path)
    os.remove(key["private_key"])
    p.signal(signal.SIGHUP)
    wait_for(lambda: "reload of" in p.stderr() and key["private_key"] in p.stderr())
    c = https(p.port, client_context(ca))
    assert request(c) == (200, b"ok")


# -- config errors name the file ---------------------------------------------------------------------------
def _check(cfg: dict, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", str(path)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=30)


def test_check_names_a_missing_certificate_and_a_key_of_another_certificate(ca, upstream, tmp_path):
    good = write_cert(ca, tmp_path, "good", "localhost")
    other = write_cert(ca, tmp_path, "other", "localhost")
    missing = str(tmp_path / "nowhere.crt")
    out = _check(tls_config(upstream, [{"public_key": missing, "private_key": good["private_key"]}]), tmp_path)
    assert out.returncode == 1
    assert f"$.tls.keys[0].public_key: cannot read the certificate {missing!r}" in out.stderr
    out = _check(tls_config(upstream, [{"public_key": good["public_key"], "private_key": other["private_key"]}]),
                 tmp_path)
    assert out.returncode == 1
    assert f"$.tls.keys[0]: the private key {other['private_key']!r} does not belong to the certificate " \
           f"{good['public_key']!r}" in out.stderr
    out = _check(tls_config(upstream, [good]), tmp_path)
    assert out.returncode == 0 and "(2 endpoints, 0 warnings)" in out.stdout and not out.stderr, out.stdout + out.stderr


def test_run_refuses_to_start_on_a_missing_key(ca, upstream, tmp_path):
    good = write_cert(ca, tmp_path, "good", "localhost")
    missing = str(tmp_path / "nowhere.key")
    path = tmp_path / "run.json"
    path.write_text(json.dumps(tls_config(upstream, [{"public_key": good["public_key"], "private_key": missing}])))
    out = subprocess.run([sys.executable, "-m", "fastproxy", "run", "-c", str(path), "-p", "0"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, timeout=30)
    assert out.returncode == 1 and "ready" not in out.stdout
    assert missing in out.stderr


# -- client_tls: https:// backends ------------------------------------------------------------------------
@pytest.fixture
def backend_ca():
    return trustme.CA()


def tls_backend(backend_ca, require_client_ca=None) -> Upstream:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    backend_ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    if require_client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        require_client_ca.configure_trust(ctx)
    return Upstream(ssl=ctx)


def plain_proxy(proxies, backend: Upstream, tmp_path, **root) -> Proxy:
    p = Proxy(config(backend, [ep("/a")], **root), tmp_path)
    proxies.append(p)
    return p


def plain_get(port: int) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/a")
        return c.getresponse().status
    finally:
        c.close()


def test_an_https_backend_is_verified_with_client_tls_ca_certs(backend_ca, tmp_path, proxies):
    backend = tls_backend(backend_ca)
    try:
        ca_file = tmp_path / "backend-ca.pem"
        ca_file.write_bytes(backend_ca.cert_pem.bytes())
        p = plain_proxy(proxies, backend, tmp_path, client_tls={"ca_certs": [str(ca_file)]})
        assert plain_get(p.port) == 200
        assert plain_get(p.port) == 200
        assert backend.opened == 1  # the verified connection is pooled and reused
    finally:
        backend.stop()


def test_an_https_backend_that_does_not_verify_is_a_502_with_a_clear_log_line(backend_ca, tmp_path, proxies):
    backend = tls_backend(backend_ca)
    try:
        p = plain_proxy(proxies, backend, tmp_path)  # system CAs only: trustme's CA is unknown to them
        assert plain_get(p.port) == 502
        wait_for(lambda: "certificate not verified" in p.stderr())
        assert not backend.requests
    finally:
        backend.stop()


def test_allow_insecure_connections_skips_backend_verification(backend_ca, tmp_path, proxies):
    backend = tls_backend(backend_ca)
    try:
        p = plain_proxy(proxies, backend, tmp_path, client_tls={"allow_insecure_connections": True})
        assert plain_get(p.port) == 200
    finally:
        backend.stop()


def test_client_certs_authenticate_fastproxy_to_a_backend_that_requires_mtls(backend_ca, tmp_path, proxies):
    gateway_ca = trustme.CA()
    backend = tls_backend(backend_ca, require_client_ca=gateway_ca)
    try:
        ca_file = tmp_path / "backend-ca.pem"
        ca_file.write_bytes(backend_ca.cert_pem.bytes())
        cert = gateway_ca.issue_cert("gateway.test")
        cert.cert_chain_pems[0].write_to_path(str(tmp_path / "gw.crt"))
        cert.private_key_pem.write_to_path(str(tmp_path / "gw.key"))
        with_cert = plain_proxy(proxies, backend, tmp_path, client_tls={
            "ca_certs": [str(ca_file)],
            "client_certs": [{"certificate": str(tmp_path / "gw.crt"), "private_key": str(tmp_path / "gw.key")}]})
        assert plain_get(with_cert.port) == 200
        (seen,) = [c for c in backend.peercerts if c]
        assert ("commonName", "gateway.test") in [kv for rdn in seen["subject"] for kv in rdn] or \
            any(v == "gateway.test" for _, v in seen.get("subjectAltName", ()))
        without = Proxy(config(backend, [ep("/a")], client_tls={"ca_certs": [str(ca_file)]}), tmp_path,
                        name="without.json")
        proxies.append(without)
        assert plain_get(without.port) == 502
        assert len(backend.requests) == 1
    finally:
        backend.stop()


# -- the connection cap ---------------------------------------------------------------------------------
def test_handshakes_count_against_the_cap_are_released_on_failure_and_evicted_first(ca, upstream, tmp_path,
                                                                                       proxies):
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")])
    admin_port = free_port()
    cfg["extra_config"]["fastproxy"].update(max_connections=2, tls_handshake_timeout="30s", admin={"port": admin_port})
    p = start(proxies, cfg, tmp_path)

    def open_connections() -> int:
        for line in get(admin_port, "/metrics")[2].decode().splitlines():
            if line.startswith("fastproxy_connections_open "):
                return int(float(line.split()[1]))
        raise AssertionError("no fastproxy_connections_open in /metrics")

    ctx = client_context(ca)
    # failed handshakes (plain HTTP on the TLS port) give their place back: many more than the cap
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert closed_by_peer(s, 5)  # the failed handshake closes it
    c = https(p.port, ctx)
    assert request(c) == (200, b"ok")
    c.close()
    wait_for(lambda: open_connections() == 0)  # (else its place is the one taken next)
    # at the cap with two stalled handshakes (30 s timeout), a new client is admitted at once:
    # the oldest handshake is closed for it
    stalled = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(2)]
    opened = time.monotonic()
    c = https(p.port, ctx)
    assert request(c) == (200, b"ok")
    assert time.monotonic() - opened < 3
    assert closed_by_peer(stalled[0], 3)  # the oldest was evicted
    assert not closed_by_peer(stalled[1], 0.2)  # the other still waits for its handshake
    for s in stalled:
        s.close()


def closed_by_peer(s: socket.socket, wait: float) -> bool:
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_sigterm_drains_a_tls_port_with_a_handshake_pending_and_an_idle_connection(ca, upstream, tmp_path):
    cfg = tls_config(upstream, [write_cert(ca, tmp_path, "a", "localhost")])
    cfg["extra_config"]["fastproxy"]["tls_handshake_timeout"] = "60s"
    p = Proxy(cfg, tmp_path)
    try:
        idle = https(p.port, client_context(ca))
        assert request(idle) == (200, b"ok")
        stalled = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        started = time.monotonic()
        p.signal(signal.SIGTERM)
        assert p.proc.wait(15) == 0
        # the pending handshake is abandoned at once; the idle connection gets close_notify and
        # is waited for at most the TLS shutdown timeout (5 s) when its client does not answer
        assert time.monotonic() - started < 10
        assert closed_by_peer(stalled, 1)
        stalled.close()
    finally:
        p.stop()

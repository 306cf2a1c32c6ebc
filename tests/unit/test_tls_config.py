"""Compiling the root `tls` and `client_tls` blocks (config/tls.py): every file problem is an
error naming its JSON path and the file, an unimplemented field is an error, versions, cipher
suites and curves map to what OpenSSL is told, and SNI picks the key whose names match.

Certificates are made at test time with trustme; nothing listens on a socket here.
"""

import datetime
import ssl

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from fastproxy.config.compile import compile_config
from fastproxy.config.tls import ServerTLS, listener_change, sni_chooser
from tests.configutil import assert_problem, errors_of

HOST = "http://127.0.0.1:8081"


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def cfg(tls=None, client_tls=None, hosts=(HOST,), **fastproxy) -> dict:
    raw = {"version": 3, "host": list(hosts), "output_encoding": "no-op",
           "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/"}]}]}
    if tls is not None:
        raw["tls"] = tls
    if client_tls is not None:
        raw["client_tls"] = client_tls
    if fastproxy:
        raw["extra_config"] = {"fastproxy": fastproxy}
    return raw


def key(ca, tmp_path, name="a", *hosts, **kw) -> dict:
    cert = ca.issue_cert(*(hosts or ("localhost",)), **kw)
    pub, priv = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(pub))
    cert.private_key_pem.write_to_path(str(priv))
    return {"public_key": str(pub), "private_key": str(priv)}


def test_a_valid_block_compiles_to_a_tls13_only_context_with_alpn(ca, tmp_path):
    snap = compile_config(cfg({"keys": [key(ca, tmp_path)]}))
    assert isinstance(snap.tls, ServerTLS) and snap.scheme == "https"
    ctx = snap.tls.context
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.maximum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_NONE and not snap.tls.mtls
    assert snap.tls.handshake_timeout == snap.protocol.read_header_timeout == 10.0
    assert snap.route_list[0].forwarded_proto == b"\r\nX-Forwarded-Proto: https\r\n"
    assert snap.warnings == ()


def test_without_tls_the_port_is_plain_and_the_backend_is_told_http():
    snap = compile_config(cfg())
    assert snap.tls is None and snap.scheme == "http" and snap.client_tls is None
    assert snap.route_list[0].forwarded_proto == b"\r\nX-Forwarded-Proto: http\r\n"


def test_the_older_top_level_key_pair_and_a_handshake_timeout(ca, tmp_path):
    snap = compile_config(cfg(key(ca, tmp_path), tls_handshake_timeout="3s"))
    assert snap.tls is not None and snap.tls.handshake_timeout == 3.0
    assert snap.tls.certificates[0].names == ("localhost",)


def test_disabled_is_plain_http_and_reads_no_file():
    assert compile_config(cfg({"disabled": True, "public_key": "/nowhere.pem"})).tls is None


@pytest.mark.parametrize("field", ["public_key", "private_key"])
def test_a_missing_file_is_an_error_naming_its_path(ca, tmp_path, field):
    k = key(ca, tmp_path)
    k[field] = str(tmp_path / "missing.pem")
    problems = errors_of(cfg({"keys": [k]}))
    assert_problem(problems, f"$.tls.keys[0].{field}", [repr(k[field]), "No such file"])


def test_a_key_of_another_certificate_is_an_error_naming_both(ca, tmp_path):
    a, b = key(ca, tmp_path, "a"), key(ca, tmp_path, "b")
    problems = errors_of(cfg({"keys": [{"public_key": a["public_key"], "private_key": b["private_key"]}]}))
    assert_problem(problems, "$.tls.keys[0]", ["the private key", repr(b["private_key"]), "does not belong",
                                               repr(a["public_key"])])


def test_files_that_are_not_pem_and_an_encrypted_key_are_errors(ca, tmp_path):
    k = key(ca, tmp_path)
    (tmp_path / "junk").write_text("hello")
    problems = errors_of(cfg({"keys": [{"public_key": str(tmp_path / "junk"), "private_key": str(tmp_path / "junk")}]}))
    assert_problem(problems, "$.tls.keys[0].public_key", ["is not a PEM certificate"])
    assert_problem(problems, "$.tls.keys[0].private_key", ["is not a PEM private key"])
    cert = ca.issue_cert("localhost")
    pk = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    enc = pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.BestAvailableEncryption(b"secret"))
    (tmp_path / "enc.key").write_bytes(enc)
    problems = errors_of(cfg({"keys": [{"public_key": k["public_key"], "private_key": str(tmp_path / "enc.key")}]}))
    assert_problem(problems, "$.tls.keys[0].private_key", ["encrypted private key"])


def test_an_expired_certificate_is_a_warning_not_an_error(ca, tmp_path):
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    k = key(ca, tmp_path, "old", "localhost", not_before=past - datetime.timedelta(days=30), not_after=past)
    snap = compile_config(cfg({"keys": [k]}))
    assert snap.tls is not None
    assert_problem(list(snap.warnings), "$.tls.keys[0].public_key", ["expired on"])


@pytest.mark.parametrize("tls,path,words", [
    ({"min_version": "TLS10"}, "$.tls.min_version", ["TLS10 is refused", "TLS12"]),
    ({"min_version": "TLS11"}, "$.tls.min_version", ["TLS11 is refused"]),
    ({"max_version": "TLS14"}, "$.tls.max_version", ["expected 'TLS12' or 'TLS13'"]),
    ({"min_version": "TLS13", "max_version": "TLS12"}, "$.tls.max_version", ["at least min_version"]),
    ({"cipher_suites": [5]}, "$.tls.cipher_suites[0]", ["RC4 and 3DES"]),
    ({"cipher_suites": [12345]}, "$.tls.cipher_suites[0]", ["IANA number"]),
    ({"min_version": "TLS12", "cipher_suites": [4865]}, "$.tls.cipher_suites", ["no TLS 1.2 cipher suite"]),
    ({"curve_preferences": [30]}, "$.tls.curve_preferences[0]", ["Go CurveID"]),
    ({"session_tickets": False}, "$.tls.session_tickets", ["unknown or unimplemented tls field"]),
    ({"enable_mtls": True, "disable_system_ca_pool": True}, "$.tls.ca_certs", ["no client certificate"]),
    ({"enable_mtls": True, "ca_certs": ["/nowhere/ca.pem"]}, "$.tls.ca_certs[0]", ["'/nowhere/ca.pem'"]),
    ({"keys": []}, "$.tls", ["found neither"]),
])
def test_settings_fastproxy_cannot_honour_are_errors(ca, tmp_path, tls, path, words):
    block = {"keys": [key(ca, tmp_path)], **tls}
    assert_problem(errors_of(cfg(block)), path, words)


def test_cipher_suites_map_iana_numbers_to_openssl_names_for_tls12(ca, tmp_path):
    snap = compile_config(cfg({"keys": [key(ca, tmp_path)], "min_version": "TLS12",
                               "cipher_suites": [49199, 49195, 4865, 4866, 4867]}))
    assert snap.tls is not None
    tls12 = {c["name"] for c in snap.tls.context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"}
    assert snap.tls.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_several_curves_offer_the_first_and_say_so(ca, tmp_path):
    snap = compile_config(cfg({"keys": [key(ca, tmp_path)], "curve_preferences": [29, 23]}))
    assert_problem(list(snap.warnings), "$.tls.curve_preferences", ["only the first, 29 (X25519)"])


def test_mtls_requires_client_certificates(ca, tmp_path):
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    snap = compile_config(cfg({"keys": [key(ca, tmp_path)], "enable_mtls": True, "ca_certs": [str(tmp_path / "ca.pem")],
                               "disable_system_ca_pool": True}))
    assert snap.tls is not None and snap.tls.mtls
    assert snap.tls.context.verify_mode == ssl.CERT_REQUIRED
    assert snap.tls.context.cert_store_stats()["x509_ca"] == 1


class FakeSSLObject:
    def __init__(self, context):
        self.context = context


def test_sni_picks_exact_names_then_one_label_wildcards_else_the_first_key(ca, tmp_path):
    snap = compile_config(cfg({"keys": [key(ca, tmp_path, "a", "a.test"), key(ca, tmp_path, "b", "*.b.test"),
                                        key(ca, tmp_path, "c", "c.test", "x.b.test")]}))
    assert snap.tls is not None
    default = snap.tls.context
    choose = default.sni_callback
    assert choose is not None
    names = {}
    for host in ("a.test", "y.b.test", "x.b.test", "X.B.TEST.", "deep.y.b.test", "b.test", "other", None):
        obj = FakeSSLObject(default)
        choose(obj, host, default)
        names[host] = obj.context
    assert names["a.test"] is default and names["deep.y.b.test"] is default and names["b.test"] is default
    assert names["other"] is default and names[None] is default
    assert names["y.b.test"] is not default and names["x.b.test"] is not default
    assert names["x.b.test"] is names["X.B.TEST."] and names["x.b.test"] is not names["y.b.test"]


def test_one_key_needs_no_sni_callback(ca, tmp_path):
    snap = compile_config(cfg({"keys": [key(ca, tmp_path)]}))
    assert snap.tls is not None and snap.tls.context.sni_callback is None
    assert callable(sni_chooser(((snap.tls.certificates[0], snap.tls.context),)))


def test_a_reload_may_not_turn_tls_on_or_off(ca, tmp_path):
    on = compile_config(cfg({"keys": [key(ca, tmp_path)]})).tls
    assert listener_change(on, on) is None and listener_change(None, None) is None
    assert "turn TLS off" in (listener_change(on, None) or "")
    assert "turn TLS on" in (listener_change(None, on) or "")


# -- client_tls ---------------------------------------------------------------------------------------
def test_https_backends_get_one_verifying_context_by_default():
    snap = compile_config(cfg(hosts=("https://api.example.test",)))
    ctx = snap.client_tls
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_client_tls_insecure_is_a_warning_and_turns_verification_off():
    snap = compile_config(cfg(client_tls={"allow_insecure_connections": True}, hosts=("https://a.test",)))
    assert snap.client_tls is not None and snap.client_tls.verify_mode == ssl.CERT_NONE
    assert_problem(list(snap.warnings), "$.client_tls.allow_insecure_connections", ["not verified"])


def test_client_tls_errors_name_their_path(ca, tmp_path):
    k = key(ca, tmp_path)
    cert = {"certificate": k["public_key"], "private_key": k["private_key"]}
    cases = [
        ({"disable_system_ca_pool": True}, "$.client_tls.disable_system_ca_pool", ["no backend certificate"]),
        ({"ca_certs": ["/nowhere/ca.pem"]}, "$.client_tls.ca_certs[0]", ["'/nowhere/ca.pem'"]),
        ({"client_certs": [cert, cert]}, "$.client_tls.client_certs", ["expected one client certificate"]),
        ({"client_certs": [{"certificate": "/nowhere.crt", "private_key": k["private_key"]}]},
         "$.client_tls.client_certs[0].certificate", ["'/nowhere.crt'"]),
        ({"min_version": "SSL3.0"}, "$.client_tls.min_version", ["refused"]),
        ({"renegotiation": True}, "$.client_tls.renegotiation", ["unknown or unimplemented client_tls field"]),
    ]
    for block, path, words in cases:
        assert_problem(errors_of(cfg(client_tls=block, hosts=("https://a.test",))), path, words)


def test_client_certs_are_loaded(ca, tmp_path):
    k = key(ca, tmp_path, "gw", "gateway.test")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem.bytes())
    snap = compile_config(cfg(client_tls={"ca_certs": [str(tmp_path / "ca.pem")], "disable_system_ca_pool": True,
                                          "client_certs": [{"certificate": k["public_key"],
                                                            "private_key": k["private_key"]}]},
                              hosts=("https://a.test",)))
    assert snap.client_tls is not None and snap.client_tls.cert_store_stats()["x509_ca"] == 1

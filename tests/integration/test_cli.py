"""The command line as a user runs it (SPEC §1): `python -m fastproxy version | check | run`, in a
subprocess, judged on exit status, stdout and stderr.
"""

import glob
import json
import os
import platform
import signal
import socket
import subprocess
import sys

import pytest

from fastproxy import __version__
from tests.support import ROOT

HOST = "http://127.0.0.1:8081"
ENV = {**os.environ, "PYTHONPATH": ROOT}


def fastproxy(*args: str, timeout: float = 30, cwd: str = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def write_json(tmp_path, data, name: str = "krakend.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2))
    return str(path)


def good_config(**root) -> dict:
    return {"version": 3, "host": [HOST], "listen_ip": "127.0.0.1", "output_encoding": "no-op",
            "endpoints": [{"endpoint": "/a", "backend": [{"url_pattern": "/a"}]}], **root}


BAD_CONFIG = {
    "version": 3,
    "port": "8080",
    "endpoints": [
        {"endpoint": "/a/{id}", "backend": [{"url_pattern": "/b/{user}", "host": [HOST]}]},
        {"endpoint": "/c", "timeout": "5 seconds", "backend": [{"url_pattern": "/c", "host": [HOST]}]},
        {"endpoint": "/d", "backend": [{"url_pattern": "/d"}]},
        {"endpoint": "/e", "method": "FETCH", "backend": [{"url_pattern": "/e", "host": ["ftp://127.0.0.1:8081"]}]},
    ],
}
BAD_ERRORS = [
    "$.port: expected int, found str",
    "$.endpoints[0].backend[0].url_pattern: placeholder {user} is not a parameter of the endpoint",
    "$.endpoints[1].timeout: expected a duration such as \"500ms\" or \"2s\", found '5 seconds'",
    "$.endpoints[2].backend[0].host: expected a list of 'scheme://host:port' here or in the root 'host'",
    "$.endpoints[3].method: expected one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT, found 'FETCH'",
    "$.endpoints[3].backend[0].host[0]: expected an http://, https://, ws:// or wss:// host, found 'ftp://127.0.0.1:8081'",
]


def test_version_prints_the_package_version_python_and_mode():
    r = fastproxy("version")
    assert r.returncode == 0
    mode = "interpreted" if os.environ.get("FASTPROXY_NO_EXTENSIONS", "") not in ("", "0") else "compiled"
    assert r.stdout.splitlines() == [f"fastproxy {__version__}",
                                     f"python {platform.python_version()} ({platform.python_implementation()})",
                                     f"mode {mode}"]


def test_check_of_a_valid_file_exits_0_with_syntax_ok_and_lists_warnings(tmp_path):
    raw = good_config(cache_ttl="60s", extra_config={"telemetry/logging": {"level": "INFO"}})
    raw["endpoints"][0]["extra_config"] = {"telemetry/opentelemetry": {}, "modifier/jmespath": {"expr": "a"}}
    raw["endpoints"][0]["output_encoding"] = "json"
    path = write_json(tmp_path, raw)
    r = fastproxy("check", "-c", path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == f"Syntax OK: {path} (1 endpoint, 5 warnings)"
    warnings = [line.strip() for line in lines[:-1]]
    assert sorted(warnings) == sorted([
        "warning: $.cache_ttl: recognised KrakenD field, not implemented by fastproxy: ignored",
        'warning: $.extra_config["telemetry/logging"]: recognised KrakenD namespace, not implemented by fastproxy: '
        'ignored',
        'warning: $.endpoints[0].extra_config["telemetry/opentelemetry"]: recognised KrakenD namespace, not '
        "implemented by fastproxy: ignored; 1 endpoint: GET /a",
        'warning: $.endpoints[0].extra_config["modifier/jmespath"]: recognised KrakenD namespace, not implemented by '
        "fastproxy: ignored; 1 endpoint: GET /a",
        "warning: $.endpoints[0].output_encoding: output_encoding 'json' (KrakenD's default) is not implemented: the "
        "response is streamed "
        "as 'no-op' (the backend's status, headers and body pass unchanged; KrakenD would decode and re-encode the "
        "body and answer a backend error with its own); 1 endpoint: GET /a",
    ])
    assert r.stderr == ""


def test_check_of_a_clean_file_prints_only_syntax_ok(tmp_path):
    path = write_json(tmp_path, good_config())
    r = fastproxy("check", "-c", path)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"Syntax OK: {path} (1 endpoint, 0 warnings)\n", "")


def test_check_of_a_bad_file_exits_1_listing_every_error(tmp_path):
    path = write_json(tmp_path, BAD_CONFIG)
    r = fastproxy("check", "-c", path)
    assert r.returncode == 1
    assert "Syntax OK" not in r.stdout
    lines = r.stderr.splitlines()
    assert lines[0] == f"fastproxy: configuration {path} is not valid ({len(BAD_ERRORS)} errors, 1 warning):"
    assert lines[1].startswith("  warning: $.endpoints[0]: output_encoding 'json' (KrakenD's default)")
    errors = [line.strip() for line in lines[2:]]
    assert len(errors) == len(BAD_ERRORS), r.stderr
    for want, got in zip(BAD_ERRORS, errors):
        assert got.startswith(f"error: {want}"), (want, got)


def test_check_of_a_file_that_does_not_parse_gives_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "version": 3,\n  "endpoints": [\n    {"endpoint": "/a",}\n  ]\n}\n')
    r = fastproxy("check", "-c", str(path))
    assert r.returncode == 1
    assert f"error: {path}: line 4, column 23: invalid JSON: trailing comma in object" in r.stderr
    assert "(1 error, 0 warnings):" in r.stderr


def test_check_of_a_missing_file_exits_1(tmp_path):
    path = str(tmp_path / "missing.json")
    r = fastproxy("check", "-c", path)
    assert r.returncode == 1
    assert f"{path}: cannot read the file: No such file or directory" in r.stderr


@pytest.mark.parametrize("name,text", [
    ("k.yaml", "version: 3\noutput_encoding: no-op\nhost: [http://127.0.0.1:8081]\nendpoints:\n  - endpoint: /a\n"
               "    backend:\n      - url_pattern: /a\n"),
    ("k.toml", 'version = 3\noutput_encoding = "no-op"\nhost = ["http://127.0.0.1:8081"]\n[[endpoints]]\n'
               'endpoint = "/a"\n[[endpoints.backend]]\nurl_pattern = "/a"\n'),
])
def test_check_reads_yaml_and_toml_by_extension(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    r = fastproxy("check", "-c", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Syntax OK: {path} (1 endpoint, 0 warnings)\n"


def test_run_with_a_bad_file_exits_1_without_serving(tmp_path):
    path = write_json(tmp_path, BAD_CONFIG)
    r = fastproxy("run", "-c", path, "-p", "0")
    assert r.returncode == 1
    assert "ready" not in r.stdout
    assert f"fastproxy: configuration {path} is not valid ({len(BAD_ERRORS)} errors, 1 warning):" in r.stderr
    for want in BAD_ERRORS:
        assert want in r.stderr


def test_run_starts_prints_one_ready_line_and_stops_on_sigterm(tmp_path):
    path = write_json(tmp_path, good_config())
    proc = subprocess.Popen([sys.executable, "-m", "fastproxy", "run", "-c", path, "-p", "0"], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("fastproxy ready: listening on http://127.0.0.1:"), line
        assert "with 1 worker" in line
        mode = "interpreted" if os.environ.get("FASTPROXY_NO_EXTENSIONS", "") not in ("", "0") else "compiled"
        assert f"with 1 worker ({mode}, pid " in line, line
        port = int(line.split("http://127.0.0.1:")[1].split(" ")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_run_on_a_busy_port_exits_1_saying_the_address_is_in_use(tmp_path, workers):
    path = write_json(tmp_path, good_config())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = fastproxy("run", "-c", path, "-p", str(port), "-w", str(workers))
    assert r.returncode == 1
    assert "ready" not in r.stdout
    assert r.stderr.strip() == (f"fastproxy: cannot listen on 127.0.0.1:{port}: "
                                "the port is already in use by another process")


@pytest.mark.parametrize("args,message", [
    (("-p", "70000"), "fastproxy: -p expects a port 0-65535, found 70000"),
    (("-w", "0"), "fastproxy: -w expects at least 1 worker, found 0"),
])
def test_run_with_a_bad_override_exits_1(tmp_path, args, message):
    path = write_json(tmp_path, good_config())
    r = fastproxy("run", "-c", path, *args)
    assert r.returncode == 1
    assert message in r.stderr


SHIPPED = sorted(glob.glob(os.path.join(ROOT, "config", "*.json")) + glob.glob(os.path.join(ROOT, "config", "*.yaml"))
                 + glob.glob(os.path.join(ROOT, "config", "*.yml")) + glob.glob(os.path.join(ROOT, "config", "*.toml")))


@pytest.mark.skipif(not SHIPPED, reason="no configuration files in config/")
@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.basename(p) for p in SHIPPED])
def test_check_passes_on_every_shipped_config(path, tmp_path):
    cwd = ROOT
    with open(path) as f:
        if path.endswith(".json") and "tls" in json.load(f):
            # its certificate is made as the README says, where its relative paths point
            subprocess.run([os.path.join(ROOT, "scripts", "make-cert.sh"), "config/certs", "localhost"], cwd=tmp_path,
                           check=True, capture_output=True, timeout=30)
            cwd = str(tmp_path)
    r = fastproxy("check", "-c", path, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"Syntax OK: {path} (")


def test_migrated_krakend_noop_config_warns_about_what_fastproxy_ignores():
    path = os.path.join(ROOT, "config", "krakend-noop.json")
    if not os.path.exists(path):
        pytest.skip("config/krakend-noop.json is not there")
    r = fastproxy("check", "-c", path)
    assert r.returncode == 0, r.stderr
    assert "security/cors" not in r.stdout  # implemented: nothing to warn about
    assert '$.extra_config["telemetry/logging"]: recognised KrakenD namespace' in r.stdout
    assert "encoding" not in r.stdout  # no-op is what fastproxy does: nothing to warn about

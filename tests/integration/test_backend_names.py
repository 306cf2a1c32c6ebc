"""Backends named by host name: resolved asynchronously and cached; the Host header names them."""

import json

from tests.support import Proxy, config, ep, get


def test_a_backend_named_localhost_is_resolved_and_gets_its_own_host_header(upstream, tmp_path):
    px = Proxy(config([f"http://localhost:{upstream.port}"], [ep("/e", "/echo")]), tmp_path)
    try:
        for _ in range(3):
            status, _, body = get(px.port, "/e")
            assert status == 200
            headers = dict(json.loads(body)["headers"])
            assert headers["Host"] == f"localhost:{upstream.port}"
    finally:
        px.stop()


def test_a_backend_name_that_does_not_resolve_is_a_502(upstream, tmp_path):
    px = Proxy(config(["http://no-such-host.invalid:80"], [ep("/e", "/echo")]), tmp_path)
    try:
        assert get(px.port, "/e")[0] == 502
        assert "no-such-host.invalid" in px.stderr()
    finally:
        px.stop()

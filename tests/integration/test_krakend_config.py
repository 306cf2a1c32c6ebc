"""The shipped migrated KrakenD config (config/krakend-noop.json) runs unchanged: only the
backend addresses are pointed at backends started by the test."""

import json
import os

from tests.support import ROOT, Proxy, Upstream, get


def test_the_migrated_krakend_noop_config_serves_every_endpoint(tmp_path):
    a, b = Upstream(), Upstream()
    try:
        text = open(os.path.join(ROOT, "config", "krakend-noop.json")).read()
        text = text.replace("http://127.0.0.1:8081", a.url).replace("http://127.0.0.1:8082", b.url)
        raw = json.loads(text)
        px = Proxy(raw, tmp_path)
        try:
            assert get(px.port, "/v1/products")[0] == 200
            assert get(px.port, "/v1/products")[0] == 200
            assert get(px.port, "/v1/products/42")[0] == 200
            assert get(px.port, "/v1/users/7/orders/9")[0] == 200
            assert get(px.port, "/v1/orders", method="POST", body=b"{}",
                       headers={"Content-Type": "application/json"})[0] == 200
            assert get(px.port, "/v1/users/7", method="PUT", body=b"{}")[0] == 200
            assert get(px.port, "/v1/search?q=x")[0] == 200
            urls = [r["url"].split("?")[0] for r in a.requests + b.requests]
            for path in ("/catalog/products", "/catalog/products/42", "/orders/7/9", "/orders", "/users/7", "/search"):
                assert path in urls, (path, urls)
            # two hosts: the product list was balanced over both
            assert any(r["url"] == "/catalog/products" for r in a.requests)
            assert any(r["url"] == "/catalog/products" for r in b.requests)
        finally:
            px.stop()
    finally:
        a.stop()
        b.stop()

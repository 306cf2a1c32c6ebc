"""The shipped identity example (config/identity.json) with keys and tokens from
scripts/identity_demo.py: tiers chosen by a claim, per-user limits on the subject, an admin role,
a partner API key."""

import json
import os
import subprocess
import sys

from tests.support import ROOT, Proxy, get


def demo(*args: str) -> str:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "identity_demo.py"), *args],
                       capture_output=True, text=True, timeout=60, check=True)
    return r.stdout.strip()


def test_the_identity_example_keys_limits_on_what_the_gateway_verified(upstream, tmp_path):
    demo("keys", "--dir", str(tmp_path))
    with open(os.path.join(ROOT, "config", "identity.json")) as f:
        raw = json.load(f)
    raw["host"] = [upstream.url]
    raw["port"] = 0
    for e in raw["endpoints"]:
        v = e.get("extra_config", {}).get("auth/validator")
        if v:
            v["jwk_local_path"] = str(tmp_path / "jwks.json")
    p = Proxy(raw, tmp_path)
    try:
        def call(path: str, token: str = "", **headers: str) -> int:
            if token:
                headers["Authorization"] = f"Bearer {token}"
            return get(p.port, path, headers=headers)[0]

        gold = demo("token", "--dir", str(tmp_path), "--sub", "gina", "--plan", "gold")
        free = demo("token", "--dir", str(tmp_path), "--sub", "fred", "--plan", "free")
        assert [call("/v1/me", gold) for _ in range(4)] == [200] * 4
        assert [call("/v1/me", free, **{"X-Plan": "gold"}) for _ in range(3)] == [200, 200, 429]
        assert upstream.requests[-1]["url"] == "/echo/users/fred"
        assert call("/v1/me") == 401
        assert call("/v1/admin/reports", gold) == 403
        admin = demo("token", "--dir", str(tmp_path), "--sub", "ada", "--role", "admin")
        assert call("/v1/admin/reports", admin) == 200
        assert call("/v1/partner/orders", **{"X-Api-Key": "demo-partner-key"}) == 200
        assert call("/v1/partner/orders", **{"X-Api-Key": "guess"}) == 401
        assert call("/v1/public/status") == 200
    finally:
        p.stop()

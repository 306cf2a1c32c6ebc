"""What identity at the edge costs per request, in µs of Python over the plain route, without
sockets (the harness of `micro_request.py`): a validated route with a token seen before (the
cache: one dict lookup), with a token never seen (a signature check, per algorithm), an API key,
and CORS on an actual request. Every request carries the same headers (a token, an API key, an
Origin), so the differences are the features' own work.

    python bench/micro_identity.py [N] [ROUNDS]

Each row is the best of ROUNDS (default 5) measurements, the rows interleaved round after round
so that other work on the machine hits them alike. A round sends N requests (default 100,000),
or N/100 (at least 500) for the first-seen rows, each with a token minted beforehand and never
sent before.
"""

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from micro_request import FakeTransport, measure

from fastproxy.config.compile import load

ORIGIN = b"Origin: https://app.example\r\n"
API_KEY = "4d2c61e1-34c4-e96c-9456-15bd983c5019"


class Recording(FakeTransport):
    last = b""

    def write(self, data: bytes) -> None:
        super().write(data)
        self.last = data

    def writelines(self, data: list) -> None:
        super().writelines(data)
        self.last = b"".join(data)


def keys() -> dict:
    rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    es = ec.generate_private_key(ec.SECP256R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    hs = b"a-shared-secret-of-32-bytes-at-least!"
    import base64
    return {
        "RS256": (rs, json.loads(RSAAlgorithm.to_jwk(rs.public_key()))),
        "ES256": (es, json.loads(ECAlgorithm.to_jwk(es.public_key()))),
        "EdDSA": (ed, json.loads(OKPAlgorithm.to_jwk(ed.public_key()))),
        "HS256": (hs, {"kty": "oct", "k": base64.urlsafe_b64encode(hs).rstrip(b"=").decode()}),
    }


def token(alg: str, key: object, sub: str = "bench") -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time()) + 86400}, key, algorithm=alg, headers={"kid": alg})


def request(tok: str) -> bytes:
    return (b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:19083\r\n"
            b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) fastproxy-bench/1.0\r\n"
            b"Authorization: Bearer " + tok.encode() + b"\r\nX-Api-Key: " + API_KEY.encode() + b"\r\n" + ORIGIN + b"\r\n")


def config(directory: Path, name: str, extra: dict, root: dict) -> object:
    raw = {"version": 3, "output_encoding": "no-op", "port": 0, "host": ["http://127.0.0.1:19080"],
           "extra_config": root,
           "endpoints": [{"endpoint": "/hello", "backend": [{"url_pattern": "/hello"}], "extra_config": extra}]}
    path = directory / f"config-{name}.json"
    path.write_text(json.dumps(raw))
    return load(str(path))


def status_of(snap: object, req: bytes) -> int:
    """The status the first route answers `req` with (it must be 200 for the numbers to mean anything)."""
    import asyncio

    import uvloop

    from fastproxy.server.connection import ClientConnection
    from fastproxy.server.worker import Worker
    from fastproxy.upstream.connection import UpstreamConnection
    from micro_request import RESPONSE

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    w = Worker(snap, loop)
    pool = w.pool(snap.route_list[0].targets[0])
    up = UpstreamConnection(pool)
    up.connection_made(FakeTransport())
    pool.adopt(up)
    client = ClientConnection(w)
    t = Recording()
    client.connection_made(t)
    client.data_received(req)
    up.data_received(RESPONSE)
    loop.close()
    assert t.last.startswith(b"HTTP/1.1 "), t.last
    return int(t.last[9:12])


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    fresh_n = max(n // 100, 500)
    ks = keys()
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        for alg, (_, jwk) in ks.items():
            (directory / f"{alg}.json").write_text(json.dumps({"keys": [{**jwk, "kid": alg}]}))
        cached = request(token("RS256", ks["RS256"][0]))

        def validator(alg: str) -> dict:
            return {"auth/validator": {"alg": alg, "jwk_local_path": str(directory / f"{alg}.json"),
                                       "propagate_claims": [["sub", "X-User"]]}}

        salted = hashlib.sha256(b"s" + API_KEY.encode()).hexdigest()
        # (name, config, requests of each round, requests per round, warm-up request)
        cases: list = [("plain route", config(directory, "plain", {}, {}), [[cached]] * rounds, n, cached),
                       ("auth/validator RS256, cached token", config(directory, "rs", validator("RS256"), {}),
                        [[cached]] * rounds, n, cached)]
        for alg, (key, _) in ks.items():
            # every measured request carries a token never sent before (the warm-up repeats another)
            per_round = [[request(token(alg, key, f"user-{r}-{i}")) for i in range(fresh_n)] for r in range(rounds)]
            cases.append((f"auth/validator {alg}, first-seen token", config(directory, alg, validator(alg), {}),
                          per_round, fresh_n, request(token(alg, key, "warm"))))
        cases.append(("auth/api-keys (header, sha256)", config(
            directory, "keys", {"auth/api-keys": {"roles": ["user"]}},
            {"auth/api-keys": {"identifier": "X-Api-Key", "hash": "sha256", "salt": "s", "propagate_role": "X-Role",
                               "keys": [{"key": salted, "roles": ["user"]}]}}), [[cached]] * rounds, n, cached))
        cases.append(("security/cors, actual request", config(
            directory, "cors", {}, {"security/cors": {"allow_origins": ["https://app.example"],
                                                      "expose_headers": ["RateLimit"]}}), [[cached]] * rounds, n,
                      cached))
        for name, snap, _, _, warm in cases:
            assert status_of(snap, warm) == 200, name
        best = {name: float("inf") for name, *_ in cases}
        for r in range(rounds):  # the rows interleaved, round after round: noise hits them alike
            for name, snap, per_round, count, warm in cases:
                best[name] = min(best[name], measure(snap, per_round[r], count, warm))
    base = best["plain route"]
    print(f"{'route':45} {'us/request':>10} {'over plain':>11}  (best of {rounds} rounds)")
    for name, per in best.items():
        print(f"{name:45} {per * 1e6:10.2f} {(per - base) * 1e6:+11.2f}")


if __name__ == "__main__":
    main()

"""The benchmark's identity: a signing key made at run time, its JWK Set written beside the
rendered configs (`@DIR@/jwks.json`, read by the full-stack config's `auth/validator`), and the
token every benchmark client sends (`Authorization: Bearer ...`, to every server alike so that
the requests are the same size everywhere)."""

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

KID = "bench-1"


def make(directory: "str | Path") -> str:
    """Write `directory/jwks.json` for a fresh RS256 key; return a token it verifies (valid a day)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=KID, alg="RS256", use="sig")
    Path(directory, "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    return jwt.encode({"sub": "bench", "exp": int(time.time()) + 86400}, key, algorithm="RS256",
                      headers={"kid": KID})

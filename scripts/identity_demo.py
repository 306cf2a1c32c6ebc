"""Keys and tokens for the identity example (config/identity.json).

    python scripts/identity_demo.py keys [--dir config/identity]
        a new RS256 key pair: DIR/jwks.json (the public JWK Set the example's validators read)
        and DIR/demo-key.pem (the private key; kept out of git). The JWK Set in the repository
        has no private key beside it: run this once to mint tokens it accepts.
    python scripts/identity_demo.py token [--dir config/identity] [--sub alice] [--plan gold] [--role admin] [--ttl 3600]
        a token signed with DIR/demo-key.pem, with the issuer and audience the example checks.

A demonstration key only: anybody with this repository can make one; never use it to protect
anything.
"""

import argparse
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

ISSUER = "https://idp.example.com"
AUDIENCE = "fastproxy-demo"
KID = "demo-1"


def keys(directory: str) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=KID, alg="RS256", use="sig")
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f, indent=2)
        f.write("\n")
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = os.path.join(directory, "demo-key.pem")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(pem)
    print(f"wrote {directory}/jwks.json and {path}")


def token(directory: str, sub: str, plan: str, role: str, ttl: int) -> None:
    path = os.path.join(directory, "demo-key.pem")
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except FileNotFoundError:
        sys.exit(f"{path} is missing: run `python scripts/identity_demo.py keys` first")
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "exp": int(time.time()) + ttl}
    if plan:
        claims["plan"] = plan
    if role:
        claims["realm_access"] = {"roles": [role]}
    print(jwt.encode(claims, key, algorithm="RS256", headers={"kid": KID}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["keys", "token"])
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config",
                                                  "identity"))
    ap.add_argument("--sub", default="alice")
    ap.add_argument("--plan", default="free")
    ap.add_argument("--role", default="")
    ap.add_argument("--ttl", type=int, default=3600)
    a = ap.parse_args()
    directory = os.path.normpath(a.dir)
    if a.what == "keys":
        keys(directory)
    else:
        token(directory, a.sub, a.plan, a.role, a.ttl)


if __name__ == "__main__":
    main()

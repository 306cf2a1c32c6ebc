"""Test support for identity at the edge: signing keys of each family, their JWK Sets, tokens
minted at test time, and a JWK Set server on 127.0.0.1 whose keys and health a test changes.
"""

import asyncio
import base64
import json
import threading
import time
from typing import Any, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm


class SigningKey:
    """A private key (or an HMAC secret), its algorithm, its `kid` and its public JWK."""

    def __init__(self, alg: str, kid: str) -> None:
        self.alg = alg
        self.kid = kid
        if alg.startswith(("RS", "PS")):
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        elif alg == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        elif alg == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
            self.jwk = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        elif alg.startswith("HS"):
            self.private = b"s3cret-" + kid.encode() * 8
            self.jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(self.private).rstrip(b"=").decode()}
        else:
            raise ValueError(alg)
        self.jwk["kid"] = kid

    def token(self, claims: Optional[dict] = None, alg: Optional[str] = None, kid: Any = "", **more: Any) -> str:
        """A token signed with this key; `exp` one hour ahead unless the claims say otherwise."""
        body = {"sub": "alice", "exp": int(time.time()) + 3600, **(claims or {}), **more}
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": self.kid if kid == "" else kid} if kid is not None else {}
        return jwt.encode(body, self.private, algorithm=alg or self.alg, headers=headers)


def jwks(*keys: SigningKey) -> dict:
    return {"keys": [k.jwk for k in keys]}


def unsigned(claims: dict, kid: str = "k1") -> str:
    """An `alg: none` token (RFC 7519 §6): what a forger sends."""
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'none', 'kid': kid})}.{b64(claims)}."


class JWKSServer:
    """Serves `self.document` (a JWK Set) at any path, in a background thread. `status` other
    than 200 answers that status, `delay` holds each answer back; `requests` counts the fetches."""

    def __init__(self, document: Optional[dict] = None, ssl: Any = None) -> None:
        self.document = document or {"keys": []}
        self.ssl = ssl  # an ssl.SSLContext: serve HTTPS
        self.status = 200
        self.delay = 0.0  # seconds before each answer
        self.requests = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.close()
                return
            self.requests += 1
            if self.delay:
                await asyncio.sleep(self.delay)
            body = json.dumps(self.document).encode() if self.status == 200 else b"down"
            writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (self.status, len(body), body))
            await writer.drain()
            writer.close()

        async def start() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=self.ssl)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}/.well-known/jwks.json"

    def stop(self) -> None:
        def _stop() -> None:
            self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(_stop)
        self._thread.join(5)

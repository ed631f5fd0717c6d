"""An OIDC issuer a test runs: RSA keys made by the test, its discovery document and JWKS
served over real HTTP from a thread, and the access tokens it signs."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

AUDIENCE = "orchy-test"
TOKEN_SECONDS = 300
RSA_BITS = 2048
HOLD_SECONDS = 30.0


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


@dataclass
class Issuer:
    """Keys by id; ``published`` the ids its JWKS lists. ``hold`` set: JWKS requests wait
    for it to be cleared (``held`` counts those waiting)."""

    url: str = ""
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    jwks_requests: int = 0
    discovery_requests: int = 0
    held: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.release.set()

    def new_key(self, publish: bool = True) -> str:
        kid = uuid.uuid4().hex[:12]
        self.keys[kid] = rsa_key()
        if publish:
            self.published.append(kid)
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid in self.published:
            jwk = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return {"keys": keys}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "someone",
            "iat": now,
            "exp": now + TOKEN_SECONDS,
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def token(self, kid: str, signer: str | None = None, **overrides: Any) -> str:
        """A token of ``kid`` signed with ``signer``'s key (default: ``kid``'s own); claims
        given as None are left out."""
        key = self.keys[signer or kid]
        return jwt.encode(self.claims(**overrides), key, algorithm="RS256", headers={"kid": kid})


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                with issuer.lock:
                    issuer.discovery_requests += 1
                body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/keys"}
            elif self.path == "/keys":
                with issuer.lock:
                    issuer.jwks_requests += 1
                    issuer.held += 1
                try:
                    issuer.release.wait(HOLD_SECONDS)
                finally:
                    with issuer.lock:
                        issuer.held -= 1
                body = issuer.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def serving_issuer() -> Iterator[Issuer]:
    issuer = Issuer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        issuer.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()

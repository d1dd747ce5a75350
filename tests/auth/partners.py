"""Partners of the SMART tests: their keys and signed assertions, made with PyJWT and
cryptography (not the server's JOSE library), and their registration through the CLI."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from typer.testing import CliRunner

from server.cli import app as cli

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class Partner:
    alg: str = "RS384"
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    client_id: str = ""

    def __post_init__(self) -> None:
        if self.alg.startswith("RS"):
            self.key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        else:
            curve = ec.SECP384R1() if self.alg == "ES384" else ec.SECP256R1()
            self.key = ec.generate_private_key(curve)
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.key.public_key()))
        self.jwk["kid"] = self.kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.jwk]}

    def assertion(
        self,
        aud: str,
        *,
        headers: dict[str, Any] | None = None,
        key: Any = None,
        alg: str | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": aud,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        for name in drop:
            body.pop(name, None)
        head = {"kid": self.kid, "typ": "JWT", **(headers or {})}
        return jwt.encode(body, key or self.key, algorithm=alg or self.alg, headers=head)

    def register(
        self,
        database_url: str,
        tmp: Path,
        *,
        scope: str,
        organization: str | None = None,
        role: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        path = tmp / f"jwks-{self.kid}.json"
        path.write_text(json.dumps(self.jwks()))
        args = ["client", "add", "--name", f"partner {self.kid}", "--scope", scope,
                "--jwks-file", str(path), "--database-url", database_url, *extra]
        if organization:
            args += ["--organization", organization]
        if role:
            args += ["--role", role]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        printed: dict[str, Any] = json.loads(result.stdout)
        self.client_id = printed["client_id"]
        return printed


def token_form(assertion: str, scope: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }

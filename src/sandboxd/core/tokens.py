"""Per-sandbox JWTs (agent access through the gateway) and signed upload URLs.

The secret comes from SANDBOXD_JWT_SECRET or is generated once and kept in the data dir, so tokens
survive restarts. A sandbox token names one sandbox (`sub`) and carries the sandbox's token version
(`tv`): killing a sandbox revokes every token it was given.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import jwt

from sandboxd.core.errors import Unauthorized

ALGORITHM = "HS256"
ENVD_EXPIRES = 4102444800  # 2100-01-01: E2B's envd token lives as long as its sandbox (a kill revokes it)


def load_secret(explicit: str | None, data_dir: Path) -> bytes:
    if explicit:
        return explicit.encode()
    path = data_dir / "jwt_secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    # O_EXCL: two processes starting at once must agree on one secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


class TokenExpired(Unauthorized):
    code = "TOKEN_EXPIRED"


class TokenInvalid(Unauthorized):
    code = "INVALID_TOKEN"


@dataclass(frozen=True)
class SandboxClaims:
    sandbox_id: str
    version: int
    expires_at: datetime


class TokenSigner:
    def __init__(self, secret: bytes, ttl_seconds: int):
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, sandbox_id: str, version: int) -> tuple[str, datetime]:
        now = int(time.time())
        exp = now + self.ttl_seconds
        token = jwt.encode(
            {"sub": sandbox_id, "tv": version, "iat": now, "exp": exp, "typ": "sandbox"},
            self._secret,
            algorithm=ALGORITHM,
        )
        return token, datetime.fromtimestamp(exp, timezone.utc)

    def envd_token(self, sandbox_id: str, version: int) -> str:
        """E2B's `envdAccessToken`: as in E2B, one token per sandbox for its life, not one per call. It is
        derived from the sandbox id and token version, so the gateway can check the signed file URLs the SDK
        builds from it (`download_url`); a kill bumps the version and revokes it with the others."""
        return jwt.encode({"sub": sandbox_id, "tv": version, "exp": ENVD_EXPIRES, "typ": "sandbox"}, self._secret,
                          algorithm=ALGORITHM)

    def verify(self, token: str) -> SandboxClaims:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except jwt.PyJWTError:
            raise TokenInvalid("invalid sandbox token") from None
        if claims.get("typ") != "sandbox" or not isinstance(claims.get("sub"), str):
            raise TokenInvalid("invalid sandbox token")
        return SandboxClaims(claims["sub"], int(claims.get("tv", 0)), datetime.fromtimestamp(claims["exp"], timezone.utc))

    # Signed upload URLs: the template builder PUTs without any auth header, so the URL carries its own
    # credential (an HMAC over the path and expiry), like a presigned object-store URL.
    def sign_upload(self, files_hash: str, expires: int) -> str:
        msg = f"upload:{files_hash}:{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def check_upload(self, files_hash: str, expires: int, signature: str) -> bool:
        if expires < time.time():
            return False
        # Bytes, not str: compare_digest raises TypeError on non-ASCII str, and the signature is user input.
        return hmac.compare_digest(self.sign_upload(files_hash, expires).encode(), signature.encode("utf-8", "replace"))

"""Per-sandbox JWTs (agent access through the gateway) and signed upload URLs.

The secret comes from SANDBOXD_JWT_SECRET or is generated once and kept in the data dir, so tokens
survive restarts. A sandbox token names one sandbox (`sub`), carries the sandbox's token version (`tv`:
killing a sandbox revokes every token it was given) and its dialect in `aud`:

- `hopx`: the HopX `auth_token`, sent as `Authorization: Bearer` (or `?token=` on a WebSocket upgrade).
  It lives `token_ttl_seconds` and carries a refresh generation (`gen`): `/token/refresh` moves the
  sandbox to the next generation, and the previous one is still accepted for `token_refresh_grace_seconds`
  (requests already in flight finish), then never again. Older generations die at once. The generation is
  kept in the sandbox's row, so a restart does not bring a refreshed-away token back.
- `e2b`: E2B's `envdAccessToken`, sent as `X-Access-Token` / `E2B-Traffic-Access-Token` and used to sign
  file URLs. As in E2B it is one token for the sandbox's life (the SDK keeps it), so it is derived from the
  sandbox alone; it expires `envd_token_ttl_seconds` after the sandbox was created.

Each place that takes a token names the dialect it expects: a HopX token is no E2B access token, and the
reverse.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import jwt
from sqlalchemy import select, update

from sandboxd.errors import NotFound, Unauthorized

ALGORITHM = "HS256"
HOPX, E2B = "hopx", "e2b"  # the `aud` of each dialect's tokens
DEFAULT_ENVD_TTL = 30 * 24 * 3600


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
    generation: int = 0


class Generations:
    """The current HopX refresh generation of each sandbox and until when the previous one is accepted.

    Read on every gateway request, so it is cached in memory (a sandbox row is read once); refreshes are
    the only writers and go through here, in this process."""

    def __init__(self, store, grace_seconds: float):
        self.store = store
        self.grace = grace_seconds
        self._cache: dict[str, tuple[int, float]] = {}  # sandbox -> (generation, previous accepted until)

    def _load(self, sid: str) -> tuple[int, float]:
        from sandboxd.core.store.tables import SandboxRow

        with self.store.tx() as s:
            row = s.execute(select(SandboxRow.token_generation, SandboxRow.token_grace_until)
                            .where(SandboxRow.id == sid)).first()
        state = (0, 0.0) if row is None else (row[0] or 0, row[1].timestamp() if row[1] else 0.0)
        if len(self._cache) > 20000:  # sandboxes long gone
            self._cache.clear()
        self._cache[sid] = state
        return state

    def accepts(self, sid: str, generation: int) -> bool:
        current, grace_until = self._cache.get(sid) or self._load(sid)
        return generation == current or (generation == current - 1 and time.time() < grace_until)

    def current(self, sid: str) -> int:
        return (self._cache.get(sid) or self._load(sid))[0]

    def born(self, sid: str) -> None:
        """A sandbox just made is at generation 0: its first gateway request need not read its row."""
        self._cache[sid] = (0, 0.0)

    def advance(self, sid: str) -> int:
        from sandboxd.core.store.tables import SandboxRow

        until = datetime.now(timezone.utc) + timedelta(seconds=self.grace)
        with self.store.tx() as s:
            new = s.execute(update(SandboxRow).where(SandboxRow.id == sid)
                            .values(token_generation=SandboxRow.token_generation + 1, token_grace_until=until)
                            .returning(SandboxRow.token_generation)).scalar()
        if new is None:
            raise NotFound(f"sandbox {sid} not found", code="sandbox_not_found")
        self._cache[sid] = (new, until.timestamp())
        return new


class TokenSigner:
    def __init__(self, secret: bytes, ttl_seconds: int, *, envd_ttl_seconds: int = DEFAULT_ENVD_TTL,
                 grace_seconds: float = 60.0, store=None):
        self._secret = secret
        self.ttl_seconds = ttl_seconds
        self.envd_ttl_seconds = envd_ttl_seconds
        # Without a store (unit tests of the signer alone) tokens carry generation 0 and refresh revokes nothing.
        self.generations = Generations(store, grace_seconds) if store is not None else None
        # Tokens whose signature and shape were checked: every gateway request presents one, and decoding it
        # (base64, JSON, HMAC) was 7 % of the gateway's CPU on a stream of commands. Expiry and generation
        # are still checked on every use.
        self._verified: dict[tuple[str, str], SandboxClaims] = {}

    def born(self, sandbox_id: str) -> None:
        if self.generations:
            self.generations.born(sandbox_id)

    def issue(self, sandbox_id: str, version: int, generation: int = 0) -> tuple[str, datetime]:
        """A HopX token."""
        now = int(time.time())
        exp = now + self.ttl_seconds
        token = jwt.encode(
            {"sub": sandbox_id, "tv": version, "gen": generation, "iat": now, "exp": exp, "typ": "sandbox",
             "aud": HOPX},
            self._secret,
            algorithm=ALGORITHM,
        )
        return token, datetime.fromtimestamp(exp, timezone.utc)

    def refresh(self, sandbox_id: str, version: int) -> tuple[str, datetime]:
        """A new HopX token; the sandbox's earlier ones stop working after the grace period."""
        generation = self.generations.advance(sandbox_id) if self.generations else 0
        return self.issue(sandbox_id, version, generation)

    def another(self, sandbox_id: str, version: int) -> tuple[str, datetime]:
        """A new HopX token of the sandbox's current generation: the ones its other clients hold keep working."""
        return self.issue(sandbox_id, version, self.generations.current(sandbox_id) if self.generations else 0)

    def envd_token(self, sandbox_id: str, version: int, created_at: datetime) -> str:
        """E2B's `envdAccessToken`: as in E2B, one token per sandbox for its life, not one per call. It is
        derived from the sandbox alone (id, token version, creation time), so the gateway can check the
        signed file URLs the SDK builds from it (`download_url`); a kill bumps the version and revokes it."""
        exp = int(created_at.timestamp()) + self.envd_ttl_seconds
        return jwt.encode({"sub": sandbox_id, "tv": version, "exp": exp, "typ": "sandbox", "aud": E2B},
                          self._secret, algorithm=ALGORITHM)

    def verify(self, token: str, dialect: str = HOPX) -> SandboxClaims:
        """The claims of a live token of `dialect`; a HopX token must also be of an accepted generation."""
        claims = self._verified.get((token, dialect))
        if claims is None:
            claims = self._decode(token, dialect)
            if len(self._verified) >= 4096:
                self._verified.clear()
            self._verified[(token, dialect)] = claims
        if claims.expires_at.timestamp() <= time.time():
            raise TokenExpired("token expired")
        if dialect == HOPX and self.generations and not self.generations.accepts(claims.sandbox_id, claims.generation):
            raise TokenInvalid("token revoked: a newer one was issued by /token/refresh")
        return claims

    def _decode(self, token: str, dialect: str) -> SandboxClaims:
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=dialect,
                                options={"require": ["exp", "sub"]})  # aud: by `audience`
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid(f"not a {dialect} sandbox token") from None
        except jwt.PyJWTError:
            raise TokenInvalid("invalid sandbox token") from None
        if claims.get("typ") != "sandbox" or not isinstance(claims.get("sub"), str):
            raise TokenInvalid("invalid sandbox token")
        generation = claims.get("gen", 0)
        if not isinstance(generation, int) or not isinstance(claims.get("tv", 0), int):
            raise TokenInvalid("invalid sandbox token")
        expires = datetime.fromtimestamp(claims["exp"], timezone.utc)
        return SandboxClaims(claims["sub"], claims.get("tv", 0), expires, generation)

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

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from sandboxd.api.ratelimit import RateLimiter
from sandboxd.core.tokens import E2B, HOPX, TokenExpired, TokenInvalid, TokenSigner, load_secret


def test_token_round_trip_and_lifetime(tmp_path):
    signer = TokenSigner(load_secret(None, tmp_path), 25 * 3600)
    token, exp = signer.issue("sb1", 3)
    claims = signer.verify(token)
    assert (claims.sandbox_id, claims.version) == ("sb1", 3)
    assert exp.timestamp() - time.time() >= 24 * 3600
    assert load_secret(None, tmp_path) == load_secret(None, tmp_path)  # kept across restarts


def test_token_refusals(tmp_path):
    signer = TokenSigner(b"s" * 32, 3600)
    with pytest.raises(TokenInvalid):
        signer.verify(TokenSigner(b"t" * 32, 3600).issue("sb1", 1)[0])
    with pytest.raises(TokenExpired):
        signer.verify(jwt.encode({"sub": "sb1", "exp": int(time.time()) - 1, "typ": "sandbox", "aud": "hopx"},
                                 b"s" * 32))
    with pytest.raises(TokenInvalid):  # an API-key-shaped JWT of another type is not a sandbox token
        signer.verify(jwt.encode({"sub": "sb1", "exp": int(time.time()) + 60, "typ": "other", "aud": "hopx"},
                                 b"s" * 32))
    with pytest.raises(TokenInvalid):  # a token of no dialect (as issued before dialects) is refused
        signer.verify(jwt.encode({"sub": "sb1", "exp": int(time.time()) + 60, "typ": "sandbox"}, b"s" * 32))


def test_each_dialect_takes_only_its_own_tokens():
    signer = TokenSigner(b"s" * 32, 3600)
    hopx, _ = signer.issue("sb1", 1)
    envd = signer.envd_token("sb1", 1, datetime.now(timezone.utc))
    assert signer.verify(hopx, HOPX).sandbox_id == signer.verify(envd, E2B).sandbox_id == "sb1"
    with pytest.raises(TokenInvalid):
        signer.verify(envd, HOPX)
    with pytest.raises(TokenInvalid):
        signer.verify(hopx, E2B)


def test_envd_token_is_one_per_sandbox_and_ends_with_its_lifetime():
    signer = TokenSigner(b"s" * 32, 3600, envd_ttl_seconds=7200)
    created = datetime.now(timezone.utc)
    token = signer.envd_token("sb1", 1, created)
    assert token == signer.envd_token("sb1", 1, created)  # the SDK keeps it; the gateway derives it again
    claims = signer.verify(token, E2B)
    assert claims.expires_at.timestamp() == int(created.timestamp()) + 7200
    old = signer.envd_token("sb1", 1, created - timedelta(seconds=7201))
    with pytest.raises(TokenExpired):
        signer.verify(old, E2B)


def test_refresh_ends_the_previous_token_after_the_grace(tmp_path):
    """Generations against a real store: the grace is a point in time, so the test moves the clock by
    writing the row's grace end into the past, as time passing would."""
    from sqlalchemy import update

    from sandboxd.core.store.db import Store, make_engine, upgrade
    from sandboxd.core.store.tables import SandboxRow

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    store = Store(engine)
    now = datetime.now(timezone.utc)
    with store.tx() as s:
        s.add(SandboxRow(id="sb1", status="running", vcpu=1, memory_mb=64, disk_mb=64, created_at=now))
    signer = TokenSigner(b"s" * 32, 3600, grace_seconds=60, store=store)
    first, _ = signer.issue("sb1", 1)
    second, _ = signer.refresh("sb1", 1)
    assert signer.verify(first).generation == 0 and signer.verify(second).generation == 1  # within the grace
    third, _ = signer.refresh("sb1", 1)
    with pytest.raises(TokenInvalid):  # two refreshes back: gone at once
        signer.verify(first)
    assert signer.verify(second) and signer.verify(third)
    with store.tx() as s:
        s.execute(update(SandboxRow).values(token_grace_until=now - timedelta(seconds=1)))
    restarted = TokenSigner(b"s" * 32, 3600, grace_seconds=60, store=store)  # reads the row, as after a restart
    with pytest.raises(TokenInvalid):
        restarted.verify(second)
    assert restarted.verify(third).generation == 2


def test_upload_signatures(tmp_path):
    signer = TokenSigner(b"s" * 32, 3600)
    exp = int(time.time()) + 60
    sig = signer.sign_upload("abcdefgh", exp)
    assert signer.check_upload("abcdefgh", exp, sig)
    assert not signer.check_upload("abcdefgX", exp, sig)
    assert not signer.check_upload("abcdefgh", exp + 1, sig)
    old = int(time.time()) - 1
    assert not signer.check_upload("abcdefgh", old, signer.sign_upload("abcdefgh", old))


def test_rate_limiter_counts_per_bucket_and_window():
    rl = RateLimiter(3)
    results = [rl.hit("a") for _ in range(4)]
    if len({r[3] for r in results}) == 1:  # same window (a minute boundary may fall in between)
        assert [r[0] for r in results] == [True, True, True, False]
        assert [r[2] for r in results] == [2, 1, 0, 0]
    first, second = rl.hit("c", limit=1), rl.hit("c", limit=1)
    if first[3] == second[3]:
        assert first[0] and not second[0]
    assert rl.hit("b")[0]  # buckets are independent
    ok, limit, remaining, reset = rl.hit("d", limit=10)
    assert ok and limit == 10 and remaining == 9 and reset % 60 == 0 and reset > time.time()


def test_every_event_stream_route_may_take_its_key_in_the_url_and_nothing_else():
    """`?token=` is allowed by path (api/auth.py): the SSE routes must keep the `/stream` ending it relies on."""
    from starlette.requests import HTTPConnection

    from sandboxd.api.auth import query_token_allowed
    from sandboxd.api.routes import sandboxes, streams

    def allowed(method: str, path: str) -> bool:
        return query_token_allowed(HTTPConnection({"type": "http", "method": method, "path": path, "headers": []}))

    stream_paths = [r.path.replace("{sandbox_id}", "sb1") for r in streams.router.routes]
    assert stream_paths and all(allowed("GET", p) for p in stream_paths)
    rest = [r.path.replace("{sandbox_id}", "sb1") for r in sandboxes.router.routes]
    assert rest and not any(allowed(m, p) for p in rest for m in ("GET", "POST", "DELETE"))


def test_a_token_checked_before_still_expires_and_keeps_its_dialect(monkeypatch):
    signer = TokenSigner(b"s" * 32, 60)
    token, _ = signer.issue("sb1", 1)
    assert signer.verify(token).sandbox_id == "sb1"  # decoded, then remembered
    with pytest.raises(TokenInvalid):
        signer.verify(token, E2B)  # the remembered claims are per dialect
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(TokenExpired):
        signer.verify(token)

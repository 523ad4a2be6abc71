from __future__ import annotations

import time

import jwt
import pytest

from sandboxd.api.ratelimit import RateLimiter
from sandboxd.core.tokens import TokenExpired, TokenInvalid, TokenSigner, load_secret


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
        signer.verify(jwt.encode({"sub": "sb1", "exp": int(time.time()) - 1, "typ": "sandbox"}, b"s" * 32))
    with pytest.raises(TokenInvalid):  # an API-key-shaped JWT of another type is not a sandbox token
        signer.verify(jwt.encode({"sub": "sb1", "exp": int(time.time()) + 60, "typ": "other"}, b"s" * 32))


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

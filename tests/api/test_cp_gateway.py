"""The gateway: token routing, refusals, streaming bodies both ways, WebSockets, keep-alive across sandboxes."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import httpx
import jwt
import pytest
import websockets


def bearer(sb) -> dict:
    return {"Authorization": f"Bearer {sb['auth_token']}"}


@pytest.fixture
def two(client):
    sbs = [client.post("/v1/sandboxes", json={"template_name": "base"}).json() for _ in range(2)]
    yield sbs
    for sb in sbs:
        client.delete(f"/v1/sandboxes/{sb['id']}")


def test_refusals_use_the_contract_codes(cp, two):
    a, b = two
    cases = [
        ({}, 401, "UNAUTHORIZED"),
        ({"Authorization": "Bearer not-a-jwt"}, 401, "INVALID_TOKEN"),
        ({**bearer(a), "X-Sandbox-Id": b["id"]}, 401, "INVALID_TOKEN"),
    ]
    secret = (cp.data_dir / "jwt_secret").read_bytes().strip()
    expired = jwt.encode({"sub": a["id"], "tv": 1, "iat": 1, "exp": int(time.time()) - 10, "typ": "sandbox"}, secret,
                         algorithm="HS256")
    cases.append(({"Authorization": f"Bearer {expired}"}, 401, "TOKEN_EXPIRED"))
    forged = jwt.encode({"sub": a["id"], "tv": 1, "exp": int(time.time()) + 99, "typ": "sandbox"}, b"x" * 32,
                        algorithm="HS256")
    cases.append(({"Authorization": f"Bearer {forged}"}, 401, "INVALID_TOKEN"))
    with httpx.Client(base_url=cp.gateway) as c:  # one keep-alive connection survives every refusal
        for headers, status, code in cases:
            r = c.get("/health", headers=headers)
            assert (r.status_code, r.json()["code"]) == (status, code), headers
            assert r.json()["error"]["code"] == code and r.headers["x-request-id"]
        assert c.get("/health", headers={**bearer(a), "X-Sandbox-Id": a["id"]}).status_code == 200


def test_one_keepalive_connection_reaches_different_sandboxes(cp, two):
    a, b = two
    with httpx.Client(base_url=cp.gateway, limits=httpx.Limits(max_connections=1)) as c:
        for _ in range(3):
            for sb in (a, b):
                r = c.post("/commands/run", headers=bearer(sb), json={"command": "echo $SANDBOXD_SANDBOX_ID"})
                assert r.json()["stdout"].strip() == sb["id"]


def test_uploads_and_downloads_stream_through(cp, sandbox):
    payload = os.urandom(24 * 1024 * 1024 + 123)
    digest = hashlib.sha256(payload).hexdigest()

    def chunks():
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]

    with httpx.Client(base_url=cp.gateway, headers=bearer(sandbox), timeout=60) as c:
        r = c.post("/files/upload", params={"path": "big.bin"}, content=chunks())  # chunked request body
        assert r.status_code == 200 and r.json()["size"] == len(payload), r.text
        r = c.put("/files/upload", params={"path": "big2.bin"}, content=payload)  # Content-Length body
        assert r.json()["size"] == len(payload)
        h = hashlib.sha256()
        with c.stream("GET", "/files/download", params={"path": "big.bin"}) as resp:
            assert resp.status_code == 200
            for part in resp.iter_bytes():
                h.update(part)
        assert h.hexdigest() == digest
        r = c.get("/files/read", params={"path": "missing.txt"})
        assert r.status_code == 404 and r.json()["code"] == "FILE_NOT_FOUND"


def test_websockets_pass_through(cp, sandbox):
    url = cp.gateway.replace("http://", "ws://")

    async def run():
        async with websockets.connect(url + "/execute/stream", additional_headers=bearer(sandbox),
                                      proxy=None) as ws:
            await ws.send(json.dumps({"type": "execute", "code": "print('via gateway')", "language": "python",
                                      "timeout": 30}))
            seen = []
            async for raw in ws:
                msg = json.loads(raw)
                seen.append(msg)
                if msg.get("type") == "complete":
                    break
            return seen

    seen = asyncio.run(asyncio.wait_for(run(), 60))
    assert any(m.get("type") == "stdout" and "via gateway" in m.get("data", "") for m in seen), seen
    assert seen[-1]["type"] == "complete"

    async def refused():
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            async with websockets.connect(url + "/terminal", proxy=None):
                pass
        return e.value.response.status_code

    assert asyncio.run(refused()) == 401


def test_a_browser_page_from_another_origin_reaches_the_files_api(cp, sandbox):
    """The dashboard's calls (docs/dashboard.md): a preflight the gateway answers without a token, then the
    call itself, readable cross-origin; credentials are never allowed."""
    origin = {"Origin": cp.base}
    pre = httpx.options(cp.gateway + "/files/upload", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"] and int(pre.headers["access-control-max-age"]) > 0
    r = httpx.post(cp.gateway + "/files/upload", params={"path": "cors.txt"}, content=b"cross",
                   headers={**origin, **bearer(sandbox), "Content-Type": "application/octet-stream"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*", r.text
    r = httpx.get(cp.gateway + "/files/download", params={"path": "cors.txt"}, headers={**origin, **bearer(sandbox)})
    assert r.content == b"cross" and "content-disposition" in r.headers["access-control-expose-headers"].lower()
    refused = httpx.get(cp.gateway + "/files/list", headers=origin)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "*"
    for answer in (pre, r, refused):
        assert "access-control-allow-credentials" not in answer.headers
    assert "access-control-allow-origin" not in httpx.get(cp.gateway + "/files/list", headers=bearer(sandbox)).headers


def test_an_e2b_client_at_another_servers_gateway_is_told_so(cp, two):
    """A sandbox this gateway does not route, named with a token some other server signed, is a "not found on
    this gateway" (where E2B_SANDBOX_URL leads), not a bad token; a known sandbox's bad token stays a 401."""
    elsewhere = "sb" + "0" * 18
    with httpx.Client(base_url=cp.gateway) as c:
        for sid, status in ((elsewhere, 502), (two[0]["id"], 401)):
            r = c.get("/health", headers={"E2b-Sandbox-Id": sid, "E2b-Sandbox-Port": "49983",
                                          "X-Access-Token": "signed-by-another-server"})
            assert r.status_code == status, r.text
        assert "E2B_SANDBOX_URL" in c.get("/health", headers={"E2b-Sandbox-Id": elsewhere,
                                                              "X-Access-Token": "x"}).text

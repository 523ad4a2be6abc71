"""Gateway: `?token=` on WebSocket upgrades (browsers cannot set headers) and the public host forwarded to
agents, through a real `sandboxd serve` (fake backend) whose public host is configured."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import httpx
import pytest
import websockets

from support.server import CPServer
from sandboxd.gateway.heads import take_query_param
from sandboxd.gateway.proxy import parse_head

PUBLIC = "https://sbx.example.test:9443"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = CPServer(tmp_path_factory.mktemp("j-gw"), None, SANDBOXD_PUBLIC_HOST=PUBLIC).start()
    yield s
    s.close()


@pytest.fixture
def sb(srv):
    with srv.client() as c:
        r = c.post("/v1/sandboxes", json={"template_name": "base"})
        assert r.status_code == 201, r.text
        yield r.json()
        c.delete(f"/v1/sandboxes/{r.json()['id']}")


async def _terminal_echo(url: str) -> str:
    async with websockets.connect(url, proxy=None) as ws:
        await ws.send(json.dumps({"type": "input", "data": "pwd; echo tok-$((6*7))\n"}))
        seen = ""
        while "tok-42" not in seen:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
            seen += msg.get("data", "")
        return seen


def test_websocket_upgrade_accepts_token_in_query(srv, sb):
    ws = srv.gateway.replace("http://", "ws://")
    out = asyncio.run(_terminal_echo(f"{ws}/terminal?cwd=/tmp&token={quote(sb['auth_token'])}"))
    assert "tok-42" in out and "/tmp" in out  # the other query parameters still reach the agent


def test_query_token_refusals(srv, sb):
    ws = srv.gateway.replace("http://", "ws://")

    async def status(url: str) -> int:
        with pytest.raises(websockets.exceptions.InvalidStatus) as e:
            async with websockets.connect(url, proxy=None):
                pass
        return e.value.response.status_code

    assert asyncio.run(status(f"{ws}/terminal?token=not-a-jwt")) == 401
    # Plain HTTP requests do not take a token from the URL (it would end up in logs): header only.
    r = httpx.get(f"{srv.gateway}/health?token={sb['auth_token']}", timeout=10)
    assert r.status_code == 401


def test_agent_sees_the_public_host(srv, sb):
    r = httpx.get(f"{srv.gateway}/desktop/vnc/status", headers={"Authorization": f"Bearer {sb['auth_token']}"},
                  timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["websocket_url"] == "wss://sbx.example.test:9443/desktop/vnc/websocket"
    # Spoofed forwarding headers cannot override the configured public host.
    r = httpx.get(f"{srv.gateway}/desktop/vnc/status", timeout=30,
                  headers={"Authorization": f"Bearer {sb['auth_token']}", "X-Forwarded-Host": "evil.test"})
    assert r.json()["url"].startswith("wss://sbx.example.test:9443/")


def test_take_query_param_strips_only_the_token():
    head = parse_head(b"GET /desktop/vnc/websocket?a=1&token=abc%2Bd&b=x%20y HTTP/1.1\r\nHost: h\r\n\r\n", True)
    assert take_query_param(head, "token") == "abc+d"
    assert head.target == "/desktop/vnc/websocket?a=1&b=x%20y"
    assert head.raw.startswith(b"GET /desktop/vnc/websocket?a=1&b=x%20y HTTP/1.1\r\nHost: h\r\n")
    head = parse_head(b"GET /t?token=only HTTP/1.0\r\n\r\n", True)  # HTTP/1.1 requires a Host header
    assert take_query_param(head, "token") == "only" and head.raw == b"GET /t HTTP/1.0\r\n\r\n"

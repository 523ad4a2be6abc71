"""gateway/routing.py: which sandbox a request is for, from its HopX token and the live routes."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandboxd.core.routes import RouteTable, SandboxRoute
from sandboxd.core.tokens import TokenSigner
from sandboxd.errors import NotFound
from sandboxd.gateway.framing import parse_head
from sandboxd.gateway.proxy import GatewayError
from sandboxd.gateway.routing import BearerResolver, named_sandbox, route_for

SOCK = Path("/run/x/agent.sock")


class Lifecycle:
    """The two things routing reads: the routes, and (for a sandbox without one) its row's status."""

    def __init__(self, rows: dict[str, str]):
        self.routes = RouteTable()
        self.rows = rows

    def get(self, sid: str):
        if sid not in self.rows:
            raise NotFound(f"sandbox {sid} not found")
        return SimpleNamespace(status=self.rows[sid])

    async def resume_on_traffic(self, sid: str) -> bool:
        """Sandboxes whose id says so were created to resume on traffic."""
        if not sid.startswith("sb-wakes"):
            return False
        self.rows[sid] = "running"
        self.routes.set_status(sid, "running")
        return True


def _lc(status="running", version=2) -> Lifecycle:
    lc = Lifecycle({"sb1": status, "sb-stopped": "stopped"})
    lc.routes.put("sb1", SandboxRoute(SOCK, status, version))
    return lc


def _status(fn) -> tuple[int, str]:
    with pytest.raises(GatewayError) as info:
        fn()
    return info.value.status, info.value.code


def test_route_for_a_running_sandbox():
    target = route_for(_lc(), "sb1", 2)
    assert (target.socket, target.sandbox_id) == (SOCK, "sb1")
    assert route_for(_lc(), "sb1", None).socket == SOCK  # no version: nothing to revoke against


def test_route_for_refusals():
    assert _status(lambda: route_for(_lc(), "sb1", 1)) == (401, "INVALID_TOKEN")  # revoked version
    assert _status(lambda: route_for(_lc("paused"), "sb1", 2)) == (409, "SANDBOX_PAUSED")
    assert _status(lambda: route_for(_lc("creating"), "sb1", 2)) == (409, "SANDBOX_NOT_RUNNING")
    assert _status(lambda: route_for(_lc(), "sb-stopped", None)) == (409, "SANDBOX_NOT_RUNNING")
    assert _status(lambda: route_for(_lc(), "sb-killed", None)) == (401, "INVALID_TOKEN")


def _head(target="/commands/run", **headers) -> object:
    lines = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return parse_head(f"GET {target} HTTP/1.1\r\nHost: gw\r\n{lines}\r\n".encode())


def test_named_sandbox_reads_either_header():
    assert named_sandbox(_head(X_Sandbox_Id="a")) == "a"
    assert named_sandbox(_head(E2b_Sandbox_Id="b")) == "b"
    assert named_sandbox(_head()) is None


def test_bearer_resolver():
    signer = TokenSigner(b"k" * 32, 3600)
    resolve = BearerResolver(signer, _lc())
    token, _ = signer.issue("sb1", 2)
    run = asyncio.run
    assert run(resolve(_head(Authorization=f"Bearer {token}"))).socket == SOCK
    assert run(resolve(_head())) is None  # no token: another resolver's request
    with pytest.raises(GatewayError) as info:
        run(resolve(_head(Authorization=f"Bearer {token}", X_Sandbox_Id="sb2")))
    assert info.value.status == 401
    old, _ = signer.issue("sb1", 1)
    with pytest.raises(GatewayError):
        run(resolve(_head(Authorization=f"Bearer {old}")))
    e2b = signer.envd_token("sb1", 2, datetime.now(timezone.utc))  # E2B's tokens are not Bearer tokens here
    with pytest.raises(GatewayError):
        run(resolve(_head(Authorization=f"Bearer {e2b}")))


def test_websocket_token_in_the_query_is_taken_out():
    signer = TokenSigner(b"k" * 32, 3600)
    token, _ = signer.issue("sb1", 2)
    head = _head(f"/desktop/vnc?token={token}&x=1", Upgrade="websocket", Connection="Upgrade")
    assert asyncio.run(BearerResolver(signer, _lc())(head)).sandbox_id == "sb1"
    assert head.target == "/desktop/vnc?x=1"  # never reaches the sandbox
    plain = _head(f"/desktop/vnc?token={token}")  # not an upgrade: the query is the app's
    assert asyncio.run(BearerResolver(signer, _lc())(plain)) is None


def test_a_paused_sandbox_created_to_resume_on_traffic_resumes_for_its_token():
    signer = TokenSigner(b"k" * 32, 3600)
    lc = _lc("paused")
    lc.routes.put("sb-wakes", SandboxRoute(SOCK, "paused", 1))
    resolve = BearerResolver(signer, lc)
    wakes, _ = signer.issue("sb-wakes", 1)
    assert asyncio.run(resolve(_head(Authorization=f"Bearer {wakes}"))).sandbox_id == "sb-wakes"
    assert lc.routes.get("sb-wakes").status == "running"
    stays, _ = signer.issue("sb1", 2)
    with pytest.raises(GatewayError) as info:
        asyncio.run(resolve(_head(Authorization=f"Bearer {stays}")))
    assert (info.value.status, info.value.code) == (409, "SANDBOX_PAUSED")

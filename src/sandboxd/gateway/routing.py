"""Which sandbox a gateway request is for: the sandbox's HopX JWT (Bearer, or `?token=` on a WebSocket
upgrade), checked against the live routes. E2B access tokens go through gateway/e2b.py only.

A request may also name its sandbox (header `X-Sandbox-Id` or `E2b-Sandbox-Id`); a token for another
sandbox is then refused.
"""
from __future__ import annotations

import time

from sandboxd.errors import NotFound, Unauthorized
from sandboxd.core.eviction import EVICTED
from sandboxd.core.lifecycle import LifecycleService
from sandboxd.core.models import PAUSED, RUNNING
from sandboxd.core.tokens import HOPX, TokenSigner
from sandboxd.gateway.heads import bearer, is_websocket, take_query_param
from sandboxd.gateway.proxy import GatewayError, Head, Target


def named_sandbox(head: Head) -> str | None:
    return head.header("x-sandbox-id") or head.header("e2b-sandbox-id")


def route_for(lifecycle: LifecycleService, sandbox_id: str, version: int | None) -> Target:
    route = lifecycle.routes.get(sandbox_id)
    if route is None:
        try:
            sb = lifecycle.get(sandbox_id)
        except NotFound:
            raise GatewayError(401, "INVALID_TOKEN", "the sandbox was killed; its tokens are revoked",
                               {"sandbox_id": sandbox_id}) from None
        raise GatewayError(409, "SANDBOX_NOT_RUNNING", f"sandbox is {sb.status}", {"status": sb.status})
    if version is not None and version != route.token_version:
        raise GatewayError(401, "INVALID_TOKEN", "token revoked", {"sandbox_id": sandbox_id})
    if route.status in (PAUSED, EVICTED):  # an evicted one comes back on traffic (core/eviction.py)
        raise GatewayError(409, "SANDBOX_PAUSED", "sandbox is paused; resume it first", {"status": route.status})
    route.used = time.monotonic()
    if route.status != RUNNING:
        raise GatewayError(409, "SANDBOX_NOT_RUNNING", f"sandbox is {route.status}", {"status": route.status})
    return Target(route.socket, sandbox_id)


# The agent's routes only the host calls, over its own socket (agent/park.py): never through the gateway.
HOST_ONLY = ("/checkpoint/",)


class BearerResolver:
    def __init__(self, signer: TokenSigner, lifecycle: LifecycleService):
        self.signer = signer
        self.lifecycle = lifecycle

    async def __call__(self, head: Head) -> Target | None:
        token = bearer(head)
        if token is None:
            if not is_websocket(head):
                return None
            # Browsers (noVNC) cannot set headers on a WebSocket: the token may come as ?token=, and is
            # stripped before forwarding so it never reaches the sandbox.
            token = take_query_param(head, "token")
            if not token:
                return None
        try:
            claims = self.signer.verify(token, HOPX)  # an E2B access token is no Bearer token
        except Unauthorized as exc:
            raise GatewayError(401, exc.code, exc.message) from None
        if head.target.split("?", 1)[0].startswith(HOST_ONLY):
            raise GatewayError(404, "NOT_FOUND", f"no such endpoint: {head.target.split('?', 1)[0]}")
        named = named_sandbox(head)
        if named and named != claims.sandbox_id:
            raise GatewayError(401, "INVALID_TOKEN", "token belongs to another sandbox",
                               {"sandbox_id": named})
        try:
            return route_for(self.lifecycle, claims.sandbox_id, claims.version)
        except GatewayError as exc:
            # A sandbox created to resume on traffic (E2B's auto_resume, docs/e2b.md) does so for its token too.
            if exc.code != "SANDBOX_PAUSED" or not await self.lifecycle.resume_on_traffic(claims.sandbox_id):
                raise
        return route_for(self.lifecycle, claims.sandbox_id, claims.version)

"""The E2B routing hook for the gateway.

With `E2B_SANDBOX_URL` set, the official SDK sends every sandbox request (envd on 49983, the code
interpreter on 49999) to one URL and names the target in `E2b-Sandbox-Id` / `E2b-Sandbox-Port`.
This resolver picks the sandbox from those headers, checks the token the SDK carries
(`X-Access-Token`, or `E2B-Traffic-Access-Token` on code-interpreter calls that send no access token)
and rewrites the path to the agent's E2B prefix: `/files` on port 49983 becomes `/e2b/49983/files`.

A token is the sandbox's JWT (the `envdAccessToken` the E2B create/connect routes return); one issued
for another sandbox, or revoked by a kill, is refused. Errors use 502 + "was not found" for a sandbox
that is gone, which the SDK turns into SandboxNotRunningException, as E2B's own proxy does.
"""
from __future__ import annotations

from sandboxd.core.errors import Unauthorized
from sandboxd.core.models import RUNNING
from sandboxd.gateway.proxy import GatewayError, Head, Target

ENVD_PORT, JUPYTER_PORT = 49983, 49999
PORTS = {ENVD_PORT, JUPYTER_PORT}
PREFIX = "/e2b"
# envd's internal routes that must never be reachable from outside (contracts/e2b.md §2.4).
INTERNAL = ("/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze", "/fsthaw", "/upgrade")


class E2BResolver:
    def __init__(self, signer, lifecycle):
        self.signer = signer
        self.lifecycle = lifecycle

    async def __call__(self, head: Head) -> Target | None:
        sid = head.header("e2b-sandbox-id")
        if not sid:
            return None  # not an E2B request: let the next resolver (Bearer) decide
        token = head.header("x-access-token") or head.header("e2b-traffic-access-token")
        if not token and (head.header("authorization") or "")[:7].lower() == "bearer ":
            return None  # our own clients may name the sandbox this way too: the Bearer resolver decides
        port = self._port(head)
        if not token:
            raise GatewayError(401, "unauthenticated", "missing X-Access-Token for this sandbox")
        try:
            claims = self.signer.verify(token.strip())
        except Unauthorized as exc:
            raise GatewayError(401, "unauthenticated", f"invalid access token: {exc.message}") from None
        if claims.sandbox_id != sid:
            raise GatewayError(401, "unauthenticated", "the access token belongs to another sandbox")
        route = self.lifecycle.routes.get(sid)
        if route is None or claims.version != route.token_version:
            raise GatewayError(502, "unavailable", f"The sandbox {sid} was not found",
                               {"sandbox_id": sid})
        if route.status != RUNNING:
            raise GatewayError(502, "unavailable", f"The sandbox {sid} is {route.status} and was not found running; "
                               "connect to it to resume", {"sandbox_id": sid, "status": route.status})
        rewrite(head, port)
        return Target(route.socket, sid)

    @staticmethod
    def _port(head: Head) -> int:
        raw = head.header("e2b-sandbox-port") or str(ENVD_PORT)
        try:
            port = int(raw)
        except ValueError:
            raise GatewayError(400, "invalid_argument", f"invalid E2b-Sandbox-Port: {raw!r}") from None
        if port not in PORTS:
            # "port is not open" is the phrase the SDK maps to SandboxUnreachableException.
            raise GatewayError(502, "unavailable", f"The sandbox port is not open: {port} (only envd "
                               f"{ENVD_PORT} and the code interpreter {JUPYTER_PORT} are served)")
        return port


def rewrite(head: Head, port: int) -> None:
    """Prefix the request target in place (both the parsed head and the raw bytes the proxy forwards)."""
    target = head.target
    path = target.split("?", 1)[0]
    if not target.startswith("/"):
        raise GatewayError(400, "invalid_argument", "absolute-form request targets are not supported")
    if path.startswith(PREFIX + "/") or (port == ENVD_PORT and path in INTERNAL):
        raise GatewayError(404, "not_found", f"no such endpoint: {path}")
    new = f"{PREFIX}/{port}{target}"
    first, sep, rest = head.raw.partition(b"\r\n")
    method, _, _ = first.partition(b" ")
    head.raw = method + b" " + new.encode("latin-1") + b" " + head.version.encode() + sep + rest
    head.target = new


def resolver(services) -> E2BResolver:
    return E2BResolver(services.signer, services.lifecycle)

"""The E2B routing hook for the gateway.

With `E2B_SANDBOX_URL` set, the official SDK sends every sandbox request (envd on 49983, the code
interpreter on 49999) to one URL and names the target in `E2b-Sandbox-Id` / `E2b-Sandbox-Port`.
This resolver picks the sandbox from those headers, checks the token the SDK carries
(`X-Access-Token`, or `E2B-Traffic-Access-Token` on code-interpreter calls that send no access token)
and rewrites the path to the agent's E2B prefix: `/files` on port 49983 becomes `/e2b/49983/files`.

Any other port is the sandbox's own (a web app a user started): the request goes, unchanged, through the
agent's CONNECT to that port on the sandbox's loopback. Those requests may also be routed by host, as
`sandbox.get_host(port)` builds it: `{port}-{sandboxID}.{any domain}` (point a wildcard DNS name, or a
TLS proxy, at the gateway). Like E2B, a sandbox's ports are public unless it was created with
`network.allowPublicTraffic: false`; then they need its token (`E2B-Traffic-Access-Token`).

A token is the sandbox's E2B JWT (the `envdAccessToken` the E2B create/connect routes return, `aud`
e2b); one issued for another sandbox, revoked by a kill, or of the HopX dialect is refused. A sandbox's
own ports also take its HopX token as `Authorization: Bearer`.

A signed file URL (`download_url`, `upload_url`) carries no token: its signature, made with the sandbox's
envd token, stands for it, and it authorises exactly what was signed: one operation (read = GET, write =
POST) of one path as one user. Its query may hold nothing but `path`, `username`, `signature` and
`signature_expiration`, each once; it may not name a user in an Authorization header either; and the
agent receives a target the gateway wrote from the checked values, never the client's own spelling (the
agent's decoding of `+` and `%` is not the gateway's).

Errors use 502 + "was not found" for a sandbox that is gone, which the SDK turns into
SandboxNotRunningException, as E2B's own proxy does.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_plus

from sandboxd.errors import Unauthorized
from sandboxd.core.eviction import EVICTED
from sandboxd.core.models import PAUSED, RUNNING
from sandboxd.core.tokens import E2B, HOPX
from sandboxd.gateway.heads import bearer
from sandboxd.gateway.proxy import GatewayError, Head, Target

if TYPE_CHECKING:
    from sandboxd.core.lifecycle import LifecycleService
    from sandboxd.core.tokens import TokenSigner

ENVD_PORT, JUPYTER_PORT = 49983, 49999
PORTS = {ENVD_PORT, JUPYTER_PORT}
PREFIX = "/e2b"
# envd's internal routes that must never be reachable from outside.
INTERNAL = ("/init", "/freeze", "/unfreeze", "/collapse", "/fsfreeze", "/fsthaw", "/upgrade")
SIGNED_PARAMS = ("path", "username", "signature", "signature_expiration")
OPERATIONS = {"GET": "read", "POST": "write"}
HOST_RE = re.compile(r"^(\d{1,5})-([A-Za-z0-9][A-Za-z0-9_-]{0,63})\.")  # {port}-{sandboxID}.{domain}


class E2BResolver:
    def __init__(self, signer: TokenSigner, lifecycle: LifecycleService) -> None:
        self.signer = signer
        self.lifecycle = lifecycle
        self._envd_tokens: dict[tuple[str, int], str] = {}  # (sandbox, token version) -> its envd token

    async def __call__(self, head: Head) -> Target | None:
        sid = head.header("e2b-sandbox-id")
        if sid:
            raw_port = head.header("e2b-sandbox-port") or str(ENVD_PORT)
        else:
            m = HOST_RE.match(head.header("host") or "")
            if m is None or m.group(2) not in self.lifecycle.routes:
                # A signed file URL on the shared URL names no sandbox: its signature does.
                return await self._signed_file(head, None)  # or, not an E2B request: the next resolver decides
            raw_port, sid = m.group(1), m.group(2)
        token = head.header("x-access-token") or head.header("e2b-traffic-access-token")
        port = self._port(raw_port)
        if port not in PORTS:
            return await self._user_port(head, sid, port, token)
        if not token and port == ENVD_PORT and (signed := await self._signed_file(head, sid)):
            return signed
        if not token and bearer(head) is not None:
            return None  # our own clients may name the sandbox this way too: the Bearer resolver decides
        if not token:
            raise GatewayError(401, "unauthenticated", "missing X-Access-Token for this sandbox")
        route = await self._awake_route(sid, token, E2B)
        rewrite(head, port)
        return Target(route.socket, sid)

    def _route(self, sid: str, token: str | None, dialect: str = E2B):
        """The sandbox's live route; `token`, when given, must be its current one of `dialect`."""
        route = self.lifecycle.routes.get(sid)
        if route is None:
            # Said before the token is looked at, as E2B's proxy does: a client whose E2B_SANDBOX_URL leads to
            # another server's gateway learns that, not that its token is bad.
            raise GatewayError(502, "unavailable", f"The sandbox {sid} was not found on this gateway: "
                               "E2B_SANDBOX_URL (or the domain) must lead to the gateway of the server that "
                               "created it", {"sandbox_id": sid})
        version = None
        if token:
            try:
                claims = self.signer.verify(token.strip(), dialect)
            except Unauthorized as exc:
                raise GatewayError(401, "unauthenticated", f"invalid access token: {exc.message}") from None
            if claims.sandbox_id != sid:
                raise GatewayError(401, "unauthenticated", "the access token belongs to another sandbox")
            version = claims.version
        if version is not None and version != route.token_version:
            raise GatewayError(502, "unavailable", f"The sandbox {sid} was not found",
                               {"sandbox_id": sid})
        if route.status != RUNNING:
            raise GatewayError(502, "unavailable", f"The sandbox {sid} is {route.status} and was not found running; "
                               "connect to it to resume", {"sandbox_id": sid, "status": route.status})
        route.used = time.monotonic()
        return route

    async def _awake_route(self, sid: str, token: str | None, dialect: str, *, signed: bool = False):
        """`_route`, resuming a paused sandbox created to resume on traffic (docs/e2b.md) for a request it would
        serve: one with its valid token, a signed file URL of it (`signed`: its signature was checked), or one
        with neither to its ports when they are public."""
        try:
            return self._route(sid, token, dialect)
        except GatewayError as exc:
            route = self.lifecycle.routes.get(sid)
            # _route checks the token before the status: a refusal that names the paused status had a good one.
            if exc.details.get("status") not in (PAUSED, EVICTED) or route is None \
                    or not (token or signed or route.public_traffic):
                raise
            if not await self.lifecycle.resume_on_traffic(sid):
                raise
        return self._route(sid, token, dialect)

    async def _signed_file(self, head: Head, sid: str | None) -> Target | None:
        """`sbx.download_url()` / `upload_url()`: `/files?path=..&signature=v1_..[&signature_expiration=..]`,
        signed by the SDK with the sandbox's envd token (E2B's v1: sha256 of `path:operation:user:token[:exp]`)
        and sent with no header, by whoever got the URL. On the shared URL the sandbox is the one whose
        token makes the signature (one hash per live sandbox)."""
        path, _, query = head.target.partition("?")
        if path != "/files" or "signature=" not in query:
            return None
        q = signed_query(query)
        operation = OPERATIONS.get(head.method)
        expires = q.get("signature_expiration")
        if operation is None:
            raise GatewayError(401, "unauthenticated", f"a signed file URL does not allow {head.method}")
        if head.header("authorization") is not None:
            raise GatewayError(403, "forbidden", "a signed file URL names its user itself: send no Authorization")
        if expires is not None and not (expires.isdigit() and int(expires) >= time.time()):
            raise _envd_refusal("signature is already expired")
        signed = f"{q.get('path', '')}:{operation}:{q.get('username', '')}:"
        given = q.get("signature", "").encode("utf-8", "replace")
        routes = self.lifecycle.routes
        if sid and sid not in routes:
            self._route(sid, None)  # a sandbox that is gone says so
        candidates = [sid] if sid else list(routes)
        self._derive_envd_tokens(candidates)
        for cid in candidates:
            route = routes.get(cid)
            envd = route and self._envd_tokens.get((cid, route.token_version))
            if not envd:
                continue
            raw = signed + envd + (f":{expires}" if expires else "")
            expected = b"v1_" + base64.b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=")
            if hmac.compare_digest(expected, given):
                route = await self._awake_route(cid, None, E2B, signed=True)
                # What the agent reads is what was signed, spelled by us (quote: no `+`, so any decoding agrees).
                head.target = "/files?" + "&".join(f"{k}={quote(q[k], safe='')}" for k in ("path", "username")
                                                     if k in q)
                rewrite(head, ENVD_PORT)
                return Target(route.socket, cid)
        raise _envd_refusal("invalid signature")

    def _derive_envd_tokens(self, sids: list[str]) -> None:
        """Derive (once) the envd tokens of these live sandboxes: one read of their rows for all that are
        new, since a token depends on the sandbox's creation time."""
        routes = self.lifecycle.routes
        if len(self._envd_tokens) > 2 * len(routes) + 64:  # sandboxes that are gone
            self._envd_tokens.clear()
        missing = [s for s in sids if s in routes and (s, routes[s].token_version) not in self._envd_tokens]
        if not missing:
            return
        from sqlalchemy import select

        from sandboxd.core.store.tables import SandboxRow

        with self.lifecycle.store.tx() as s:
            rows = s.execute(select(SandboxRow.id, SandboxRow.token_version, SandboxRow.created_at)
                             .where(SandboxRow.id.in_(missing))).all()
        for sid, version, created_at in rows:
            self._envd_tokens[(sid, version)] = self.signer.envd_token(sid, version, created_at)

    async def _user_port(self, head: Head, sid: str, port: int, token: str | None) -> Target:
        dialect = E2B
        if not token and (token := bearer(head)):
            dialect = HOPX  # our own clients reach a sandbox's ports with their HopX token
        route = await self._awake_route(sid, token, dialect)
        if not token and not route.public_traffic:
            raise GatewayError(401, "unauthenticated", "this sandbox's ports are private: send its token in "
                               "E2B-Traffic-Access-Token", {"sandbox_id": sid})
        if not head.target.startswith("/"):
            raise GatewayError(400, "invalid_argument", "absolute-form request targets are not supported")
        return Target(route.socket, sid, port)

    @staticmethod
    def _port(raw: str) -> int:
        try:
            port = int(raw)
        except ValueError:
            raise GatewayError(400, "invalid_argument", f"invalid E2b-Sandbox-Port: {raw!r}") from None
        if not 0 < port < 65536:
            raise GatewayError(400, "invalid_argument", f"invalid E2b-Sandbox-Port: {raw!r}")
        return port


def signed_query(query: str) -> dict[str, str]:
    """The parameters of a signed file URL, decoded as the SDK encodes them (urlencode). Anything the
    signature does not cover, or a parameter given twice (which one would the agent take?), is refused."""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote_plus(key)
        if key not in SIGNED_PARAMS:
            raise GatewayError(403, "forbidden", f"a signed file URL takes no parameter {key[:64]!r}")
        if key in out:
            raise GatewayError(403, "forbidden", f"a signed file URL names {key!r} once")
        out[key] = unquote_plus(value)
    return out


def rewrite(head: Head, port: int) -> None:
    """Prefix the request target in place (the head's raw rendering follows it)."""
    target = head.target
    path = target.split("?", 1)[0]
    if not target.startswith("/"):
        raise GatewayError(400, "invalid_argument", "absolute-form request targets are not supported")
    if path.startswith(PREFIX + "/") or (port == ENVD_PORT and path in INTERNAL):
        raise GatewayError(404, "not_found", f"no such endpoint: {path}")
    new = f"{PREFIX}/{port}{target}"
    head.target = new


def resolver(services) -> E2BResolver:
    return E2BResolver(services.signer, services.lifecycle)


def _envd_refusal(message: str) -> GatewayError:
    """A signed file URL refused as envd refuses it, in its body (E2B's SDK compares the message)."""
    return GatewayError(401, "unauthenticated", message, body={"code": 401, "message": message})

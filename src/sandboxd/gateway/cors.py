"""Cross-origin access to the gateway (docs/security.md): a page served from another origin, the dashboard on
the control-plane port first, may call a sandbox's HTTP API with its sandbox token.

The gateway authenticates by bearer token only, never by cookie, and never sends
`Access-Control-Allow-Credentials`: a browser then attaches no cookies or HTTP auth of its own to a
cross-origin call, so a page can do with the gateway only what the token it holds already allows. That is why
any origin may be allowed (`*`, no `Vary: Origin` needed).
"""
from __future__ import annotations

from sandboxd.gateway.heads import Head

ALLOW_ORIGIN = (b"Access-Control-Allow-Origin", b"*")
# Read by the dashboard: a download's file name, the id an error answer names.
EXPOSE = (b"Access-Control-Expose-Headers", b"Content-Disposition, X-Request-ID")
# Headers a browser refuses to take from a cross-origin answer are not the agent's to send: the gateway says
# what crosses origins, and it never allows credentials.
AGENT_CORS = frozenset((b"access-control-allow-origin", b"access-control-allow-credentials",
                        b"access-control-expose-headers"))
METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE"
# What HopX and E2B clients send besides the CORS-safelisted headers.
HEADERS = (b"Authorization, Content-Type, Content-Encoding, X-Sandbox-Id, E2b-Sandbox-Id, E2b-Sandbox-Port, "
           b"X-Access-Token, E2B-Traffic-Access-Token, Connect-Protocol-Version, Connect-Timeout-Ms")
MAX_AGE = b"600"  # seconds a browser may reuse a preflight's answer (Chromium caps it at 7200)


def is_preflight(head: Head) -> bool:
    return head.method == "OPTIONS" and "access-control-request-method" in head.headers


def preflight_headers() -> list[tuple[bytes, bytes]]:
    """The answer to any preflight: no sandbox is asked (a preflight carries no token), so it says only what
    the gateway would let through; the request itself is then authorised as any other."""
    return [ALLOW_ORIGIN, (b"Access-Control-Allow-Methods", METHODS), (b"Access-Control-Allow-Headers", HEADERS),
            (b"Access-Control-Max-Age", MAX_AGE)]


def answer_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers for a request that named its Origin."""
    return [(n, v) for n, v in headers if n.lower() not in AGENT_CORS] + [ALLOW_ORIGIN, EXPOSE]

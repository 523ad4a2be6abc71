"""Desktop automation for the agent: an X display started on demand, VNC, mouse, keyboard, clipboard,
screenshots, recording, windows, display size and OCR (docs/clients/hopx.md §3.6).

Wiring into the agent is one call:

    from sandboxd.agent.desktop import register
    register(app)        # a Starlette/FastAPI app: mounts /desktop (HTTP + the VNC WebSocket)

An agent without an ASGI framework can call `handle(service, method, path, query, body, headers)` for
HTTP and serve `DesktopASGI` for the WebSocket tunnel. Nothing heavy is imported and nothing is started
until the first desktop request.
"""
from __future__ import annotations

from .asgi import DesktopASGI, Response, handle
from .errors import DesktopError, DesktopNotAvailable
from .service import DesktopService

__all__ = ["DesktopASGI", "DesktopError", "DesktopNotAvailable", "DesktopService", "Response", "handle",
           "register", "PREFIX"]

PREFIX = "/desktop"


def register(app, service: DesktopService | None = None) -> DesktopASGI:
    """Mount the desktop endpoints on an ASGI app that has `.mount(path, app)` (Starlette, FastAPI)."""
    asgi = DesktopASGI(service)
    app.mount(PREFIX, asgi)
    # On the sandboxd agent: stop Xvnc, openbox and recordings with the agent (its Services.shutdown).
    hooks = getattr(getattr(app, "services", None), "on_shutdown", None)
    if isinstance(hooks, list):
        hooks.append(asgi.service.shutdown)
    return asgi

"""The agent application: a route table, the one error table, and the shared services.

Other rooms plug in their own route modules (E2B's envd in `agent/envd/`, desktop in `agent/desktop/`)
by exposing `register(app)` and calling `app.route(...)`; they reach the services through
`app.services` (process runner, files, env store, kernel manager) without going through HTTP.
"""
from __future__ import annotations

import importlib
import re
import time
from collections import defaultdict
from typing import Any, Callable

from .errors import AgentError
from .server import HTTPError, Request, json_response, now_iso
from .services import Services

# Route modules loaded at start. Optional ones (owned by other rooms) are skipped if absent.
CORE_ROUTES = [
    "sandboxd.agent.routes.system",
    "sandboxd.agent.routes.execute",
    "sandboxd.agent.routes.commands",
    "sandboxd.agent.routes.files",
    "sandboxd.agent.routes.env",
    "sandboxd.agent.routes.terminal",
]
# Packages of other rooms: each exposes `register(app)` (using app.route/app.websocket, or app.mount
# for an ASGI sub-app). Skipped while absent or not yet wired.
OPTIONAL_ROUTES = ["sandboxd.agent.envd"]
# Packages imported on the first request under their prefix (start-up time matters: desktop is rare).
# Their register(app) must mount one ASGI app at that prefix.
LAZY_MOUNTS = {"/desktop": "sandboxd.agent.desktop"}


class Route:
    def __init__(self, method: str, pattern: str, handler: Callable, websocket: bool):
        self.method, self.pattern, self.handler, self.websocket = method, pattern, handler, websocket
        regex = re.sub(r"\{(\w+)(:path)?\}", lambda m: f"(?P<{m[1]}>{'.+' if m[2] else '[^/]+'})", pattern)
        self.regex = re.compile(f"^{regex}$")


class Metrics:
    """Request counters for /metrics/snapshot (in memory; the agent restarts with the sandbox)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.total_requests = 0
        self.total_errors = 0
        self.by_path: dict[str, int] = defaultdict(int)
        self.duration_ms: dict[str, float] = defaultdict(float)


class App:
    def __init__(self, services: Services | None = None):
        self.routes: list[Route] = []
        self.services = services or Services()
        self.metrics = Metrics()

    def route(self, method: str, pattern: str, handler: Callable | None = None, *, websocket: bool = False):
        """Register a handler; usable as a decorator. `{name}` and `{name:path}` capture path parts."""

        def add(fn: Callable) -> Callable:
            for m in method.split(","):
                self.routes.append(Route(m.strip().upper(), pattern, fn, websocket))
            return fn

        return add(handler) if handler else add

    def websocket(self, pattern: str):
        return self.route("GET", pattern, websocket=True)

    def mount(self, prefix: str, asgi_app) -> None:
        """Serve an ASGI app for every path under `prefix` (HTTP and WebSocket)."""
        from . import asgi_bridge

        prefix = prefix.rstrip("/")

        async def http(req):
            return await asgi_bridge.http(asgi_app, prefix, req)

        async def ws(sock):
            await asgi_bridge.websocket(asgi_app, prefix, sock)

        for pattern in (prefix, prefix + "/{rest:path}"):
            self.route("GET,HEAD,POST,PUT,PATCH,DELETE", pattern, http)
            self.route("GET", pattern, ws, websocket=True)

    def lazy_mount(self, prefix: str, module_name: str) -> None:
        import importlib.util

        try:
            if importlib.util.find_spec(module_name) is None:
                return
        except ModuleNotFoundError:
            return
        app, loaded = self, {}

        class _Capture:
            def mount(self, _prefix, asgi_app):
                loaded["asgi"] = asgi_app

            def __getattr__(self, name):
                return getattr(app, name)

        def target():
            if "asgi" not in loaded:
                importlib.import_module(module_name).register(_Capture())
            return loaded["asgi"]

        async def http(req):
            from . import asgi_bridge

            return await asgi_bridge.http(target(), prefix, req)

        async def ws(sock):
            from . import asgi_bridge

            await asgi_bridge.websocket(target(), prefix, sock)

        for pattern in (prefix, prefix + "/{rest:path}"):
            self.route("GET,HEAD,POST,PUT,PATCH,DELETE", pattern, http)
            self.route("GET", pattern, ws, websocket=True)

    def include(self, module_name: str, optional: bool = False) -> None:
        try:
            mod = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if optional and e.name and module_name.startswith(e.name):
                return
            raise
        register = getattr(mod, "register", None)
        if register is None:
            if optional:
                return
            raise AttributeError(f"{module_name} has no register(app)")
        register(self)

    def match(self, method: str, path: str, websocket: bool) -> tuple[Route | None, dict, bool]:
        path_known = False
        for r in self.routes:
            m = r.regex.match(path)
            if not m or r.websocket != websocket:
                continue
            path_known = True
            if r.method == method or (method == "HEAD" and r.method == "GET"):
                return r, m.groupdict(), True
        return None, {}, path_known

    async def dispatch(self, req: Request) -> Any:
        t0 = time.perf_counter()
        self.metrics.total_requests += 1
        ws = getattr(req, "websocket", None)
        route, params, known = self.match(req.method, req.path, ws is not None)
        key = route.pattern if route else "unmatched"
        self.metrics.by_path[key] += 1
        try:
            if route is None:
                if known:
                    raise HTTPError(405, "METHOD_NOT_ALLOWED", f"{req.method} not allowed on {req.path}")
                raise HTTPError(404, "NOT_FOUND", f"no such endpoint: {req.method} {req.path}")
            req.path_params = params
            return await (route.handler(ws) if ws is not None else route.handler(req))
        finally:
            self.metrics.duration_ms[key] += (time.perf_counter() - t0) * 1000

    def error_response(self, req: Request | None, exc: BaseException):
        """The one table: exception -> status + hybrid error body (contracts/hopx.md §3.0)."""
        if isinstance(exc, (AgentError, HTTPError)):
            status, code, message, details = exc.status, exc.code, exc.message, dict(exc.details)
        else:
            status, code, message, details = 500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}", {}
            import traceback

            traceback.print_exception(exc)
        self.metrics.total_errors += 1
        rid = req.request_id if req else ""
        body = {"error": message, "message": message, "code": code, "request_id": rid,
                "timestamp": now_iso(), "details": details}
        if "path" in details:
            body["path"] = details["path"]
        return json_response(body, status)

    def snapshot_requests(self) -> dict:
        m = self.metrics
        return {
            "uptime_seconds": round(time.time() - m.started, 3),
            "total_requests": m.total_requests,
            "total_errors": m.total_errors,
            "error_count": m.total_errors,
            "requests_total": dict(m.by_path),
            "avg_duration_ms": {k: round(v / max(m.by_path[k], 1), 3) for k, v in m.duration_ms.items()},
        }


def create_app(services: Services | None = None) -> App:
    app = App(services)
    for name in CORE_ROUTES:
        app.include(name)
    for name in OPTIONAL_ROUTES:
        app.include(name, optional=True)
    for prefix, name in LAZY_MOUNTS.items():
        app.lazy_mount(prefix, name)
    return app

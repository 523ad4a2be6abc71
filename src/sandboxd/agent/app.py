"""The agent application: the route table, HopX's error answer, and the shared services.

Each wire dialect is a package of module-level handlers and a table of them: HopX in `agent/routes/`,
E2B's envd in `agent/envd/`, the desktop API (an ASGI app) in `agent/desktop/`. A module's `register(app)`
hands its table to `app.add_routes`; handlers reach the services (process runner, files, env store,
kernel manager) through `req.app.services`, never through HTTP. See docs/agent.md.
"""
from __future__ import annotations

import importlib
import re
import time
from typing import Any, Callable

from sandboxd.errors import SandboxdError

from .errors import MethodNotAllowed, RouteNotFound, status_of
from .server import Request, json_response, now_iso
from .services import Services

# Our route modules (those in LAZY_ROUTES are registered on first use, the others at start).
CORE_ROUTES = [
    "sandboxd.agent.routes.system",
    "sandboxd.agent.routes.execute",
    "sandboxd.agent.routes.commands",
    "sandboxd.agent.routes.files",
    "sandboxd.agent.routes.env",
    "sandboxd.agent.routes.terminal",
]
# Packages that may be absent from an image: each exposes `register(app)`; skipped while absent.
OPTIONAL_ROUTES = ["sandboxd.agent.envd"]
# Route modules imported on the first request under one of their path prefixes (or when /info lists the
# routes), so `/health` answers sooner and a sandbox pays only for the protocols it is spoken to in.
# Eager: /health (the readiness probe), /commands (the first thing most users do) and /env (the pool's
# claim). Every pattern a lazy module registers must lie under one of its prefixes.
LAZY_ROUTES = {
    "sandboxd.agent.routes.execute": ("/execute", "/processes"),
    "sandboxd.agent.routes.files": ("/files",),
    "sandboxd.agent.routes.terminal": ("/terminal",),
    "sandboxd.agent.envd": ("/e2b",),
}
# Packages imported on the first request under their prefix (start-up time matters: desktop is rare).
# Their register(app) must mount one ASGI app at that prefix.
LAZY_MOUNTS = {"/desktop": "sandboxd.agent.desktop"}
# The method column of a route table's WebSocket rows.
WEBSOCKET = "WEBSOCKET"


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
        self.by_path: dict[str, int] = {}
        self.duration_ms: dict[str, float] = {}


class App:
    def __init__(self, services: Services | None = None):
        self._routes: list[Route] = []
        self.services = services or Services()
        self.metrics = Metrics()
        self._lazy: dict[str, tuple[tuple[str, ...], bool]] = {}  # module -> (path prefixes, optional)

    @property
    def routes(self) -> list[Route]:
        """Every route, lazy modules included (listing them is when they must exist)."""
        for name in list(self._lazy):
            self._load(name)
        return self._routes

    def include_lazy(self, module_name: str, prefixes: tuple[str, ...], optional: bool = False) -> None:
        """Register module_name's routes on the first request under one of prefixes."""
        self._lazy[module_name] = (tuple(p.rstrip("/") for p in prefixes), optional)

    def _load(self, name: str) -> None:
        entry = self._lazy.pop(name)
        try:
            self.include(name, optional=entry[1])
        except BaseException:
            self._lazy[name] = entry  # a broken module answers every request under it with its error, not 404
            raise

    def _load_for(self, path: str) -> bool:
        """Import the lazy modules that may serve path; True if any was loaded."""
        names = [n for n, (prefixes, _) in self._lazy.items()
                 if any(path == p or path.startswith(p + "/") for p in prefixes)]
        for name in names:
            self._load(name)
        return bool(names)

    def route(self, method: str, pattern: str, handler: Callable, *, websocket: bool = False) -> None:
        """Register one handler for a comma-separated list of methods. `{name}` and `{name:path}` capture
        path parts."""
        for m in method.split(","):
            self._routes.append(Route(m.strip().upper(), pattern, handler, websocket))

    def add_routes(self, table) -> None:
        """Register a route table: rows of (methods, pattern, handler); (WEBSOCKET, pattern, handler) for a socket."""
        for row in table:
            if row[0] == WEBSOCKET:
                self.route("GET", row[1], row[2], websocket=True)
            else:
                self.route(*row)

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
        route, params, known = self._match(method, path, websocket)
        if route is None and self._lazy and self._load_for(path):
            route, params, known = self._match(method, path, websocket)
        return route, params, known

    def _match(self, method: str, path: str, websocket: bool) -> tuple[Route | None, dict, bool]:
        path_known = False
        for r in self._routes:
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
        self.metrics.by_path[key] = self.metrics.by_path.get(key, 0) + 1
        try:
            if route is None:
                if known:
                    raise MethodNotAllowed(f"{req.method} not allowed on {req.path}")
                raise RouteNotFound(f"no such endpoint: {req.method} {req.path}")
            req.path_params, req.app = params, self
            return await (route.handler(ws) if ws is not None else route.handler(req))
        finally:
            self.metrics.duration_ms[key] = self.metrics.duration_ms.get(key, 0.0) + (time.perf_counter() - t0) * 1000

    def error_response(self, req: Request | None, exc: BaseException):
        """HopX's wire answer to an exception: the status from `errors.STATUSES` and the hybrid error body
        (docs/clients/hopx.md)."""
        if isinstance(exc, SandboxdError):
            status, code, message, details = status_of(exc), exc.code, exc.message, dict(exc.details)
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
    for name, optional in [(n, False) for n in CORE_ROUTES] + [(n, True) for n in OPTIONAL_ROUTES]:
        if name in LAZY_ROUTES:
            app.include_lazy(name, LAZY_ROUTES[name], optional=optional)
        else:
            app.include(name, optional=optional)
    for prefix, name in LAZY_MOUNTS.items():
        app.lazy_mount(prefix, name)
    return app

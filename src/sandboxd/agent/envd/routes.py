"""Mounts E2B's in-sandbox protocols on the agent, under prefixes the gateway rewrites to:

  /e2b/49983/...  envd: Connect-RPC `process.Process/*`, `filesystem.Filesystem/*`, `/files`, `/health`
  /e2b/49999/...  the code interpreter: NDJSON `/execute`, `/contexts`

The prefixes keep E2B's `/execute` and `/health` apart from the HopX agent's routes of the same name.
"""
from __future__ import annotations

from . import files_http, users
from .connect import ConnectError, client_stream, server_stream, unary
from .filesystem import FilesystemService
from .interpreter import Interpreter, handlers as interpreter_handlers
from .process import ProcessService, keepalive_interval
from .version import ENVD_VERSION  # noqa: F401 - re-exported

ENVD = "/e2b/49983"
JUPYTER = "/e2b/49999"


class Envd:
    """The envd services of one agent, kept on `app.services.envd`."""

    def __init__(self, base_env=None, warm_kernels=None):
        self.processes = ProcessService(base_env)
        self.filesystem = FilesystemService()
        self.interpreter = Interpreter(base_env, warm_kernels)


def _map_error(exc: BaseException) -> ConnectError | None:
    if isinstance(exc, ConnectError):
        return exc
    if isinstance(exc, PermissionError):
        return ConnectError("permission_denied", str(exc))
    if isinstance(exc, (ValueError, TypeError, KeyError)):
        return ConnectError("invalid_argument", f"{type(exc).__name__}: {exc}")
    return None


def register(app) -> None:
    env_store = getattr(app.services, "env", None)
    # The HopX kernel manager only if something built it (a warm pool's /jupyter/warm): never imported here.
    envd = Envd(env_store.for_run if env_store is not None else None, lambda: vars(app.services).get("kernels"))
    app.services.envd = envd
    procs, fs = envd.processes, envd.filesystem

    def rpc(service: str, method: str, fn, kind: str = "unary") -> None:
        wrap = {"unary": unary, "server": server_stream, "client": client_stream}[kind]
        app.route("POST", f"{ENVD}/{service}/{method}", wrap(fn, _map_error))

    # ---- process.Process -----------------------------------------------------------------------------

    async def start(req, msg):
        user = users.for_request(req)
        p = await procs.start(msg, user)
        q = p.subscribe()
        procs.run(p)
        # A deadline (the command timeout) kills the process; a client that just goes away does not.
        req.on_deadline = p.kill  # type: ignore[attr-defined]
        async for ev in procs.events(p, q, keepalive_interval(req.headers.get("keepalive-ping-interval"))):
            yield ev

    async def connect(req, msg):
        p = procs.select(msg.get("process"))
        q = p.subscribe()
        async for ev in procs.events(p, q, keepalive_interval(req.headers.get("keepalive-ping-interval"))):
            yield ev

    async def list_(req, msg):
        return {"processes": procs.list()}

    async def send_input(req, msg):
        await procs.send_input(procs.select(msg.get("process")), msg.get("input"))
        return {}

    async def stream_input(req, messages):
        target = None
        async for m in messages:
            if "start" in m:
                target = procs.select((m["start"] or {}).get("process"))
            elif "data" in m:
                if target is None:
                    raise ConnectError("failed_precondition", "StreamInput needs a start message first")
                await procs.send_input(target, (m["data"] or {}).get("input"))
        return {}

    async def send_signal(req, msg):
        procs.signal(procs.select(msg.get("process")), msg.get("signal"))
        return {}

    async def close_stdin(req, msg):
        procs.close_stdin(procs.select(msg.get("process")))
        return {}

    async def update(req, msg):
        procs.resize(procs.select(msg.get("process")), msg.get("pty"))
        return {}

    rpc("process.Process", "Start", start, "server")
    rpc("process.Process", "Connect", connect, "server")
    rpc("process.Process", "List", list_)
    rpc("process.Process", "SendInput", send_input)
    rpc("process.Process", "StreamInput", stream_input, "client")
    rpc("process.Process", "SendSignal", send_signal)
    rpc("process.Process", "CloseStdin", close_stdin)
    rpc("process.Process", "Update", update)

    # ---- filesystem.Filesystem -----------------------------------------------------------------------

    async def stat(req, msg):
        user = users.for_request(req)
        return {"entry": fs.stat(users.expand(msg.get("path"), user))}

    async def list_dir(req, msg):
        user = users.for_request(req)
        return {"entries": fs.list_dir(users.expand(msg.get("path"), user), int(msg.get("depth") or 1))}

    async def make_dir(req, msg):
        user = users.for_request(req)
        return {"entry": fs.make_dir(users.expand(msg.get("path"), user), user)}

    async def move(req, msg):
        user = users.for_request(req)
        return {"entry": fs.move(users.expand(msg.get("source"), user), users.expand(msg.get("destination"), user),
                                 user)}

    async def remove(req, msg):
        user = users.for_request(req)
        fs.remove(users.expand(msg.get("path"), user))
        return {}

    async def watch_dir(req, msg):
        user = users.for_request(req)
        path = users.expand(msg.get("path"), user)
        async for ev in fs.watch(path, bool(msg.get("recursive")), bool(msg.get("includeEntry")),
                                 keepalive_interval(req.headers.get("keepalive-ping-interval"))):
            yield ev

    async def create_watcher(req, msg):
        user = users.for_request(req)
        path = users.expand(msg.get("path"), user)
        return {"watcherId": fs.create_watcher(path, bool(msg.get("recursive")), bool(msg.get("includeEntry")))}

    async def get_watcher_events(req, msg):
        return {"events": fs.watcher_events(str(msg.get("watcherId") or ""))}

    async def remove_watcher(req, msg):
        fs.remove_watcher(str(msg.get("watcherId") or ""))
        return {}

    rpc("filesystem.Filesystem", "Stat", stat)
    rpc("filesystem.Filesystem", "ListDir", list_dir)
    rpc("filesystem.Filesystem", "MakeDir", make_dir)
    rpc("filesystem.Filesystem", "Move", move)
    rpc("filesystem.Filesystem", "Remove", remove)
    rpc("filesystem.Filesystem", "WatchDir", watch_dir, "server")
    rpc("filesystem.Filesystem", "CreateWatcher", create_watcher)
    rpc("filesystem.Filesystem", "GetWatcherEvents", get_watcher_events)
    rpc("filesystem.Filesystem", "RemoveWatcher", remove_watcher)

    # ---- envd HTTP -------------------------------------------------------------------------------------

    app.route("GET", f"{ENVD}/health", files_http.health)
    app.route("GET", f"{ENVD}/files", files_http.download)
    app.route("POST", f"{ENVD}/files", files_http.upload)

    # ---- code interpreter -----------------------------------------------------------------------------

    h = interpreter_handlers(envd.interpreter)
    app.route("GET", f"{JUPYTER}/health", h["health"])
    app.route("POST", f"{JUPYTER}/execute", h["execute"])
    app.route("POST", f"{JUPYTER}/contexts", h["create_context"])
    app.route("GET", f"{JUPYTER}/contexts", h["list_contexts"])
    app.route("DELETE", f"{JUPYTER}/contexts/{{cid}}", h["delete_context"])
    app.route("POST", f"{JUPYTER}/contexts/{{cid}}/restart", h["restart_context"])

"""Mounts E2B's in-sandbox protocols on the agent, under prefixes the gateway rewrites to:

  /e2b/49983/...  envd: Connect-RPC `process.Process/*`, `filesystem.Filesystem/*`, `/files`, `/health`
  /e2b/49999/...  the code interpreter: NDJSON `/execute`, `/contexts`

The prefixes keep E2B's `/execute` and `/health` apart from the HopX agent's routes of the same name.
Handlers are module-level; they reach this agent's envd services through `req.app.services.envd`.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Callable

from . import files_http, interpreter, process, users
from .connect import client_stream, server_stream, unary
from .errors import FailedPrecondition, to_connect
from .filesystem import entry_info, event
from .interpreter import Interpreter
from .version import ENVD_VERSION  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from ..files import Files
    from ..processes import Processes

ENVD = "/e2b/49983"
JUPYTER = "/e2b/49999"


class Envd:
    """envd's own state on one agent, kept on `app.services.envd`: the interpreter, and the environment
    its processes start from."""

    def __init__(self, base_env=None, warm_kernels=None):
        self.base_env = base_env
        self.interpreter = Interpreter(base_env, warm_kernels)


def _procs(req) -> Processes:
    return req.app.services.processes


def _files(req) -> Files:
    return req.app.services.files


def _path(req, msg: dict, key: str = "path") -> str:
    return users.expand(msg.get(key), users.for_request(req))


def _keepalive(req) -> float:
    return process.keepalive_interval(req.headers.get("keepalive-ping-interval"))


# ---- process.Process: the agent's processes service (agent/processes.py), shaped by envd/process.py ----

async def start(req, msg):
    procs = _procs(req)
    p = await process.start(procs, req.app.services.envd.base_env, msg, users.for_request(req))
    q = p.subscribe()
    procs.run(p)
    # A deadline (the command timeout) kills the process; a client that just goes away does not.
    req.on_deadline = p.kill
    async for ev in process.events(p, q, _keepalive(req)):
        yield ev


async def connect(req, msg):
    p = process.select(_procs(req), msg.get("process"))
    q = p.subscribe()
    async for ev in process.events(p, q, _keepalive(req)):
        yield ev


async def list_processes(req, msg):
    return {"processes": [process.info(p) for p in _procs(req).running()]}


async def send_input(req, msg):
    procs = _procs(req)
    await process.send_input(procs, process.select(procs, msg.get("process")), msg.get("input"))
    return {}


async def stream_input(req, messages):
    procs, target = _procs(req), None
    async for m in messages:
        if "start" in m:
            target = process.select(procs, (m["start"] or {}).get("process"))
        elif "data" in m:
            if target is None:
                raise FailedPrecondition("StreamInput needs a start message first")
            await process.send_input(procs, target, (m["data"] or {}).get("input"))
    return {}


async def send_signal(req, msg):
    process.send_signal(process.select(_procs(req), msg.get("process")), msg.get("signal"))
    return {}


async def close_stdin(req, msg):
    procs = _procs(req)
    procs.close_stdin(process.select(procs, msg.get("process")))
    return {}


async def update(req, msg):
    procs = _procs(req)
    process.resize(procs, process.select(procs, msg.get("process")), msg.get("pty"))
    return {}


# ---- filesystem.Filesystem: the agent's files service (agent/files.py), shaped by envd/filesystem.py ----

async def stat(req, msg):
    return {"entry": entry_info(_files(req).stat(_path(req, msg)))}


async def list_dir(req, msg):
    depth = int(msg.get("depth") or 1)
    return {"entries": [entry_info(e) for e in _files(req).walk(_path(req, msg), max(1, depth))]}


async def make_dir(req, msg):
    user = users.for_request(req)
    return {"entry": entry_info(_files(req).make_dir(users.expand(msg.get("path"), user), owner=user.owner))}


async def move(req, msg):
    user = users.for_request(req)
    moved = _files(req).move(users.expand(msg.get("source"), user), users.expand(msg.get("destination"), user),
                             owner=user.owner)
    return {"entry": entry_info(moved)}


async def remove(req, msg):
    _files(req).remove(_path(req, msg), missing_ok=True)  # as envd: removing what is not there succeeds
    return {}


def _watch_options(msg: dict) -> dict:
    return {"recursive": bool(msg.get("recursive")), "with_entries": bool(msg.get("includeEntry")),
            "network_mounts": bool(msg.get("allowNetworkMounts"))}


async def watch_dir(req, msg):
    keepalive = _keepalive(req)
    w = _files(req).watch(_path(req, msg), **_watch_options(msg))
    try:
        yield {"start": {}}
        while True:
            try:
                changes = await asyncio.wait_for(w.next(), keepalive)
            except asyncio.TimeoutError:
                yield {"keepalive": {}}
                continue
            for ch in changes:
                yield {"filesystem": event(ch)}
    finally:
        w.close()


async def create_watcher(req, msg):
    wid = _files(req).open_watcher(_path(req, msg), **_watch_options(msg))
    return {"watcherId": wid}


async def get_watcher_events(req, msg):
    return {"events": [event(ch) for ch in _files(req).take_changes(str(msg.get("watcherId") or ""))]}


async def remove_watcher(req, msg):
    _files(req).close_watcher(str(msg.get("watcherId") or ""))
    return {}


# (service, method, handler, call shape)
RPCS: list[tuple[str, str, Callable, Callable]] = [
    ("process.Process", "Start", start, server_stream),
    ("process.Process", "Connect", connect, server_stream),
    ("process.Process", "List", list_processes, unary),
    ("process.Process", "SendInput", send_input, unary),
    ("process.Process", "StreamInput", stream_input, client_stream),
    ("process.Process", "SendSignal", send_signal, unary),
    ("process.Process", "CloseStdin", close_stdin, unary),
    ("process.Process", "Update", update, unary),
    ("filesystem.Filesystem", "Stat", stat, unary),
    ("filesystem.Filesystem", "ListDir", list_dir, unary),
    ("filesystem.Filesystem", "MakeDir", make_dir, unary),
    ("filesystem.Filesystem", "Move", move, unary),
    ("filesystem.Filesystem", "Remove", remove, unary),
    ("filesystem.Filesystem", "WatchDir", watch_dir, server_stream),
    ("filesystem.Filesystem", "CreateWatcher", create_watcher, unary),
    ("filesystem.Filesystem", "GetWatcherEvents", get_watcher_events, unary),
    ("filesystem.Filesystem", "RemoveWatcher", remove_watcher, unary),
]

ROUTES = [(method, ENVD + path, handler) for method, path, handler in files_http.ROUTES] + \
         [(method, JUPYTER + path, handler) for method, path, handler in interpreter.ROUTES]


def register(app) -> None:
    env_store = getattr(app.services, "env", None)
    # The HopX kernel manager only if something built it (a warm pool's /jupyter/warm): never imported here.
    app.services.envd = Envd(env_store.for_run if env_store is not None else None,
                             lambda: vars(app.services).get("kernels"))
    app.add_routes([("POST", f"{ENVD}/{service}/{method}", shape(fn, to_connect))
                    for service, method, fn, shape in RPCS] + ROUTES)

"""Health, info, metrics, process list, Jupyter sessions and the result cache."""
from __future__ import annotations

import os
import time

from ... import __version__
from .. import sysinfo
from ..env import find_user_python
from ..processes import run_as
from ..languages import LANGUAGES
from ..server import json_response, now_iso

FEATURES = {"code_execution": True, "file_operations": True, "terminal_access": True,
            "websocket_streaming": True, "rich_output": True, "background_jobs": True,
            "ipython_kernel": True, "system_metrics": True, "languages": sorted(set(LANGUAGES))}


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


async def health(req):
    sv = req.app.services
    if sysinfo.pids_exhausted():  # the agent answers, but no command could start: not ready
        return json_response({"status": "unhealthy", "agent": "sandboxd-agent", "version": __version__,
                              "reason": "the sandbox's process limit is reached"}, 503)
    return {"status": "healthy", "agent": "sandboxd-agent", "version": __version__,
            "uptime": _uptime(time.time() - sv.started), "go_version": "", "vm_id": os.uname().nodename,
            "features": FEATURES, "active_streams": 0}


async def info(req):
    import platform

    sv = req.app.services
    endpoints = sorted({f"{r.method} {r.pattern}" for r in req.app.routes})
    return {"agent": "sandboxd-agent", "agent_version": __version__, "version": __version__,
            "vm_id": os.uname().nodename, "os": platform.system().lower(), "arch": platform.machine(),
            "go_version": "", "python_version": platform.python_version(), "vm_ip": "", "vm_port": 0,
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sv.started)),
            "uptime": round(time.time() - sv.started, 3), "workspace": sv.workspace,
            "user_python": find_user_python(sv.env.effective()), "endpoints": endpoints,
            "features": FEATURES}


def _snapshot(app) -> dict:
    sv = app.services
    return {"timestamp": now_iso(), **app.snapshot_requests(),
            "active_executions": sv.activity.active, "total_executions": sv.activity.total,
            "system": sysinfo.system(sv.cpu, sv.started),
            "process": {"count": sum(1 for p in os.listdir("/proc") if p.isdigit()), "agent_pid": os.getpid()},
            "cache": {k: v for k, v in sv.executor.cache.stats().items() if k in ("size", "hits", "misses", "count")},
            "kernel": {"running": bool(sv.kernels.sessions())}}


async def metrics_snapshot(req):
    return _snapshot(req.app)


async def system(req):
    sv = req.app.services
    return {**sysinfo.system(sv.cpu, sv.started), "timestamp": now_iso()}


async def processes(req):
    procs = sysinfo.list_processes()
    return {"processes": procs, "count": len(procs), "timestamp": now_iso()}


async def jupyter_sessions(req):
    sv = req.app.services
    sessions = sv.kernels.sessions()
    return {"sessions": sessions, "count": len(sessions), "timestamp": now_iso()}


async def jupyter_warm(req):
    """Start the kernel ahead of the first execution (warm pools call this before pausing)."""
    sv = req.app.services
    env = sv.env.effective()
    python = find_user_python(env)
    if python is None:
        return {"success": False, "message": "no python3 on the sandbox PATH", "sessions": []}
    from ..kernel import KernelUnavailable

    try:
        await sv.kernels.get(python, env, sv.workspace, run_as(None) if os.geteuid() == 0 else None)
    except KernelUnavailable as e:
        return {"success": False, "message": f"ipykernel missing from {python}: {e}", "sessions": []}
    return {"success": True, "message": "kernel ready", "sessions": sv.kernels.sessions()}


async def cache_stats(req):
    return req.app.services.executor.cache.stats()


async def cache_clear(req):
    sv = req.app.services
    n = sv.executor.cache.clear()
    return {"success": True, "message": f"cache cleared ({n} entries)", "entries_removed": n}


async def checkpoint_park(req):
    """Before a memory checkpoint: let go of the host's socket and wait at the doorbell (agent/park.py)."""
    channel = getattr(req.app.services, "channel", None)
    if channel is None:
        return json_response({"error": "this agent does not serve on a host socket", "code": "not_parkable"}, 409)
    channel.park()
    return {"parked": True}


ROUTES = [
    ("GET", "/health", health),
    ("POST", "/checkpoint/park", checkpoint_park),
    ("GET", "/info", info),
    ("GET", "/metrics/snapshot", metrics_snapshot),
    ("GET", "/metrics", metrics_snapshot),
    ("GET", "/system", system),
    ("GET", "/processes", processes),
    ("GET", "/jupyter/sessions", jupyter_sessions),
    ("POST", "/jupyter/warm", jupyter_warm),
    ("GET", "/cache/stats", cache_stats),
    ("GET", "/cache", cache_stats),
    ("POST,DELETE", "/cache/clear", cache_clear),
]


def register(app) -> None:
    app.add_routes(ROUTES)

"""Health, info, metrics, process list, Jupyter sessions and the result cache."""
from __future__ import annotations

import os
import time

from ... import __version__
from .. import sysinfo
from ..env import find_user_python
from ..languages import LANGUAGES
from ..server import json_response, now_iso

FEATURES = {"code_execution": True, "file_operations": True, "terminal_access": True,
            "websocket_streaming": True, "rich_output": True, "background_jobs": True,
            "ipython_kernel": True, "system_metrics": True, "languages": sorted(set(LANGUAGES))}


def _uptime(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60}m{s % 60}s"


def register(app) -> None:
    sv = app.services

    @app.route("GET", "/health")
    async def health(req):
        if sysinfo.pids_exhausted():  # the agent answers, but no command could start: not ready
            return json_response({"status": "unhealthy", "agent": "sandboxd-agent", "version": __version__,
                                  "reason": "the sandbox's process limit is reached"}, 503)
        return {"status": "healthy", "agent": "sandboxd-agent", "version": __version__,
                "uptime": _uptime(time.time() - sv.started), "go_version": "", "vm_id": os.uname().nodename,
                "features": FEATURES, "active_streams": 0}

    @app.route("GET", "/info")
    async def info(req):
        import platform

        endpoints = sorted({f"{r.method} {r.pattern}" for r in app.routes})
        return {"agent": "sandboxd-agent", "agent_version": __version__, "version": __version__,
                "vm_id": os.uname().nodename, "os": platform.system().lower(), "arch": platform.machine(),
                "go_version": "", "python_version": platform.python_version(), "vm_ip": "", "vm_port": 0,
                "start_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(sv.started)),
                "uptime": round(time.time() - sv.started, 3), "workspace": sv.workspace,
                "user_python": find_user_python(sv.env.effective()), "endpoints": endpoints,
                "features": FEATURES}

    def snapshot() -> dict:
        return {"timestamp": now_iso(), **app.snapshot_requests(),
                "active_executions": sv.activity.active, "total_executions": sv.activity.total,
                "system": sysinfo.system(sv.cpu, sv.started),
                "process": {"count": sum(1 for p in os.listdir("/proc") if p.isdigit()), "agent_pid": os.getpid()},
                "cache": {k: v for k, v in sv.executor.cache.stats().items() if k in ("size", "hits", "misses", "count")},
                "kernel": {"running": bool(sv.kernels.sessions())}}

    @app.route("GET", "/metrics/snapshot")
    async def metrics_snapshot(req):
        return snapshot()

    @app.route("GET", "/metrics")
    async def metrics(req):
        return snapshot()

    @app.route("GET", "/system")
    async def system(req):
        return {**sysinfo.system(sv.cpu, sv.started), "timestamp": now_iso()}

    @app.route("GET", "/processes")
    async def processes(req):
        procs = sysinfo.list_processes()
        return {"processes": procs, "count": len(procs), "timestamp": now_iso()}

    @app.route("GET", "/jupyter/sessions")
    async def jupyter_sessions(req):
        sessions = sv.kernels.sessions()
        return {"sessions": sessions, "count": len(sessions), "timestamp": now_iso()}

    @app.route("POST", "/jupyter/warm")
    async def jupyter_warm(req):
        """Start the kernel ahead of the first execution (warm pools call this before pausing)."""
        env = sv.env.effective()
        python = find_user_python(env)
        if python is None:
            return {"success": False, "message": "no python3 on the sandbox PATH", "sessions": []}
        from ..kernel import KernelUnavailable

        try:
            await sv.kernels.get(python, env, sv.workspace)
        except KernelUnavailable as e:
            return {"success": False, "message": f"ipykernel missing from {python}: {e}", "sessions": []}
        return {"success": True, "message": "kernel ready", "sessions": sv.kernels.sessions()}

    @app.route("GET", "/cache/stats")
    async def cache_stats(req):
        return sv.executor.cache.stats()

    @app.route("GET", "/cache")
    async def cache(req):
        return sv.executor.cache.stats()

    @app.route("POST,DELETE", "/cache/clear")
    async def cache_clear(req):
        n = sv.executor.cache.clear()
        return {"success": True, "message": f"cache cleared ({n} entries)", "entries_removed": n}

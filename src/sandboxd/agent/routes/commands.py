"""Shell commands: `/commands/run` and `/commands/background`.

The HopX clients always send `{"command": "bash", "args": ["-c", cmd]}`; a bare `command` string with no
args is run through `sh -c` like a shell line.
"""
from __future__ import annotations

import os
import shutil  # at start, not on the first command: a pool member pays it before it is frozen

from .. import processes
from ..errors import InvalidRequest, to_number
from ..server import now_iso
from ..users import workdir_of


def _parse(sv, body: dict, default_timeout: float) -> dict:
    command, args = body.get("command"), body.get("args")
    if not isinstance(command, str) or not command:
        raise InvalidRequest("command (string) is required")
    if args is None:
        argv = ["/bin/sh", "-c", command] if os.path.exists("/bin/sh") else ["sh", "-c", command]
    elif isinstance(args, list):
        argv = [command, *map(str, args)]
    else:
        raise InvalidRequest("args must be a list of strings")
    env = body.get("env") or body.get("env_vars")
    if env is not None and not isinstance(env, dict):
        raise InvalidRequest("env must be an object")
    envs, env = env, sv.env.for_run(env)
    if "/" not in argv[0]:
        argv[0] = shutil.which(argv[0], path=env.get("PATH", os.defpath)) or argv[0]
    return {"argv": argv, "env": env, "envs": envs, "cwd": workdir_of(body.get("workdir") or body.get("cwd"), sv.workspace),
            "timeout": to_number(body.get("timeout"), default_timeout, "timeout"), "user": body.get("user"),
            "display": " ".join(args[1:]) if args and args[0] == "-c" else " ".join([command, *(args or [])])}


async def run(req):
    sv = req.app.services
    p = _parse(sv, await req.json(), 120)
    with sv.activity.running():
        r = await processes.run(p["argv"], cwd=p["cwd"], env=p["env"], timeout=p["timeout"], user=p["user"])
    return {"success": r.exit_code == 0, "stdout": r.stdout, "stderr": r.stderr, "exit_code": r.exit_code,
            "execution_time": r.duration, "timed_out": r.timed_out, "command": p["display"], "pid": r.pid,
            "timestamp": now_iso()}


async def background(req):
    sv = req.app.services
    body = await req.json()
    p = _parse(sv, body, 3600)
    job = await sv.processes.background(p["argv"], cwd=p["cwd"], env=p["env"], timeout=p["timeout"],
                                        language="bash", name=body.get("name"), command=p["display"],
                                        user=p["user"], envs=p["envs"])
    return {"success": True, "process_id": job.id, "execution_id": job.id, "pid": job.pid,
            "status": job.status, "start_time": job.start_time, "name": job.name,
            "message": "Background command started"}


ROUTES = [
    ("POST", "/commands/run", run),
    ("POST", "/commands/background", background),
]


def register(app) -> None:
    app.add_routes(ROUTES)

"""WebSocket `/terminal`: a bash on a real PTY, a process of the agent's processes service. Frames:
input/resize in, output/exit out."""
from __future__ import annotations

import asyncio
import os
import signal

from ..app import WEBSOCKET
from ..processes import Proc, Processes, ids_of, run_as
from ..users import workdir_of
from ..server import STREAM_GAP


async def _start_shell(procs: Processes, env: dict[str, str], cwd: str | None, cols: int, rows: int,
                       user: str | None) -> Proc:
    import shutil

    shell = shutil.which("bash", path=env.get("PATH")) or "/bin/sh"
    as_user = run_as(user)
    if as_user is not None:
        env["HOME"] = as_user.home
    return await procs.start([shell, "-i"] if shell.endswith("bash") else [shell],
                             cwd=cwd if cwd and os.path.isdir(cwd) else None, env=env, ids=ids_of(as_user),
                             pty=(max(1, rows), max(1, cols)))


async def terminal(ws) -> None:
    ws.min_gap = STREAM_GAP  # output frames grow while they wait, so throughput holds
    sv, q = ws.request.app.services, ws.request.query
    procs: Processes = sv.processes
    p = await _start_shell(procs, dict(sv.env.effective()), workdir_of(q.get("cwd"), sv.workspace),
                           int(q.get("cols", 80)), int(q.get("rows", 24)), q.get("user"))
    output = p.subscribe()
    procs.run(p)

    async def pump_out() -> None:
        while True:
            kind, value = await output.get()
            if kind == "end":
                code = value.code if value.signal is None else 128 + value.signal
                await ws.send_json({"type": "exit", "code": code})
                return
            await ws.send_json({"type": "output", "data": value.decode("utf-8", "replace")})

    async def pump_in() -> None:
        while True:
            msg = await ws.receive_json()
            if msg is None:
                return
            kind = msg.get("type")
            if kind == "input":
                await procs.send_input(p, str(msg.get("data", "")).encode())
            elif kind == "resize":
                procs.resize(p, max(1, int(msg.get("rows", 24))), max(1, int(msg.get("cols", 80))))
            elif kind == "ping":
                await ws.send_json({"type": "pong"})

    tasks = {asyncio.create_task(pump_out()), asyncio.create_task(pump_in())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await _hang_up(p)  # closing the socket ends the shell


async def _hang_up(p: Proc) -> None:
    """SIGHUP as a closing terminal sends, then SIGKILL for a shell that ignores it."""
    for sig in (signal.SIGHUP, signal.SIGKILL):
        if p.end is not None:
            return
        p.kill(sig)
        try:
            await asyncio.wait_for(p.done.wait(), 1)
        except asyncio.TimeoutError:
            pass


ROUTES = [(WEBSOCKET, "/terminal", terminal)]


def register(app) -> None:
    app.add_routes(ROUTES)

"""WebSocket `/terminal`: a bash on a real PTY. Frames: input/resize in, output/exit out."""
from __future__ import annotations

import asyncio

from ..app import WEBSOCKET
from ..server import STREAM_GAP
from ..terminal import PtyProcess


async def terminal(ws):
    ws.min_gap = STREAM_GAP  # output frames grow while they wait, so throughput holds
    sv, q = ws.request.app.services, ws.request.query
    pty = await PtyProcess.start(None, env=sv.env.effective(), cwd=q.get("cwd") or sv.workspace,
                                 cols=int(q.get("cols", 80)), rows=int(q.get("rows", 24)), user=q.get("user"))

    async def pump_out() -> None:
        while True:
            data = await pty.read()
            if data is None:
                break
            await ws.send_json({"type": "output", "data": data.decode("utf-8", "replace")})
        await ws.send_json({"type": "exit", "code": await pty.wait()})

    async def pump_in() -> None:
        while True:
            msg = await ws.receive_json()
            if msg is None:
                return
            kind = msg.get("type")
            if kind == "input":
                pty.write(str(msg.get("data", "")).encode())
            elif kind == "resize":
                pty.resize(int(msg.get("cols", 80)), int(msg.get("rows", 24)))
            elif kind == "ping":
                await ws.send_json({"type": "pong"})

    tasks = {asyncio.create_task(pump_out()), asyncio.create_task(pump_in())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pty.close()  # closing the socket ends the shell


ROUTES = [(WEBSOCKET, "/terminal", terminal)]


def register(app) -> None:
    app.add_routes(ROUTES)

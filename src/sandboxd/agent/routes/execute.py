"""Code execution: sync, rich, ipython, background, async (webhook) and the /execute/stream WebSocket."""
from __future__ import annotations

import asyncio

from ..app import WEBSOCKET
from ..errors import InvalidRequest, MissingParameter
from ..execution import ExecRequest
from ..processes import Proc
from ..server import STREAM_GAP, WebSocketClosed, now_iso


def _parse(sv, body: dict, default_timeout: float = 120) -> ExecRequest:
    return ExecRequest.from_json(body, default_timeout=default_timeout, workspace=sv.workspace)


async def execute(req):
    sv = req.app.services
    body = await req.json()
    return await sv.executor.run(_parse(sv, body), use_cache=bool(body.get("cache") or body.get("use_cache")))


async def execute_ipython(req):
    sv = req.app.services
    body = await req.json()
    body["language"] = "python"
    return await sv.executor.run(_parse(sv, body, 60), use_cache=bool(body.get("cache")))


async def execute_background(req):
    sv = req.app.services
    body = await req.json()
    job = await sv.executor.background(_parse(sv, body, 300), body.get("name"))
    return {"success": True, "process_id": job.id, "execution_id": job.id,
            "status": job.status, "start_time": job.start_time, "name": job.name, "pid": job.pid,
            "message": "Background execution started"}


async def execute_async(req):
    sv = req.app.services
    body = await req.json()
    exec_req = _parse(sv, body, 1800)
    url = body.get("callback_url")
    headers = body.get("callback_headers") or {}
    if url is not None and not isinstance(url, str):
        raise InvalidRequest("callback_url must be a string")
    if not isinstance(headers, dict):
        raise InvalidRequest("callback_headers must be an object")
    execution_id = sv.executor.start_async(exec_req, url, headers, body.get("callback_signature_secret"))
    return {"success": True, "execution_id": execution_id, "status": "queued", "callback_url": url,
            "message": "Execution queued", "timestamp": now_iso()}


def _job(p: Proc) -> dict:
    """A process of the table as HopX lists it, whichever dialect started it."""
    return {"process_id": p.id, "execution_id": p.id, "name": p.name, "status": p.status, "language": p.language,
            "command": p.command, "start_time": p.start_time, "started_at": p.start_time, "end_time": p.end_time,
            "exit_code": p.exit_code, "duration": p.duration, "pid": p.pid,
            "stdout": p.stdout[-65536:], "stderr": p.stderr[-65536:]}


async def list_jobs(req):
    jobs = [_job(p) for p in req.app.services.processes.listed()]
    return {"processes": jobs, "count": len(jobs), "timestamp": now_iso()}


async def get_job(req):
    return _job(req.app.services.processes.find(req.path_params["process_id"]))


async def kill(req):
    sv = req.app.services
    pid = req.path_params.get("process_id") or req.query.get("process_id") or req.query.get("id")
    if not pid:
        body = await req.json()
        pid = body.get("process_id") or body.get("id")
    if not pid:
        raise MissingParameter("missing parameter: process_id")
    procs = sv.processes
    job = await procs.stop(procs.find(str(pid)))
    return {"success": True, "process_id": job.id, "status": job.status,
            "message": f"process {job.id} {job.status}"}


async def execute_stream(ws):
    sv = ws.request.app.services
    ws.min_gap = STREAM_GAP
    msg = await ws.receive_json()
    if msg is None:
        return
    try:
        exec_req = _parse(sv, msg, 60)
    except InvalidRequest as e:
        await ws.send_json({"type": "error", "error": e.message, "code": e.code})
        await ws.send_json({"type": "complete", "success": False})
        return

    async def on_text(stream: str, text: str) -> None:
        try:
            await ws.send_json({"type": "stderr" if stream == "stderr" else "stdout", "data": text,
                                "timestamp": now_iso()})
        except WebSocketClosed:
            pass  # the run is cancelled by the close watcher below

    run = asyncio.create_task(sv.executor.run(exec_req, on_text))
    closed = asyncio.create_task(ws.until_closed())
    done, _ = await asyncio.wait({run, closed}, return_when=asyncio.FIRST_COMPLETED)
    if run not in done:  # the client went away: stop the code (kernel is interrupted, processes killed)
        run.cancel()
        return
    closed.cancel()
    result = run.result()
    rich = {k: result[k] for k in ("png", "html", "json", "dataframe", "result") if k in result}
    await ws.send_json({"type": "result", "exit_code": result["exit_code"], "success": result["success"],
                        "execution_time": result["execution_time"], "error": result.get("error"), **rich})
    await ws.send_json({"type": "complete", "success": result["success"]})


ROUTES = [
    ("POST", "/execute", execute),
    ("POST", "/execute/rich", execute),
    ("POST", "/execute/ipython", execute_ipython),
    ("POST", "/execute/background", execute_background),
    ("POST", "/execute/async", execute_async),
    ("GET", "/execute/processes", list_jobs),
    ("GET", "/execute/processes/{process_id}", get_job),
    ("POST,DELETE", "/execute/kill/{process_id}", kill),
    ("POST,DELETE", "/execute/kill", kill),
    ("POST,DELETE", "/processes/{process_id}/kill", kill),
    ("DELETE", "/execute/processes/{process_id}", kill),
    (WEBSOCKET, "/execute/stream", execute_stream),
]


def register(app) -> None:
    app.add_routes(ROUTES)

"""Code execution: sync, rich, ipython, background, async (webhook) and the /execute/stream WebSocket."""
from __future__ import annotations

import asyncio

from ..errors import InvalidRequest, MissingParameter
from ..execution import ExecRequest
from ..server import STREAM_GAP, WebSocketClosed, now_iso


def register(app) -> None:
    sv = app.services
    ex = sv.executor

    def parse(body: dict, default_timeout: float = 120) -> ExecRequest:
        return ExecRequest.from_json(body, default_timeout=default_timeout, workspace=sv.workspace)

    async def execute(req):
        body = await req.json()
        return await ex.run(parse(body), use_cache=bool(body.get("cache") or body.get("use_cache")))

    app.route("POST", "/execute", execute)
    app.route("POST", "/execute/rich", execute)

    @app.route("POST", "/execute/ipython")
    async def execute_ipython(req):
        body = await req.json()
        body["language"] = "python"
        return await ex.run(parse(body, 60), use_cache=bool(body.get("cache")))

    @app.route("POST", "/execute/background")
    async def execute_background(req):
        body = await req.json()
        job = await ex.background(parse(body, 300), body.get("name"))
        return {"success": True, "process_id": job.process_id, "execution_id": job.process_id,
                "status": job.status, "start_time": job.start_time, "name": job.name, "pid": job.pid,
                "message": "Background execution started"}

    @app.route("POST", "/execute/async")
    async def execute_async(req):
        body = await req.json()
        exec_req = parse(body, 1800)
        url = body.get("callback_url")
        headers = body.get("callback_headers") or {}
        if url is not None and not isinstance(url, str):
            raise InvalidRequest("callback_url must be a string")
        if not isinstance(headers, dict):
            raise InvalidRequest("callback_headers must be an object")
        execution_id = ex.start_async(exec_req, url, headers, body.get("callback_signature_secret"))
        return {"success": True, "execution_id": execution_id, "status": "queued", "callback_url": url,
                "message": "Execution queued", "timestamp": now_iso()}

    @app.route("GET", "/execute/processes")
    async def list_jobs(req):
        jobs = sv.jobs.list()
        return {"processes": jobs, "count": len(jobs), "timestamp": now_iso()}

    @app.route("GET", "/execute/processes/{process_id}")
    async def get_job(req):
        return sv.jobs.get(req.path_params["process_id"]).info()

    async def kill(req):
        pid = req.path_params.get("process_id") or req.query.get("process_id") or req.query.get("id")
        if not pid:
            body = await req.json()
            pid = body.get("process_id") or body.get("id")
        if not pid:
            raise MissingParameter("missing parameter: process_id")
        job = await sv.jobs.kill(str(pid))
        return {"success": True, "process_id": job.process_id, "status": job.status,
                "message": f"process {job.process_id} {job.status}"}

    app.route("POST,DELETE", "/execute/kill/{process_id}", kill)
    app.route("POST,DELETE", "/execute/kill", kill)
    app.route("POST,DELETE", "/processes/{process_id}/kill", kill)
    app.route("DELETE", "/execute/processes/{process_id}", kill)

    @app.websocket("/execute/stream")
    async def execute_stream(ws):
        ws.min_gap = STREAM_GAP
        msg = await ws.receive_json()
        if msg is None:
            return
        try:
            exec_req = parse(msg, 60)
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

        run = asyncio.create_task(ex.run(exec_req, on_text))
        closed = asyncio.create_task(_until_closed(ws))
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


async def _until_closed(ws) -> None:
    while await ws.receive() is not None:
        pass

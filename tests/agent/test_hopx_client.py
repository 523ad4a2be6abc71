"""The official HopX Python client (hopx-ai 0.5.0) against our agent directly (`Sandbox.debug`)."""
from __future__ import annotations

import asyncio
import types

import pytest

hopx_ai = pytest.importorskip("hopx_ai")


@pytest.fixture
def sb(agent, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    box = hopx_ai.Sandbox.debug(agent[0], "jwt-ignored-by-agent")
    # WebSocket helpers read public_host from the control plane; point them at the agent instead.
    monkeypatch.setattr(box, "get_info", lambda: types.SimpleNamespace(public_host=agent[0]))
    return box


def test_run_code_commands_and_rich_outputs(sb):
    r = sb.run_code("hopx_var = 5\nprint(hopx_var * 2)")
    assert r.success is True and r.stdout == "10\n" and r.exit_code == 0
    r = sb.run_code("import pandas as pd\npd.DataFrame({'a': [1]})")
    assert {getattr(o.type, "value", o.type) for o in r.rich_outputs} >= {"text/html", "application/vnd.dataframe+json"}
    r = sb.run_code("1/0")
    assert r.success is False and "ZeroDivisionError" in r.stderr
    c = sb.commands.run("echo hi && exit 4")
    assert c.stdout == "hi\n" and c.exit_code == 4


def test_files_and_env(sb, workspace):
    p = str(workspace / "hopx.txt")
    sb.files.write(p, "hello")
    assert sb.files.read(p) == "hello"
    sb.files.write_bytes(str(workspace / "hopx.bin"), b"\x00\x01\xff")
    assert sb.files.read_bytes(str(workspace / "hopx.bin")) == b"\x00\x01\xff"
    names = {f.name: f for f in sb.files.list(str(workspace))}
    assert names["hopx.txt"].size == 5 and names["hopx.txt"].modified_time.tzinfo is not None
    assert sb.files.exists(p) is True and sb.files.exists(p + ".nope") is False
    with pytest.raises(hopx_ai.errors.FileNotFoundError):
        sb.files.read(p + ".nope")
    sb.env.set("HOPX_T", "v")
    assert sb.env.get("HOPX_T") == "v"
    sb.env.delete("HOPX_T")
    assert sb.env.get("HOPX_T") is None


def test_processes_metrics_and_info(sb):
    bg = sb.run_code_background("import time; time.sleep(30)")
    assert any(p["process_id"] == bg["process_id"] for p in sb.list_processes())
    assert sb.kill_process(bg["process_id"])["status"] == "killed"
    assert sb.get_metrics_snapshot()["total_requests"] > 0
    assert sb.get_agent_info()["agent"] == "sandboxd-agent"


def test_run_code_stream(sb):
    async def collect():
        return [m async for m in sb.run_code_stream("print('streamed')")]

    msgs = asyncio.run(collect())
    assert any(m.get("type") == "stdout" and m.get("data") == "streamed\n" for m in msgs)
    assert msgs[-1]["type"] == "complete" and msgs[-1]["success"] is True


def test_files_watch(sb, workspace):
    d = workspace / "hopx-watch"
    d.mkdir(exist_ok=True)

    async def first_event():
        async def poke():
            for i in range(50):
                await asyncio.sleep(0.1)
                (d / f"f{i}").write_text("x")

        task = asyncio.create_task(poke())
        try:
            async for event in sb.files.watch(str(d)):
                return event
        finally:
            task.cancel()

    event = asyncio.run(asyncio.wait_for(first_event(), 20))
    assert event["type"] == "change" and event["event"] == "created" and event["path"].startswith(str(d))


def test_terminal(sb):
    async def session():
        ws = await sb.terminal.connect()
        await sb.terminal.resize(ws, 100, 30)
        await sb.terminal.send_input(ws, "echo HOPX-$((40+2)); exit 7\n")
        out, code = "", None
        async for msg in sb.terminal.iter_output(ws):
            if msg["type"] == "output":
                out += msg["data"]
            elif msg["type"] == "exit":
                code = msg["code"]
                break
        await ws.close()
        return out, code

    out, code = asyncio.run(asyncio.wait_for(session(), 30))
    assert "HOPX-42" in out and code == 7


def test_async_client(agent, workspace, monkeypatch):
    """AsyncSandbox parses JSON only with Content-Type application/json and calls /metrics, /processes."""
    from hopx_ai._async_agent_client import AsyncAgentHTTPClient

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    async def go():
        box = hopx_ai.AsyncSandbox("debug", api_key="debug", base_url="http://127.0.0.1:9")
        box._agent_client = AsyncAgentHTTPClient(agent[0], jwt_token="jwt", timeout=60)
        r = await box.run_code("print('async sdk')")
        c = await box.commands.run("echo $X", env={"X": "y"})
        await box.files.write(str(workspace / "async.txt"), "A")
        text = await box.files.read(str(workspace / "async.txt"))
        metrics = await box.get_metrics_snapshot()
        procs = await box.list_processes()
        return r, c, text, metrics, procs

    r, c, text, metrics, procs = asyncio.run(go())
    assert r.success is True and r.stdout == "async sdk\n"
    assert c.stdout == "y\n"
    assert text == "A"
    assert metrics["total_requests"] > 0
    assert any("sandboxd.agent" in p["command"] for p in procs)

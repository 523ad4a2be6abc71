"""One table of user processes for both dialects: what envd starts, HopX lists and kills, and the reverse."""
from __future__ import annotations

import asyncio
import base64
import os

from envd_wire import STREAM, envelope, parse_envelopes

from sandboxd.agent.processes import Processes

P = "/e2b/49983/process.Process"
TICKER = "while true; do echo tick; sleep 0.1; done"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def _start_detached(client, msg: dict) -> int:
    """Starts a process through envd and leaves it running without a stream: its pid."""
    async with client.stream("POST", f"{P}/Start", content=envelope(msg), headers=STREAM) as first:
        head = await first.aiter_raw().__anext__()
    return parse_envelopes(head[: 5 + int.from_bytes(head[1:5], "big")])[0][1]["event"]["start"]["pid"]


async def test_an_envd_process_is_listed_and_killed_by_hopx(agent):
    client, _, _ = agent
    pid = await _start_detached(client, {"process": {"cmd": "/bin/bash", "args": ["-c", TICKER]}, "tag": "ticker"})

    listed = {p["pid"]: p for p in (await client.get("/execute/processes")).json()["processes"]}
    job = listed[pid]
    assert job["status"] == "running" and job["name"] == "ticker"
    assert job["command"] == f"/bin/bash -c {TICKER}" and job["end_time"] is None

    r = await client.post(f"/processes/{job['process_id']}/kill")
    assert r.status_code == 200 and r.json()["status"] == "killed"
    assert _gone(pid)
    ended = (await client.get(f"/execute/processes/{job['process_id']}")).json()
    assert ended["status"] == "killed" and ended["exit_code"] == 137 and ended["end_time"]
    # For envd it has ended: no longer listed, and a signal to it is NOT_FOUND.
    assert (await client.post(f"{P}/List", json={})).json().get("processes", []) == []
    r = await client.post(f"{P}/SendSignal", json={"process": {"tag": "ticker"}, "signal": "SIGNAL_SIGKILL"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"


async def test_a_hopx_background_command_is_listed_streamed_and_killed_by_envd(agent):
    client, tmp, _ = agent
    started = (await client.post("/commands/background", json={
        "command": "bash", "args": ["-c", TICKER], "env": {"GREETING": "hi"}, "workdir": str(tmp),
        "name": "hopx-ticker"})).json()
    pid = started["pid"]

    listed = (await client.post(f"{P}/List", json={})).json()["processes"]
    assert len(listed) == 1 and "tag" not in listed[0]
    entry = listed[0]
    assert entry["pid"] == pid and entry["config"]["cmd"].endswith("bash")
    assert entry["config"]["args"] == ["-c", TICKER]
    assert entry["config"]["envs"] == {"GREETING": "hi"} and entry["config"]["cwd"] == str(tmp)

    async def kill_soon():
        await asyncio.sleep(0.4)
        r = await client.post(f"{P}/SendSignal", json={"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"})
        assert r.status_code == 200

    killer = asyncio.create_task(kill_soon())
    r = await client.post(f"{P}/Connect", content=envelope({"process": {"pid": pid}}), headers=STREAM)
    await killer
    events = [m["event"] for f, m in parse_envelopes(r.content) if f == 0]
    assert events[0] == {"start": {"pid": pid}}
    assert b"tick" in b"".join(base64.b64decode(e["data"]["stdout"]) for e in events if "data" in e)
    assert events[-1]["end"] == {"exitCode": -1, "exited": False, "status": "signal: killed"}

    job = (await client.get(f"/execute/processes/{started['process_id']}")).json()
    assert job["status"] == "killed" and job["name"] == "hopx-ticker" and "tick" in job["stdout"]
    assert (await client.post(f"{P}/List", json={})).json().get("processes", []) == []


async def test_the_table_forgets_the_oldest_ended_processes_only(tmp_path):
    procs = Processes(keep=3)
    env = {"PATH": "/usr/bin:/bin"}
    running = await procs.background(["sleep", "30"], cwd=str(tmp_path), env=env, timeout=None, language="bash")
    ended = []
    for _ in range(4):
        p = await procs.background(["true"], cwd=str(tmp_path), env=env, timeout=None, language="bash")
        await p.done.wait()
        ended.append(p)
    try:
        assert [p.id for p in procs.listed()] == [running.id, ended[2].id, ended[3].id]
        assert procs.get(running.pid) is running and procs.find(ended[3].id).status == "completed"
    finally:
        await procs.stop(running)
    assert running.status == "killed" and procs.running() == []

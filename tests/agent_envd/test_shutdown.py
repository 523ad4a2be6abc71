"""The agent's Services.shutdown() also ends what E2B's envd started: processes and interpreter kernels."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from envd_wire import STREAM, envelope, parse_envelopes

P = "/e2b/49983/process.Process"
J = "/e2b/49999"


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def gone(pid: int, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.05)):
        if not alive(pid):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_shutdown_ends_envd_processes_and_kernels(agent):
    client, _, app = agent
    body = envelope({"process": {"cmd": "/bin/sleep", "args": ["300"]}, "tag": "sleeper"})
    async with client.stream("POST", f"{P}/Start", content=body, headers=STREAM) as first:
        head = await first.aiter_raw().__anext__()
        pid = parse_envelopes(head[: 5 + int.from_bytes(head[1:5], "big")])[0][1]["event"]["start"]["pid"]
    kernel_pid = None
    async with client.stream("POST", f"{J}/execute", json={"code": "import os; print(os.getpid())"}) as r:
        async for line in r.aiter_lines():
            if line.strip() and json.loads(line)["type"] == "stdout":
                kernel_pid = int(json.loads(line)["text"])
    assert alive(pid) and kernel_pid and alive(kernel_pid)
    await app.services.shutdown()
    assert await gone(pid), "the envd process outlived the agent's shutdown"
    assert await gone(kernel_pid), "the code interpreter's kernel outlived the agent's shutdown"

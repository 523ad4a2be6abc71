"""The async sandbox's sub-APIs: commands, files, env and terminal (mirrors `_parts`)."""
from __future__ import annotations

import asyncio
import inspect
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, AsyncIterator
from urllib.parse import quote

from ._agent import OnText, StreamCollector, command_body, stream_frame, terminal_path, write_body
from ._errors import CommandExitError, NotFoundError, RequestTimeoutError
from ._models import CommandResult, FileEntry, FileEvent, ProcessInfo
from ._ws import AsyncSocket

if TYPE_CHECKING:
    from ._async_sandbox import AsyncSandbox

CHUNK = 1024 * 1024


async def call_back(calls: list) -> None:
    for cb, data in calls:
        r = cb(data)
        if inspect.isawaitable(r):
            await r


class AsyncCommandHandle:
    def __init__(self, sandbox: "AsyncSandbox", process_id: str):
        self._sb, self.process_id = sandbox, process_id

    async def info(self) -> ProcessInfo:
        for p in await self._sb.commands.list():
            if p.process_id == self.process_id:
                return p
        raise NotFoundError(f"process {self.process_id} not found", code="PROCESS_NOT_FOUND")

    async def wait(self, timeout: float | None = None, *, check: bool = False, poll: float = 0.2) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (info := await self.info()).running:
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeoutError(f"process {self.process_id} still running after {timeout}s")
            await asyncio.sleep(poll)
        result = CommandResult(stdout=info.raw.get("stdout") or "", stderr=info.raw.get("stderr") or "",
                               exit_code=int(info.exit_code if info.exit_code is not None else -1),
                               execution_time=float(info.raw.get("duration") or 0.0), raw=info.raw)
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result

    async def kill(self) -> None:
        await self._sb._agent.json("POST", f"/execute/kill/{quote(self.process_id, safe='')}")


class AsyncCommands:
    def __init__(self, sandbox: "AsyncSandbox"):
        self._sb = sandbox

    async def run(self, cmd: str, *, background: bool = False, on_stdout: OnText = None, on_stderr: OnText = None,
                  timeout: float = 60, env: dict[str, str] | None = None, cwd: str | None = None,
                  user: str | None = None, check: bool = False) -> Any:
        """See `Commands.run`; callbacks may be plain functions or coroutines."""
        body = command_body(cmd, timeout, env, cwd, user)
        if background:
            resp = await self._sb._agent.json("POST", "/commands/background", json=body)
            return AsyncCommandHandle(self._sb, str(resp.get("process_id") or resp.get("execution_id")))
        if on_stdout or on_stderr:
            col = StreamCollector(on_stdout, on_stderr)
            frame = stream_frame(cmd, body)
            async with self._sb._socket("/execute/stream") as ws:
                await ws.send(frame)
                async for msg in ws:
                    await call_back(col.feed(msg))
                    if col.done:
                        break
            result = col.command()
        else:
            result = CommandResult.from_wire(await self._sb._agent.json("POST", "/commands/run", json=body,
                                                                         timeout=timeout + 30))
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result

    async def list(self) -> list[ProcessInfo]:
        resp = await self._sb._agent.json("GET", "/execute/processes")
        return [ProcessInfo.from_wire(p) for p in resp.get("processes") or []]

    async def kill(self, process_id: str) -> None:
        await AsyncCommandHandle(self._sb, process_id).kill()


class AsyncFiles:
    def __init__(self, sandbox: "AsyncSandbox"):
        self._sb = sandbox

    async def read(self, path: str) -> str:
        return (await self.read_bytes(path)).decode("utf-8", "replace")

    async def read_bytes(self, path: str) -> bytes:
        return (await self._sb._agent.request("GET", "/files/download", params={"path": path})).content

    async def write(self, path: str, data: str | bytes, *, mode: str | None = None) -> None:
        await self._sb._agent.json("POST", "/files/write", json=write_body(path, data, mode), retry=True)

    async def list(self, path: str = "/workspace") -> list[FileEntry]:
        resp = await self._sb._agent.json("GET", "/files/list", params={"path": path})
        return [FileEntry.from_wire(f) for f in resp.get("files") or []]

    async def exists(self, path: str) -> bool:
        return bool((await self._sb._agent.json("GET", "/files/exists", params={"path": path})).get("exists"))

    async def remove(self, path: str) -> None:
        await self._sb._agent.json("DELETE", "/files/remove", params={"path": path})

    async def mkdir(self, path: str) -> None:
        await self._sb._agent.json("POST", "/files/mkdir", json={"path": path}, retry=True)

    async def upload(self, source: str | Path | IO[bytes], path: str) -> None:
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                return await self.upload(f, path)
        # httpx's async multipart reads sync file objects in chunks, so memory use stays flat.
        await self._sb._agent.json("POST", "/files/upload", data={"path": path},
                                   files={"file": (Path(path).name or "file", source, "application/octet-stream")},
                                   timeout=None)

    async def download(self, path: str, dest: str | Path | IO[bytes]) -> int:
        if isinstance(dest, (str, Path)):
            with open(dest, "wb") as f:
                return await self.download(path, f)
        n = 0
        async with self._sb._agent.stream("GET", "/files/download", params={"path": path}, timeout=None) as resp:
            async for chunk in resp.aiter_bytes(CHUNK):
                dest.write(chunk)
                n += len(chunk)
        return n

    async def watch(self, path: str = "/workspace", *, timeout: float | None = None) -> AsyncIterator[FileEvent]:
        async with self._sb._socket("/files/watch") as ws:
            await ws.send({"action": "watch", "path": path})
            while True:
                try:
                    msg = await asyncio.wait_for(ws.recv(), timeout)
                except asyncio.TimeoutError:
                    return
                if msg is None:
                    return
                if msg.get("type") == "change":
                    yield FileEvent.from_wire(msg)


class AsyncEnv:
    def __init__(self, sandbox: "AsyncSandbox"):
        self._sb = sandbox

    async def get_all(self) -> dict[str, str]:
        return dict((await self._sb._agent.json("GET", "/env")).get("env_vars") or {})

    async def get(self, key: str, default: str | None = None) -> str | None:
        return (await self.get_all()).get(key, default)

    async def set(self, key: str, value: str) -> None:
        await self.update({key: value})

    async def update(self, values: dict[str, str]) -> None:
        await self._sb._agent.json("PATCH", "/env", json={"env_vars": values, "merge": True}, retry=True)

    async def replace(self, values: dict[str, str]) -> None:
        await self._sb._agent.json("PUT", "/env", json={"env_vars": values})

    async def delete(self, key: str) -> None:
        values = await self.get_all()
        if key in values:
            del values[key]
            await self.replace(values)


class AsyncTerminalSession:
    def __init__(self, ws: AsyncSocket):
        self._ws = ws
        self.exit_code: int | None = None

    async def send(self, data: str) -> None:
        await self._ws.send({"type": "input", "data": data})

    async def resize(self, cols: int, rows: int) -> None:
        await self._ws.send({"type": "resize", "cols": cols, "rows": rows})

    async def recv(self) -> str | None:
        while True:
            msg = await self._ws.recv()
            if msg is None:
                return None
            if msg.get("type") == "output":
                return str(msg.get("data", ""))
            if msg.get("type") == "exit":
                self.exit_code = int(msg.get("code") or msg.get("exit_code") or 0)
                return None

    async def read_until(self, text: str, timeout: float = 10.0) -> str:
        out = ""

        async def loop() -> None:
            nonlocal out
            while text not in out:
                chunk = await self.recv()
                if chunk is None:
                    return
                out += chunk

        try:
            await asyncio.wait_for(loop(), timeout)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"terminal output did not contain {text!r} within {timeout}s") from None
        return out


class AsyncTerminal:
    def __init__(self, sandbox: "AsyncSandbox"):
        self._sb = sandbox

    @asynccontextmanager
    async def connect(self, cols: int = 80, rows: int = 24, *,
                      user: str | None = None) -> AsyncIterator[AsyncTerminalSession]:
        """`user` runs the shell as that account of the sandbox (default: the agent's own, root)."""
        async with self._sb._socket(terminal_path(user)) as ws:
            term = AsyncTerminalSession(ws)
            await term.resize(cols, rows)
            yield term

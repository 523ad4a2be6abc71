"""The synchronous sandbox's sub-APIs: commands, files, env and terminal."""
from __future__ import annotations

import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator
from urllib.parse import quote

from ._agent import OnText, StreamCollector, command_body, stream_frame, terminal_path, write_body
from ._errors import CommandExitError, RequestTimeoutError
from ._models import CommandResult, FileEntry, FileEvent, ProcessInfo
from ._ws import SyncSocket

if TYPE_CHECKING:
    from ._sandbox import Sandbox

CHUNK = 1024 * 1024


def _q(path: str) -> str:
    return quote(path, safe="/")


class CommandHandle:
    """A command running in the background. `wait()` polls until it ends; `kill()` stops it."""

    def __init__(self, sandbox: "Sandbox", process_id: str):
        self._sb, self.process_id = sandbox, process_id

    def info(self) -> ProcessInfo:
        for p in self._sb.commands.list():
            if p.process_id == self.process_id:
                return p
        from ._errors import NotFoundError

        raise NotFoundError(f"process {self.process_id} not found", code="PROCESS_NOT_FOUND")

    def wait(self, timeout: float | None = None, *, check: bool = False, poll: float = 0.2) -> CommandResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (info := self.info()).running:
            if deadline is not None and time.monotonic() > deadline:
                raise RequestTimeoutError(f"process {self.process_id} still running after {timeout}s")
            time.sleep(poll)
        result = CommandResult(stdout=info.raw.get("stdout") or "", stderr=info.raw.get("stderr") or "",
                               exit_code=int(info.exit_code if info.exit_code is not None else -1),
                               execution_time=float(info.raw.get("duration") or 0.0), raw=info.raw)
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result

    def kill(self) -> None:
        self._sb._agent.json("POST", f"/execute/kill/{quote(self.process_id, safe='')}")


class Commands:
    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def run(self, cmd: str, *, background: bool = False, on_stdout: OnText = None, on_stderr: OnText = None,
            timeout: float = 60, env: dict[str, str] | None = None, cwd: str | None = None,
            user: str | None = None, check: bool = False) -> Any:
        """Run `cmd` with bash. Returns a CommandResult (a non-zero exit is a result unless `check`),
        or a CommandHandle with `background=True`. Callbacks receive output as it is produced."""
        body = command_body(cmd, timeout, env, cwd, user)
        if background:
            resp = self._sb._agent.json("POST", "/commands/background", json=body)
            return CommandHandle(self._sb, str(resp.get("process_id") or resp.get("execution_id")))
        if on_stdout or on_stderr:
            col = StreamCollector(on_stdout, on_stderr)
            frame = stream_frame(cmd, body)
            with self._sb._socket("/execute/stream") as ws:
                ws.send(frame)
                for msg in ws:
                    for cb, data in col.feed(msg):
                        cb(data)
                    if col.done:
                        break
            result = col.command()
        else:
            result = CommandResult.from_wire(self._sb._agent.json("POST", "/commands/run", json=body,
                                                                   timeout=timeout + 30))
        if check and result.exit_code != 0:
            raise CommandExitError(result)
        return result

    def list(self) -> list[ProcessInfo]:
        resp = self._sb._agent.json("GET", "/execute/processes")
        return [ProcessInfo.from_wire(p) for p in resp.get("processes") or []]

    def kill(self, process_id: str) -> None:
        CommandHandle(self._sb, process_id).kill()


class Files:
    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def read(self, path: str) -> str:
        return self.read_bytes(path).decode("utf-8", "replace")

    def read_bytes(self, path: str) -> bytes:
        return self._sb._agent.request("GET", "/files/download", params={"path": path}).content

    def write(self, path: str, data: str | bytes, *, mode: str | None = None) -> None:
        self._sb._agent.json("POST", "/files/write", json=write_body(path, data, mode), retry=True)

    def list(self, path: str = "/workspace") -> list[FileEntry]:
        resp = self._sb._agent.json("GET", "/files/list", params={"path": path})
        return [FileEntry.from_wire(f) for f in resp.get("files") or []]

    def exists(self, path: str) -> bool:
        return bool(self._sb._agent.json("GET", "/files/exists", params={"path": path}).get("exists"))

    def remove(self, path: str) -> None:
        self._sb._agent.json("DELETE", "/files/remove", params={"path": path})

    def mkdir(self, path: str) -> None:
        self._sb._agent.json("POST", "/files/mkdir", json={"path": path}, retry=True)

    def upload(self, source: str | Path | IO[bytes], path: str) -> None:
        """Stream a local file (or binary file object) into the sandbox; memory use stays flat."""
        if isinstance(source, (str, Path)):
            with open(source, "rb") as f:
                return self.upload(f, path)
        self._sb._agent.json("POST", "/files/upload", data={"path": path},
                             files={"file": (Path(path).name or "file", source, "application/octet-stream")},
                             timeout=None)

    def download(self, path: str, dest: str | Path | IO[bytes]) -> int:
        """Stream a sandbox file to a local path or binary file object; returns the byte count."""
        if isinstance(dest, (str, Path)):
            with open(dest, "wb") as f:
                return self.download(path, f)
        n = 0
        with self._sb._agent.stream("GET", "/files/download", params={"path": path}, timeout=None) as resp:
            for chunk in resp.iter_bytes(CHUNK):
                dest.write(chunk)
                n += len(chunk)
        return n

    def watch(self, path: str = "/workspace", *, timeout: float | None = None) -> Iterator[FileEvent]:
        """Yield changes under `path` as they happen (until the iterator is closed or `timeout`
        seconds pass without a change)."""
        with self._sb._socket("/files/watch") as ws:
            ws.send({"action": "watch", "path": path})
            while True:
                try:
                    msg = ws.recv(timeout=timeout)
                except RequestTimeoutError:
                    return
                if msg is None:
                    return
                if msg.get("type") == "change":
                    yield FileEvent.from_wire(msg)


class Env:
    """The sandbox's global environment variables (seen by every later command and code run)."""

    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def get_all(self) -> dict[str, str]:
        return dict(self._sb._agent.json("GET", "/env").get("env_vars") or {})

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.get_all().get(key, default)

    def set(self, key: str, value: str) -> None:
        self.update({key: value})

    def update(self, values: dict[str, str]) -> None:
        self._sb._agent.json("PATCH", "/env", json={"env_vars": values, "merge": True}, retry=True)

    def replace(self, values: dict[str, str]) -> None:
        self._sb._agent.json("PUT", "/env", json={"env_vars": values})

    def delete(self, key: str) -> None:
        values = self.get_all()
        if key in values:
            del values[key]
            self.replace(values)


class TerminalSession:
    """An interactive shell over the agent's /terminal WebSocket."""

    def __init__(self, ws: SyncSocket):
        self._ws = ws
        self.exit_code: int | None = None

    def send(self, data: str) -> None:
        self._ws.send({"type": "input", "data": data})

    def resize(self, cols: int, rows: int) -> None:
        self._ws.send({"type": "resize", "cols": cols, "rows": rows})

    def recv(self, timeout: float | None = None) -> str | None:
        """The next chunk of output; None once the shell exited (see `exit_code`)."""
        while True:
            msg = self._ws.recv(timeout=timeout)
            if msg is None:
                return None
            if msg.get("type") == "output":
                return str(msg.get("data", ""))
            if msg.get("type") == "exit":
                self.exit_code = int(msg.get("code") or msg.get("exit_code") or 0)
                return None

    def read_until(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        out = ""
        while text not in out:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestTimeoutError(f"terminal output did not contain {text!r} within {timeout}s")
            chunk = self.recv(timeout=left)
            if chunk is None:
                break
            out += chunk
        return out

    def close(self) -> None:
        self._ws.close()


class Terminal:
    def __init__(self, sandbox: "Sandbox"):
        self._sb = sandbox

    def connect(self, cols: int = 80, rows: int = 24, *, user: str | None = None):
        """A context manager yielding a TerminalSession; `user` runs the shell as that account of the sandbox
        (default: the agent's own, root)."""
        from contextlib import contextmanager

        @contextmanager
        def session() -> Iterator[TerminalSession]:
            with self._sb._socket(terminal_path(user)) as ws:
                term = TerminalSession(ws)
                term.resize(cols, rows)
                yield term

        return session()

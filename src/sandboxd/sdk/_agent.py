"""Request bodies and stream-frame handling for the agent API (docs/clients/hopx.md §3), shared by the
sync and async sandboxes so both send exactly the same thing."""
from __future__ import annotations

import base64
from typing import Any, Callable

from ._models import CommandResult, Execution

OnText = Callable[[str], Any] | None


def exec_body(code: str, language: str, timeout: float, env: dict[str, str] | None, workdir: str | None) -> dict:
    body: dict[str, Any] = {"code": code, "language": language, "timeout": int(timeout)}
    if workdir:  # none: the template's WORKDIR
        body["workdir"] = workdir
    if env:
        body["env"] = env
    return body


def command_body(cmd: str, timeout: float, env: dict[str, str] | None, cwd: str | None,
                 user: str | None = None) -> dict:
    body: dict[str, Any] = {"command": "bash", "args": ["-c", cmd], "timeout": int(timeout)}
    if cwd:  # none: the template's WORKDIR
        body["workdir"] = cwd
    if env:
        body["env"] = env
    if user:
        body["user"] = user
    return body


def stream_frame(cmd: str, body: dict) -> dict:
    """The /execute/stream frame for a command_body (the WebSocket runs the code with bash itself)."""
    extra = {k: body[k] for k in ("workdir", "env", "user") if k in body}
    return {"type": "execute", "code": cmd, "language": "bash", "timeout": body["timeout"], **extra}


def terminal_path(user: str | None) -> str:
    from urllib.parse import urlencode

    return "/terminal" + (f"?{urlencode({'user': user})}" if user else "")


def write_body(path: str, data: str | bytes, mode: str | None) -> dict:
    if isinstance(data, str):
        body: dict[str, Any] = {"path": path, "content": data}
    else:
        body = {"path": path, "content": base64.b64encode(data).decode(), "encoding": "base64"}
    if mode:
        body["mode"] = mode
    return body


class StreamCollector:
    """Folds /execute/stream frames into an Execution, calling the callbacks as text arrives."""

    def __init__(self, on_stdout: OnText, on_stderr: OnText):
        self.on_stdout, self.on_stderr = on_stdout, on_stderr
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.outputs: list[dict] = []
        self.final: dict[str, Any] = {}
        self.done = False

    def feed(self, msg: dict[str, Any]) -> list[tuple[Callable, str]]:
        """Record a frame; returns the callbacks to call (so the async side can await them)."""
        t = msg.get("type")
        calls: list[tuple[Callable, str]] = []
        if t in ("stdout", "stderr"):
            data = str(msg.get("data", ""))
            (self.stdout if t == "stdout" else self.stderr).append(data)
            cb = self.on_stdout if t == "stdout" else self.on_stderr
            if cb:
                calls.append((cb, data))
        elif t in ("result", "display", "display_data", "execute_result") and isinstance(msg.get("data"), dict):
            self.outputs.append({"type": "execute_result" if t in ("result", "execute_result") else "display_data",
                                 "data": msg["data"]})
        if t == "result":
            self.final.update({k: v for k, v in msg.items() if k not in ("type", "data")})
        elif t == "error":
            self.final.setdefault("error", msg.get("error") or msg.get("message") or msg.get("data"))
            self.final["success"] = False
        elif t == "complete":
            self.final.setdefault("success", msg.get("success"))
            for k in ("exit_code", "execution_time", "error"):
                if k in msg and k not in self.final:
                    self.final[k] = msg[k]
            self.done = True
        return calls

    def execution(self) -> Execution:
        wire = {**self.final, "stdout": "".join(self.stdout), "stderr": "".join(self.stderr)}
        if self.outputs:
            wire["outputs"] = self.outputs
        return Execution.from_wire(wire)

    def command(self) -> CommandResult:
        ex = self.execution()
        return CommandResult(stdout=ex.stdout, stderr=ex.stderr, exit_code=ex.exit_code,
                             execution_time=ex.execution_time, raw=ex.raw)

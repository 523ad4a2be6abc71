"""A template's start command and ready check, run inside a freshly started sandbox.

The control plane asks the sandbox's own agent (over its unix socket, right after it answered /health),
so the agent's idle cost does not change and templates without a start command pay nothing. The start
command runs as the template's user, in its workdir, with the sandbox env, detached with `setsid` so it
is an ordinary sandbox process under the sandbox's init (it outlives agent requests and restarts);
its output goes to START_LOG inside the sandbox. Create returns only once the ready check passes; a check
that never passes within its timeout fails the create with the log's tail (the caller destroys the sandbox).
"""
from __future__ import annotations

import asyncio
import shlex
import time
from pathlib import Path

from sandboxd.errors import TemplateError
from sandboxd.runtime import agentclient
from sandboxd.runtime.base import ReadyCheck, TemplateImage

START_LOG = "/tmp/sandboxd-start.log"
POLL = 0.2  # seconds between ready checks
CALL_TIMEOUT = 30.0  # one agent call (a check command is bounded by its own timeout below)


class StartCommandFailed(TemplateError):
    """The template's start command did not become ready (400: retrying the create would not help)."""

    code = "template_start_failed"


def launch_script(start_cmd: str) -> str:
    # `setsid` puts the command in its own session: the agent's process-group kills never reach it,
    # and it is re-parented to the sandbox's init (tini), which reaps it.
    return (f"setsid /bin/sh -c {shlex.quote(start_cmd)} >{START_LOG} 2>&1 </dev/null & echo $!")


def check_script(check: ReadyCheck) -> str:
    """A shell line that exits 0 once the check passes."""
    if check.kind == "port":
        # A listening TCP socket (state 0A) on that port, read from the sandbox's own /proc/net: no
        # client tools needed, and it works whether the server bound 127.0.0.1, 0.0.0.0 or ::.
        port = f"{int(check.value):04X}"
        return (f"grep -Eq '^ *[0-9]+: [0-9A-F]+:{port} [0-9A-F]+:[0-9A-F]+ 0A ' "
                "/proc/net/tcp /proc/net/tcp6 2>/dev/null")
    if check.kind == "file":
        return f"test -e {shlex.quote(check.value)}"
    if check.kind == "process":
        # By process name (the kernel keeps 15 characters of it), as HopX's `processName` means it; a
        # command-line match (`pgrep -f`) would always find the shell running this very check.
        return f"pgrep -x -- {shlex.quote(check.value[:15])} >/dev/null"
    if check.kind == "command":
        return check.value
    raise TemplateError(f"unknown ready check kind {check.kind!r}")


async def _run(sock: Path, image: TemplateImage, script: str, timeout: float) -> dict:
    body = {"command": "/bin/sh", "args": ["-c", script], "user": image.user or "root",
            "workdir": image.workdir or "/workspace", "timeout": timeout}
    return await agentclient.call_json(sock, "POST", "/commands/run", body, timeout + CALL_TIMEOUT, only_200=True)


async def _log_tail(sock: Path, image: TemplateImage) -> str:
    try:
        r = await _run(sock, image, f"tail -c 4000 {START_LOG} 2>/dev/null", 10)
        return r.get("stdout", "")
    except Exception as exc:  # the tail is a courtesy: never hide the real failure behind it
        return f"(log unavailable: {exc})"


async def run_start(sock: Path, image: TemplateImage) -> None:
    """Start the template's command (if any) and wait for its ready check (if any)."""
    if not image.start_cmd and image.ready_check is None:
        return
    t0 = time.monotonic()
    pid = None
    if image.start_cmd:
        r = await _run(sock, image, launch_script(image.start_cmd), 10)
        if r.get("exit_code") != 0:
            raise StartCommandFailed(
                f"the template's start command could not be launched: {r.get('stderr', '').strip()[-500:]}",
                details={"start_cmd": image.start_cmd, "exit_code": r.get("exit_code")})
        pid = (r.get("stdout") or "").strip() or None
    check = image.ready_check
    if check is None:
        return
    script = check_script(check)
    deadline = t0 + check.timeout_seconds
    last = {}
    while True:
        left = deadline - time.monotonic()
        last = await _run(sock, image, script, max(1.0, min(10.0, left)))
        if last.get("exit_code") == 0:
            return
        if time.monotonic() + POLL >= deadline:
            break
        await asyncio.sleep(POLL)
    tail = await _log_tail(sock, image)
    raise StartCommandFailed(
        f"the template's ready check ({check.kind} {check.value}) did not pass within "
        f"{check.timeout_seconds:g} s; start command log: {tail.strip()[-1000:] or '(empty)'}",
        details={"start_cmd": image.start_cmd, "ready_check": {"kind": check.kind, "value": check.value,
                 "timeout_seconds": check.timeout_seconds}, "pid": pid, "log_tail": tail,
                 "last_check": {"exit_code": last.get("exit_code"), "stderr": (last.get("stderr") or "")[-500:]}})


async def rerun_start(lifecycle, sid: str, template_id: str | None, rt) -> None:
    """After a stopped sandbox boots again its processes are gone: run the start command again.
    If it does not become ready the sandbox is stopped again, so the row (still `stopped`) stays true."""
    from sandboxd.errors import NotFound

    try:
        image = await lifecycle.catalog.image(lifecycle.catalog.get(template_id or ""))
    except NotFound:  # its template was deleted since: nothing left to start
        return
    try:
        await run_start(rt.agent_socket, image)
    except BaseException:
        await asyncio.shield(lifecycle.backend.stop(sid))
        raise

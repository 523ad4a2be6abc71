"""Running the X tools: asynchronously (the agent's event loop must never block), with a deadline,
and with their failures turned into DesktopToolFailed carrying the stderr tail."""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
from collections import deque

from .errors import DesktopToolFailed

# Last lines the desktop processes and failed tools wrote; served by GET /desktop/debug/logs.
LOG: deque[str] = deque(maxlen=500)


def log(line: str) -> None:
    LOG.append(line.rstrip())


async def run(argv: list[str], env: dict[str, str], *, data: bytes | None = None, timeout: float = 15.0,
              check: bool = True, capture: bool = True) -> tuple[int, bytes, bytes]:
    """Run one tool to completion; returns (exit code, stdout, stderr).

    capture=False for tools that leave a daemon child behind (xclip): it would hold our pipes open.
    """
    out_to = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
    try:
        p = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
            stdout=out_to, stderr=out_to, start_new_session=True)
    except OSError as e:
        raise DesktopToolFailed(f"{argv[0]}: {e}", details={"argv": argv}) from e
    try:
        out, err = await asyncio.wait_for(p.communicate(data), timeout)
        # communicate() returns only after the child has been reaped
        assert p.returncode is not None
    except asyncio.TimeoutError:
        _kill_group(p.pid)
        await p.wait()
        raise DesktopToolFailed(f"{argv[0]} did not finish within {timeout:g} s", details={"argv": argv}) from None
    if check and p.returncode != 0:
        tail = (err or b"").decode(errors="replace").strip()[-800:]
        log(f"{' '.join(argv)} -> exit {p.returncode}: {tail}")
        raise DesktopToolFailed(f"{argv[0]} failed (exit {p.returncode}): {tail}",
                                details={"argv": argv, "exit_code": p.returncode})
    return p.returncode, out or b"", err or b""


def die_with_agent() -> None:
    """preexec_fn: the child gets SIGTERM when the agent dies, so a restarted agent finds the display
    free instead of an orphaned X server it knows nothing about (and host tests leave nothing behind)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


async def spawn(argv: list[str], env: dict[str, str], log_path: str, *,
                stdin: int = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
    """Start a long-lived desktop process (X server, window manager, recorder) logging to a file."""
    with open(log_path, "ab") as f:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=stdin, stdout=f, stderr=f, start_new_session=True,
            preexec_fn=die_with_agent)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def terminate(p: asyncio.subprocess.Process | None, grace: float = 2.0) -> None:
    if p is None or p.returncode is not None:
        return
    try:
        p.terminate()
        await asyncio.wait_for(p.wait(), grace)
    except ProcessLookupError:
        return
    except asyncio.TimeoutError:
        _kill_group(p.pid)
        await p.wait()

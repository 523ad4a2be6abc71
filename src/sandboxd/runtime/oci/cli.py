"""Driving the OCI runtime binary (crun or runc): one code path, the few flags where they differ.

Every failure becomes core.errors.RuntimeFailure carrying the runtime's stderr.
"""
from __future__ import annotations

import asyncio
import ctypes
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from sandboxd.core.errors import NotFound, RuntimeFailure, SandboxdError
from sandboxd.runtime import reaper


# Verbs that start processes which must not outlive a SIGKILLed daemon; state/pause/resume/kill/delete
# return in milliseconds and need no death signal.
LONG_VERBS = frozenset({"create", "run", "start", "exec"})


class OciCli:
    def __init__(self, binary: str, root: Path):
        self.binary = binary
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def call(self, *args: str, timeout: float = 60.0, check: bool = True, **kw: Any) -> tuple[int, bytes, bytes]:
        argv = self.argv(*args)
        try:
            if args[0] in LONG_VERBS:  # a preexec_fn forces fork() over vfork(): ~6 ms more per call here
                kw.setdefault("preexec_fn", die_with_parent)
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", subprocess.PIPE),
                stderr=kw.pop("stderr", subprocess.PIPE), **kw)
            reaper.spawned.add(proc.pid)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            finally:
                reaper.spawned.discard(proc.pid)
        except asyncio.TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise RuntimeFailure(f"{self.binary} {args[0]} timed out after {timeout}s", details={"argv": argv}) from exc
        except OSError as exc:
            raise RuntimeFailure(f"{self.binary} {args[0]} failed: {exc}", details={"argv": argv}) from exc
        out, err = out or b"", err or b""
        if check and proc.returncode != 0:
            raise self.failure(args, proc.returncode, err)
        return proc.returncode, out, err

    def failure(self, args: tuple[str, ...] | list[str], rc: int | None, err: bytes) -> SandboxdError:
        text = err.decode(errors="replace").strip()
        if "does not exist" in text:
            return NotFound(f"sandbox container not found: {text}", code="sandbox_not_found")
        return RuntimeFailure(f"{self.binary} {args[0]} failed (exit {rc}): {text}",
                              details={"argv": list(args), "stderr": text, "exit_code": rc})

    async def state(self, container_id: str) -> dict[str, Any] | None:
        """The runtime's view of the container, or None when it does not know it."""
        rc, out, err = await self.call("state", container_id, check=False)
        if rc != 0:
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    async def list_ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        _, out, _ = await self.call("list", "--format", "json", check=False)
        try:
            return [c["id"] for c in json.loads(out or b"[]") or []]
        except (ValueError, TypeError, KeyError):
            return []


def dup_to_fd3(fd: int):
    """preexec_fn putting fd at number 3 in the child (`--preserve-fds 1` hands fds 3.. to the container).

    Used with close_fds=False: pass_fds=(3,) would fail in the child when the parent has no fd 3, and
    close_fds=True would close the new fd 3 after preexec_fn. Python's own fds are non-inheritable, and
    the runtime closes everything above the preserved fds in the container.
    """
    def _pre() -> None:
        die_with_parent()
        if fd != 3:
            os.dup2(fd, 3)
        os.set_inheritable(3, True)
    return _pre


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: a runtime command dies with the daemon, so a SIGKILLed daemon leaves no `crun create`
    finishing behind recover()'s back. (The sandbox's init is a fork of it and keeps running.)"""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

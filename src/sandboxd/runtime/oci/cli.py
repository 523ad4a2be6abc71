"""Driving the OCI runtime binary (crun or runc): one code path, the few flags where they differ.

Every failure becomes sandboxd.errors.RuntimeFailure carrying the runtime's stderr.

The binary is run from a sealed memfd copy made once per daemon. crun and runc defend against
CVE-2019-5736 by re-executing themselves from a sealed copy on every call (as root crun bind-mounts
/proc/self/exe read-only in the host's mount table, else copies itself into a memfd); they skip that when
/proc/self/exe already is a memfd with exactly the seals SEAL|SHRINK|GROW|WRITE (cloned_binary.c,
is_self_cloned). Our copy has those seals, so the defence holds (what a container could reach is an
unwritable memfd) and each call saves ~2.5 ms and two host mount-table changes.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from sandboxd.errors import NotFound, RuntimeFailure, SandboxdError
from sandboxd.runtime import reaper
from sandboxd.runtime.oci.pids import readable
from sandboxd.runtime.uncancellable import uncancellable

log = logging.getLogger("sandboxd.runtime")

# Verbs that start processes which must not outlive a SIGKILLed daemon; state/pause/resume/kill/delete
# return in milliseconds and need no death signal (create/run go through call_with_fd3).
LONG_VERBS = frozenset({"start", "exec"})
SLOW_CALL_SECONDS = 5.0  # the others take ~7 ms: one that takes this long is worth a line in the log


RUNTIME_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_sealed: dict[str, int | None] = {}


def sealed_copy(binary: str) -> int | None:
    """An fd of a sealed memfd holding the runtime binary (one per binary per process), or None when one
    cannot be made (no memfd, the binary not found): then the binary is run as it is."""
    if binary in _sealed:
        return _sealed[binary]
    fd = None
    try:
        path = shutil.which(binary)
        if path is None:
            return None
        fd = os.memfd_create(f"sandboxd:{os.path.basename(path)}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            off = 0
            while off < size:
                n = os.sendfile(fd, src.fileno(), off, size - off)
                if n == 0:
                    raise OSError(f"{path} shrank while being copied")
                off += n
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, RUNTIME_SEALS)
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) != RUNTIME_SEALS:  # e.g. a kernel adding F_SEAL_EXEC
            raise OSError("unexpected seals")
    except (OSError, AttributeError):
        if fd is not None:
            os.close(fd)
        fd = None
    _sealed[binary] = fd
    return fd


class OciCli:
    def __init__(self, binary: str, root: Path, sealed: bool = True):
        self.binary = binary
        self.root = root
        self._fd = sealed_copy(binary) if sealed else None
        if self._fd is not None:  # its orphans are named after the fd: the reaper must know them
            reaper.runtime_comm(os.path.basename(self.executable))

    @property
    def executable(self) -> str:
        # Through our own /proc entry (not /proc/self): the child execs it after close_fds dropped the fd.
        return f"/proc/{os.getpid()}/fd/{self._fd}" if self._fd is not None else self.binary

    def argv(self, *args: str) -> list[str]:
        return [self.executable, "--root", str(self.root), *args]

    async def call(self, *args: str, timeout: float = 60.0, check: bool = True, **kw: Any) -> tuple[int, bytes, bytes]:
        argv = self.argv(*args)
        try:
            if args[0] in LONG_VERBS:  # a preexec_fn forces fork() over vfork(): ~6 ms more per call here
                kw.setdefault("preexec_fn", die_with_parent)
            proc = await reaper.spawn_exec(*argv, stdin=subprocess.DEVNULL, stdout=kw.pop("stdout", subprocess.PIPE),
                                           stderr=kw.pop("stderr", subprocess.PIPE), **kw)
            t0 = time.monotonic()
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            finally:
                reaper.spawned.discard(proc.pid)
                if time.monotonic() - t0 > SLOW_CALL_SECONDS and args[0] not in LONG_VERBS:
                    log.warning("%s %s %s took %.1f s", self.binary, args[0], args[-1], time.monotonic() - t0)
        except asyncio.TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):  # exited, its status taken by someone else
                proc.kill()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
            raise RuntimeFailure(f"{self.binary} {args[0]} timed out after {timeout}s", details={"argv": argv}) from exc
        except OSError as exc:
            raise RuntimeFailure(f"{self.binary} {args[0]} failed: {exc}", details={"argv": argv}) from exc
        out, err = out or b"", err or b""
        assert proc.returncode is not None  # communicate() returned: the process was reaped
        if check and proc.returncode != 0:
            raise self.failure(args, proc.returncode, err)
        return proc.returncode, out, err

    async def call_with_fd3(self, *args: str, fd: int, log: int, timeout: float = 60.0) -> int:
        """Run the runtime with `fd` as its fd 3 (what `--preserve-fds 1` hands to the container), stdin from
        /dev/null, stdout and stderr to `log`; its exit code. posix_spawn (vfork) with dup2 file actions, off
        the event loop with the GIL released (`_spawn_with_fd3`), not subprocess with a preexec_fn: that
        forces a fork() of the whole daemon, ~7 ms with the event loop blocked, on every sandbox start. No
        death signal: `run -d`/`create` return within milliseconds, and recover() removes a container whose
        create the daemon did not see finish. A cancel waits for the runtime to exit (`uncancellable`): the caller's
        teardown then finds the container whole, and the pid leaves `reaper.spawned`."""
        return await uncancellable(self._call_with_fd3(self.argv(*args), args[0], fd, log, timeout))

    async def _call_with_fd3(self, argv: list[str], verb: str, fd: int, log: int, timeout: float) -> int:
        try:
            pid = await asyncio.to_thread(_spawn_with_fd3, argv, fd, log)
        except OSError as exc:
            raise RuntimeFailure(f"{self.binary} {verb} failed: {exc}", details={"argv": argv}) from exc
        try:  # _spawn_with_fd3 put pid in reaper.spawned
            if not await _exited(pid, timeout):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise RuntimeFailure(f"{self.binary} {verb} timed out after {timeout}s", details={"argv": argv})
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        finally:
            reaper.spawned.discard(pid)

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


async def _exited(pid: int, timeout: float) -> bool:
    """Wait (without reaping) until our child pid has exited; False on timeout."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # kernel < 5.3: poll for the zombie instead
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            await asyncio.sleep(0.002)
        return False
    try:
        return await readable(fd, timeout)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _spawn_with_fd3(argv: list[str], fd: int, log: int) -> int:
    """posix_spawnp(3) with stdin from /dev/null, stdout/stderr to `log` and `fd` as fd 3, called through ctypes
    so the GIL is released while it runs: the vfork'd child must get a CPU and exec before posix_spawn
    returns (≈ 2 ms p50, 8 ms at worst, when creates keep both cores busy), and os.posix_spawn holds the GIL
    all that time, stalling the daemon's event loop and every thread. Run it on a worker thread."""
    actions = ctypes.create_string_buffer(256)  # posix_spawn_file_actions_t is opaque (80 bytes in glibc)
    _check(_libc.posix_spawn_file_actions_init(actions))
    try:
        _check(_libc.posix_spawn_file_actions_addopen(actions, 0, b"/dev/null", os.O_RDONLY, 0))
        _check(_libc.posix_spawn_file_actions_adddup2(actions, log, 1))
        _check(_libc.posix_spawn_file_actions_adddup2(actions, log, 2))
        # dup2 onto itself clears close-on-exec (glibc >= 2.29), so fd may already be 3
        _check(_libc.posix_spawn_file_actions_adddup2(actions, fd, 3))
        args = (ctypes.c_char_p * (len(argv) + 1))(*[os.fsencode(a) for a in argv], None)
        env = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in os.environ.items()]
        envp = (ctypes.c_char_p * (len(env) + 1))(*env, None)
        pid = ctypes.c_int()
        with reaper.spawning:
            _check(_libc.posix_spawnp(ctypes.byref(pid), args[0], actions, None, args, envp))
            reaper.spawned.add(pid.value)
        return pid.value
    finally:
        _libc.posix_spawn_file_actions_destroy(actions)


def _check(rc: int) -> None:
    if rc:  # the posix_spawn family returns the error number (errno is not set)
        raise OSError(rc, os.strerror(rc))


def die_with_parent() -> None:
    """preexec_fn: a runtime command dies with the daemon, so a SIGKILLed daemon leaves no `crun create`
    finishing behind recover()'s back. (The sandbox's init is a fork of it and keeps running.)"""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

"""`exec` in a running sandbox through `<runtime> exec`, with the same hardening as its init
(`--no-new-privs`: crun does not apply noNewPrivileges to exec'd processes otherwise).

A user name and the default cwd are looked up in the sandbox's own files, which its code controls: they
are read as the sandbox sees them (its upper dir over its image layers) through runtime.inroot, never by
host path, and in a worker thread with a timeout so a FIFO or a slow disk cannot stall the event loop."""
from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import psutil

from sandboxd.errors import Invalid, RuntimeFailure
from sandboxd.runtime import inroot, reaper
from sandboxd.runtime.base import ExecResult, SandboxSpec
from sandboxd.runtime.oci.cli import OciCli
from sandboxd.runtime.oci.config import DEFAULT_PATH

KNOWN_USERS = {"root": (0, 0, "/root"), "user": (1000, 1000, "/home/user")}
# `crun exec` applies the config's oomScoreAdj (500: sandbox processes are the host's first OOM victims) to the
# init only; an exec'd process inherits the daemon's 0. Through choom (util-linux) the runtime process, and so
# the command it forks, starts at 500. Raising one's own score needs no privilege.
_CHOOM = ("choom", "-n", "500", "--") if shutil.which("choom") else ()
PASSWD_LIMIT = 4 * 1024 * 1024
LOOKUP_TIMEOUT = 10.0


def resolve_user(user: str | int, layers: inroot.Stack) -> tuple[int, int, str]:
    """(uid, gid, home) for "root", "user", a uid, or another name in the sandbox's /etc/passwd."""
    if isinstance(user, int) or str(user).isdigit():
        uid = int(user)
        return uid, uid, "/root" if uid == 0 else "/"
    if user in KNOWN_USERS:
        return KNOWN_USERS[user]
    try:
        text = layers.read("/etc/passwd", PASSWD_LIMIT).decode(errors="replace")
    except OSError:
        text = ""  # absent, or not a regular file of the sandbox (a symlink out, a FIFO): no such user
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 6 and parts[0] == user and parts[2].isdigit() and parts[3].isdigit():
            return int(parts[2]), int(parts[3]), parts[5] or "/"
    raise Invalid(f"unknown user {user!r}", code="invalid_user")


def sandbox_stack(sandbox_dir: Path, spec: SandboxSpec) -> inroot.Stack:
    """The sandbox's root as its processes see it: its overlay upper dir over the image's layers."""
    return inroot.Stack([sandbox_dir / "disk" / "upper", *spec.image.layers])


def _user_and_cwd(sandbox_dir: Path, spec: SandboxSpec, user: str | int,
                  cwd: str | None) -> tuple[int, int, str, str]:
    layers = sandbox_stack(sandbox_dir, spec)
    uid, gid, home = resolve_user(user, layers)
    if cwd is None:
        cwd = spec.image.workdir if layers.is_dir(spec.image.workdir) else "/"
    return uid, gid, home, cwd


def _kill_tree(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        victims = proc.children(recursive=True) + [proc]
    except psutil.Error:
        return
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


async def run_exec(cli: OciCli, container_id: str, sandbox_dir: Path, spec: SandboxSpec, argv: list[str], *,
                   env: dict[str, str] | None, user: str | int, cwd: str | None, timeout: float | None,
                   stdin: bytes | None) -> ExecResult:
    if not argv:
        raise Invalid("exec needs a command")
    if cwd is not None and (isinstance(user, int) or str(user).isdigit() or user in KNOWN_USERS):
        uid, gid, home = resolve_user(user, sandbox_stack(sandbox_dir, spec))  # reads no file
    else:
        try:
            uid, gid, home, cwd = await inroot.run_bounded(_user_and_cwd, sandbox_dir, spec, user, cwd,
                                                           timeout=LOOKUP_TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeFailure("looking up the user in the sandbox's files timed out") from None
    assert cwd is not None  # given, or settled by the lookup
    full_env = {"PATH": DEFAULT_PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "xterm"}
    full_env.update(spec.image.env)
    full_env.update(spec.env)
    full_env.update(env or {})
    pid_file = sandbox_dir / f"exec-{uuid.uuid4().hex[:12]}.pid"
    args = ["exec", "--no-new-privs", "--user", f"{uid}:{gid}", "--cwd", cwd, "--pid-file", str(pid_file)]
    for k, v in full_env.items():
        args += ["--env", f"{k}={v}"]
    args += [container_id, *argv]
    try:
        proc = await reaper.spawn_exec(*_CHOOM, *cli.argv(*args),
                                       stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise RuntimeFailure(f"{cli.binary} exec failed: {exc}") from exc
    timed_out = False
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except asyncio.CancelledError:
        _stop(proc, pid_file)
        raise
    except asyncio.TimeoutError:
        timed_out = True
        try:
            _kill_tree(int(pid_file.read_text().strip()))
        except (OSError, ValueError):
            pass
        # Let the runtime reap its child before it goes: killed first, it would orphan a zombie that pins
        # the sandbox's pid namespace (its init cannot finish exiting until every task in it is reaped).
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 5.0)
        except asyncio.TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
    finally:
        reaper.spawned.discard(proc.pid)
        try:
            pid_file.unlink()
        except OSError:
            pass
    rc = proc.returncode if proc.returncode is not None else -1
    if rc != 0 or timed_out:
        reaper.reap_orphans()  # a command that never started leaves its runtime child to us
    # A command that cannot start (no such binary, bad cwd) is the caller's result (rc 127 and the runtime's
    # message), but a sandbox the runtime no longer knows is a runtime failure.
    if not timed_out and rc != 0 and b"does not exist" in err and container_id.encode() in err:
        raise RuntimeFailure(f"{cli.binary} exec failed: {err.decode(errors='replace').strip()}",
                             details={"stderr": err.decode(errors="replace"), "exit_code": rc})
    return ExecResult(exit_code=rc if not timed_out else -signal.SIGKILL, stdout=out, stderr=err,
                      timed_out=timed_out)


def _stop(proc, pid_file: Path) -> None:
    """The caller gave up on the command (cancelled): end it and its runtime process now."""
    try:
        _kill_tree(int(pid_file.read_text().strip()))
    except (OSError, ValueError):
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass

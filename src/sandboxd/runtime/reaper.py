"""Reaping what the OCI runtime leaves to us as child subreaper.

`crun run -d` and `crun exec` double-fork: the intermediate runtime process and, when an exec fails
early, the process inside the sandbox's pid namespace are re-parented to the nearest subreaper (this
process, see hostsetup.py) and nobody else waits for them. Left alone they pile up as zombies, and a
zombie inside a sandbox's pid namespace keeps its init from ever finishing its exit (the kernel waits
for every task of the namespace to be reaped), so stop/destroy would hang.

We only reap zombies that are certainly such orphans: our children in a deeper pid namespace than ours,
or runtime processes (crun/runc) we did not spawn ourselves (those asyncio's child watcher waits for).
Other code's subprocesses in this process are never touched.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import weakref
from typing import Iterator

spawned: set[int] = set()  # runtime processes we spawned and wait for ourselves
# Held by a spawn from its fork until its pid is in `spawned` (oci/cli.py spawns on worker threads); a reap
# that finds it held skips its turn rather than take a just-spawned child that already exited for an orphan.
spawning = threading.Lock()
_open_windows = 0  # spawns through the event loop between their fork and `spawned` (see spawn_window)
_windows_lock = threading.Lock()  # not `spawning`: a worker thread holds that through a whole posix_spawn
_RUNTIMES = (b"crun", b"runc")
# The names runtime processes run under besides those: exec'd from the daemon's sealed copy
# (/proc/<pid>/fd/N, oci/cli.py) the kernel names them "N", and their forks inherit it.
_runtime_comms: set[bytes] = set()


def runtime_comm(name: str) -> None:
    """Treat orphaned zombies named `name` (as the kernel names an exec of that path's last component) as
    runtime processes."""
    _runtime_comms.add(name.encode()[:15])  # TASK_COMM_LEN - 1


def _ns_depth(pid: str) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"NSpid:"):
                    return len(line.split()) - 1
    except OSError:
        pass
    return 0


_own_depth: int | None = None


def _asyncio_watched() -> set[int]:
    """Children asyncio's child watcher is waiting for. It registers a child right after forking it, but
    OciCli.call adds the pid to `spawned` only after an await: in between, a `crun state` that already
    exited looked like an orphan, was reaped here, and asyncio reported returncode 255 -- a healthy
    sandbox then read as dead and was killed (seen with 200 sandboxes)."""
    try:
        return set(getattr(asyncio.get_child_watcher(), "_threads", ()))
    except Exception:
        return set()


def _candidates() -> list[str]:
    """Our children: each thread's `children` list (an orphan goes to one of the subreaper's threads), a few
    files instead of every process's stat (which costs ~7 ms per sandbox start once the host runs hundreds of
    processes). Every pid in /proc where the kernel lacks CONFIG_PROC_CHILDREN."""
    try:
        tasks = os.listdir("/proc/self/task")
        kids: list[str] = []
        for tid in tasks:
            try:
                with open(f"/proc/self/task/{tid}/children") as fh:
                    kids += fh.read().split()
            except FileNotFoundError:
                if not os.path.exists(f"/proc/self/task/{tid}"):
                    continue  # the thread ended meanwhile
                raise
        return kids
    except OSError:
        try:
            return [p for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return []


@contextlib.contextmanager
def spawn_window() -> Iterator[None]:
    """Around an event-loop spawn (`asyncio.create_subprocess_exec`) and the `spawned.add` of its pid, which
    comes only after an await: the reap takes no zombie meanwhile. Under uvloop (what `uvicorn.run` picks when
    installed: the monitoring tests' server) libuv waits for its children itself and never learns of one
    reaped here first; the caller's `communicate()` then hangs until its timeout (a `crun delete` of a
    killed sandbox held its release 60 s in CI). asyncio's own watcher is respected by `_asyncio_watched`."""
    global _open_windows
    with _windows_lock:
        _open_windows += 1
    try:
        yield
    finally:
        with _windows_lock:
            _open_windows -= 1


async def spawn_exec(*argv: str, **kw) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec` of a runtime process, its pid in `spawned` before any reap can take it.
    The caller waits for it, then discards the pid."""
    with spawn_window():
        proc = await asyncio.create_subprocess_exec(*argv, **kw)
        spawned.add(proc.pid)
    return proc


def reap_orphans() -> int:
    """Reap orphaned zombie children (see module doc); returns how many were reaped (0 when a spawn is under
    way: the callers call again, at the next create or wait)."""
    if not spawning.acquire(blocking=False):
        return 0
    try:
        return _reap_orphans()
    finally:
        spawning.release()


def _reap_orphans() -> int:
    global _own_depth
    if _own_depth is None:
        _own_depth = _ns_depth("self")
    me = str(os.getpid()).encode()
    watched = _asyncio_watched()
    reaped = 0
    for p in _candidates():
        try:
            with open(f"/proc/{p}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        name, _, rest = raw.partition(b" (")[2].rpartition(b") ")
        fields = rest.split()
        if len(fields) < 2 or fields[0] != b"Z" or fields[1] != me:
            continue
        pid = int(p)
        # Checked after the zombie was seen: had a window forked it, that window is still open, or closed
        # with the pid in `spawned`.
        if _open_windows or pid in spawned or pid in watched:
            continue
        if _ns_depth(p) > _own_depth or name.startswith(_RUNTIMES) or name in _runtime_comms:
            try:
                os.waitpid(pid, os.WNOHANG)
                reaped += 1
            except ChildProcessError:
                pass
    return reaped


_ticking: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()  # loops that already tick
REAP_EVERY = 1.0  # seconds


def reap_periodically() -> None:
    """Also reap once a second on the running loop (once per loop), not only at creates, kills and waits:
    a runtime process that outlives the reap at its create (crun's intermediate, under load) would stay a
    zombie until the next one. A timer, not a SIGCHLD handler: a Python signal handler would interrupt
    system calls in every thread of the daemon at each child's exit."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if loop in _ticking:
        return
    _ticking.add(loop)

    def tick() -> None:
        reap_orphans()
        loop.call_later(REAP_EVERY, tick)

    loop.call_later(REAP_EVERY, tick)

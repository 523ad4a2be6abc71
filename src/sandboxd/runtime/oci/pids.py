"""Host-side process liveness of the OCI backend: is a pid alive, reap it when it is our (subreaper) child,
wait until it is gone (woken by a pidfd)."""
from __future__ import annotations

import asyncio
import os
import time

from sandboxd.runtime import reaper


def reap(pid: int | None) -> bool:
    """Collect pid if it is our (subreaper) child and has exited. True when it is gone."""
    if not pid:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return not alive(pid)


def alive(pid: int | None) -> bool:
    """True while pid exists and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def readable(fd: int, timeout: float) -> bool:
    """Until fd is readable (a pidfd: its process has exited); False on timeout."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(True)

    loop.add_reader(fd, wake)
    try:
        await asyncio.wait_for(ready, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def wait_gone(pid: int | None, timeout: float = 10.0) -> None:
    """Until pid has exited (and is reaped when it is our child). Woken by a pidfd when the kernel has one,
    so a kill does not pay a polling interval."""
    if not pid or reap(pid) or not alive(pid):
        reap(pid)
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        reap(pid)
        return
    except (OSError, AttributeError):
        fd = None
    deadline = time.monotonic() + timeout
    first = True
    try:
        while time.monotonic() < deadline:
            # An orphaned zombie in its pid namespace keeps init from finishing its exit: reap those (a
            # scan of /proc, so not before the first wait: usually there are none).
            if not first:
                reaper.reap_orphans()
            first = False
            if reap(pid) or not alive(pid):
                break
            if fd is None:
                await asyncio.sleep(0.005)
                continue
            await readable(fd, 0.05)
    finally:
        if fd is not None:
            os.close(fd)
    reap(pid)

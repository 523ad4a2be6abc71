"""Ending a sandbox (OciBackend's teardown half): kill its processes through the cgroup, forget the
container, release network, mounts, loop disk, cgroup and files. destroy(background=True) does the first
part now and the rest on a task (see destroy)."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sandboxd.errors import Conflict, RuntimeFailure
from sandboxd.runtime import network, uidslots
from sandboxd.runtime.cgroups import Layout, SandboxCgroup
from sandboxd.runtime.egressproxy.client import EgressProxy
from sandboxd.runtime.oci import egress
from sandboxd.runtime.oci.cli import OciCli
from sandboxd.runtime.oci.paths import remove_dir
from sandboxd.runtime.oci.pids import alive, reap, wait_gone
from sandboxd.runtime.oci.state import Record
from sandboxd.runtime.rootfs import SandboxRoot, mounted_targets

log = logging.getLogger("sandboxd.runtime")
SLOW_RELEASE_SECONDS = 5.0


def os_errors_are_runtime_failures(fn):
    """Layer boundary: an OSError from a mount, a file or a socket becomes RuntimeFailure."""
    @functools.wraps(fn)
    async def inner(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except OSError as exc:
            raise RuntimeFailure(f"{fn.__name__} failed: {exc}", details={"errno": exc.errno}) from exc
    return inner


class Teardown:
    """Mixed into OciBackend, whose paths, records, locks and runtime CLI it uses."""

    # Set by OciBackend.__init__ (the methods below by OciBackend itself).
    runtime: str
    run_dir: Path
    cli: OciCli
    layout: Layout
    _locks: dict[str, asyncio.Lock]
    _reclaims: set[asyncio.Task]
    egress_proxy: EgressProxy

    if TYPE_CHECKING:
        def dir(self, sandbox_id: str) -> Path: ...
        def _lock(self, sandbox_id: str) -> asyncio.Lock: ...
        def _paths(self, sandbox_id: str, rec: Record | None = None) -> tuple[Path, Path]: ...

    async def _halt(self, rec: Record) -> None:
        """End the container (if any) and its network; the filesystem stays mounted."""
        # A live sandbox dies through its cgroup (thaw, SIGKILL, wait: no runtime call) and is forgotten
        # with one `delete --force`: each runtime call costs ~7 ms here, the state/kill pair is not needed.
        if rec.status == "destroying":
            # destroy(background=True) SIGKILLed it: no state/kill round trip (two runtime calls), only
            # stragglers still exiting to wait for, and one delete.
            if await self._kill_cgroup(rec.id):
                # The init leaves the cgroup's task list before it is a zombie, so that wait may not have
                # covered it. It is our child (we are the subreaper): collect it now, not at the next
                # periodic reap (a fresh-clone CI run saw one outlive a test's 10 s wait).
                await wait_gone(rec.pid, timeout=1.0)
            else:
                reap(rec.pid)
                await self.cli.call("delete", "--force", rec.id, check=False)
            st = None
        else:
            st = None if rec.pid and alive(rec.pid) and await self._kill_cgroup(rec.id) else await self.cli.state(rec.id)
        if st is not None:
            if st.get("status") == "paused":
                await self.cli.call("resume", rec.id, check=False)  # frozen tasks cannot die
            await self.cli.call("kill", rec.id, "KILL", check=False)
            await wait_gone(st.get("pid") or rec.pid)
            await self.cli.call("delete", "--force", rec.id, check=False)
        elif rec.pid:
            reap(rec.pid)
        await self._kill_cgroup(rec.id)
        if rec.net:
            had_rules = not rec.spec or rec.sandbox_spec.egress is not None  # no spec: do not guess
            await asyncio.to_thread(network.destroy, network.SandboxNet.from_dict(rec.net), had_rules)
            if had_rules:
                await asyncio.to_thread(egress.release, self.egress_proxy, rec.net)

    async def _kill_cgroup(self, sandbox_id: str) -> bool:
        """Kill whatever is still in the sandbox's cgroup: after a crash, a container the runtime no
        longer lists (or one half set up) can still hold processes, mounts and the loop device.
        True when it found processes (and deleted the container)."""
        cg = SandboxCgroup(sandbox_id, self.layout)
        pids = cg.pids()
        if not pids:
            return False
        cg.thaw()
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for pid in pids:
            await wait_gone(pid, timeout=5.0)
        await self.cli.call("delete", "--force", sandbox_id, check=False)
        return True

    @os_errors_are_runtime_failures
    async def destroy(self, sandbox_id: str, *, background: bool = False) -> None:
        """background=True: return as soon as every process of the sandbox has been sent SIGKILL (it runs
        nothing any more) and release the rest (container record, mounts, loop disk, cgroup, netns, files)
        on a task: a user's kill does not wait ~20 ms for the unmounts and `crun delete`. The record says
        "destroying" meanwhile, so recover() finishes the job after a crash; close() waits for it."""
        if background and await self._kill_now(sandbox_id):
            task = asyncio.create_task(self._reclaim(sandbox_id), name=f"reclaim-{sandbox_id}")
            self._reclaims.add(task)
            task.add_done_callback(self._reclaims.discard)
            return
        async with self._lock(sandbox_id):
            await self._teardown(sandbox_id)
        self._locks.pop(sandbox_id, None)

    async def _kill_now(self, sandbox_id: str) -> bool:
        """SIGKILL everything in the sandbox's cgroup (thawed first: frozen tasks cannot die). False when
        there is no record, or the sandbox is stopped: the caller tears down in the foreground."""
        async with self._lock(sandbox_id):
            d = self.dir(sandbox_id)
            rec = Record.load(d)
            if rec is None or rec.runtime != self.runtime:
                return False
            cg = SandboxCgroup(sandbox_id, self.layout)
            pids = cg.pids()
            if alive(rec.pid):
                if rec.pid not in pids:  # not this container's init any more (pid reuse): take the slow path
                    return False
                victims = [rec.pid, *pids]  # init first: the kernel then kills its whole pid namespace
            elif rec.status in ("running", "paused"):
                # Its init died on its own (OOM, crash), and its pid namespace with it: it ends like a kill,
                # the release in the background. Its end is recorded at once, whatever the release costs
                # (in CI an OOM-killed sandbox went unrecorded for over a minute while its release ran).
                victims = pids
            else:
                return False
            rec.status = "destroying"
            rec.save(d)
            cg.thaw()
            for pid in victims:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            return True

    async def _reclaim(self, sandbox_id: str) -> None:
        try:
            async with self._lock(sandbox_id):
                await self._teardown(sandbox_id)
            self._locks.pop(sandbox_id, None)
        except Exception:  # the record stays "destroying": the next recover() retries
            log.exception("releasing sandbox %s failed", sandbox_id)

    async def drain(self) -> None:
        """Wait until the background releases of destroy(background=True) are done."""
        while self._reclaims:
            await asyncio.gather(*list(self._reclaims), return_exceptions=True)

    async def _teardown(self, sandbox_id: str) -> None:
        """Release everything the sandbox may hold, whatever state it got to. Idempotent."""
        d = self.dir(sandbox_id)
        rec = Record.load(d)
        if rec is not None and rec.runtime != self.runtime:
            raise Conflict(f"sandbox {sandbox_id} belongs to the {rec.runtime} backend")
        if rec is None:
            rec = Record(id=sandbox_id, runtime=self.runtime, status="creating", spec={})
        if rec.net is None:  # created but not recorded yet: the names are derived from the id
            netns, veth = network.names(sandbox_id)
            rec.net = {"netns": netns, "veth": veth, "host_ip": None, "sandbox_ip": None}
        t0 = time.monotonic()
        await self._halt(rec)
        t1 = time.monotonic()
        await asyncio.to_thread(self._remove_files, sandbox_id, d, rec)
        if time.monotonic() - t0 > SLOW_RELEASE_SECONDS:  # normally ~20 ms: say where the time went
            log.warning("releasing sandbox %s took %.1f s (processes and container %.1f s, mounts and files %.1f s)",
                        sandbox_id, time.monotonic() - t0, t1 - t0, time.monotonic() - t1)

    def _remove_files(self, sandbox_id: str, d: Path, rec: Record) -> None:
        rootfs, sock = self._paths(sandbox_id, rec)
        # Every candidate mount point: the record may be missing (killed before it was written), or older
        # than the private dir above a mount point under /run.
        run_root = self.run_dir / "root" / sandbox_id
        mounted = mounted_targets()
        for mp in dict.fromkeys((rootfs, d / "rootfs", run_root / "rootfs", run_root)):
            SandboxRoot(d, (), None, rootfs=mp).unmount(mounted)
            if not mp.is_relative_to(d):
                remove_dir(mp)
        if not sock.is_relative_to(d):
            try:
                sock.unlink()
            except FileNotFoundError:
                pass
        SandboxCgroup(sandbox_id, self.layout).remove()
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            raise RuntimeFailure(f"could not remove {d}")
        uidslots.release(d, rec.extra.get("uid_slot"))

    # ---- inspection --------------------------------------------------------------------------

"""OciBackend's memory checkpoints: a sandbox's processes to disk (`checkpoint`) and back (`resume`).

The steps and what each hands over are in checkpoint.py; the model and limits in docs/snapshots.md. A sandbox
on disk is recorded as status "checkpointed": its processes, root mount, cgroups and network end are gone and
it holds no memory; its uid range stays claimed (the restored user namespace maps the same ids). Its images
live in `<sandbox dir>/checkpoint/` (root only) and go with the sandbox.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sandboxd.errors import Conflict, NotSupported, RuntimeFailure
from sandboxd.runtime import agentclient, changes, criuprep, criutools, lxcfs, network, reaper
from sandboxd.runtime.base import Checkpoint
from sandboxd.runtime.cgroups import Layout, SandboxCgroup
from sandboxd.runtime.cgroups import cgroups_path
from sandboxd.runtime.oci import channel, checkpoint as ck, config, images as ckimages, paths
from sandboxd.runtime.oci.pids import alive
from sandboxd.runtime.oci.state import Record
from sandboxd.runtime.oci.teardown import Teardown
from sandboxd.runtime.rootfs import SandboxRoot
from sandboxd.runtime.uncancellable import uncancellable

if TYPE_CHECKING:
    from sandboxd.runtime.rootfs import Ids

log = logging.getLogger("sandboxd.runtime")
CHECKPOINTED = "checkpointed"


def _share(images: Path, group: int) -> None:
    """The restored tasks read some images themselves, in the sandbox's user namespace: as host root before
    CRIU writes its id map, as the sandbox's root after. Root's and the sandbox's group's (the sandbox sees no
    host path to them; they hold only its own memory)."""
    for f in [images, *images.iterdir()]:
        os.chown(f, 0, group)
        os.chmod(f, 0o750 if f.is_dir() else 0o640)


class MemoryCheckpoints(Teardown):
    settings: Any
    agent_pkg: Path

    if TYPE_CHECKING:  # OciBackend's
        def _record(self, sandbox_id: str) -> Record: ...
        def _ids(self, rec: Record) -> Ids: ...
        def _root(self, rec: Record) -> SandboxRoot: ...
        def _claim_ids(self, rec: Record) -> None: ...
        def _root_parent(self, rec: Record) -> None: ...
        def _apply_egress(self, rec: Record) -> None: ...
        async def _live_status(self, rec: Record) -> str: ...
        async def _agent_pkg_source(self) -> Path: ...
        async def _agent_rt_source(self, layer: Path | None) -> Path | None: ...
        async def _wait_healthy(self, rec: Record, log_path: Path) -> None: ...
        async def _boot(self, rec: Record) -> None: ...
    def criu(self) -> criutools.Criu:
        found, why = criutools.find(self.settings.criu, Path(self.settings.tools_dir))
        if found is None:
            raise NotSupported(why, code="memory_snapshots_unavailable")
        return found

    def memory_snapshots(self) -> bool:
        return criutools.find(self.settings.criu, Path(self.settings.tools_dir))[0] is not None

    async def checkpoint(self, sandbox_id: str, *, compress: bool = False) -> Checkpoint:
        """Write the running (or frozen) sandbox's processes to disk and end them; it is then paused on disk."""
        criu = self.criu()
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status == CHECKPOINTED:
                raise Conflict(f"sandbox {sandbox_id} is already paused", code="sandbox_paused")
            live = await self._live_status(rec)
            if rec.status == "stopped" or live == "stopped" or rec.pid is None:
                raise Conflict(f"sandbox {sandbox_id} is not running", code="sandbox_not_running")
            if held := ck.host_sockets([rec.pid]):  # an agent started cold: its init holds the host's socket too
                raise RuntimeFailure(f"sandbox {sandbox_id}: its init holds a socket of the host ({held[0]}); "
                                     "only a sandbox whose agent the zygote started can go to disk",
                                     code="checkpoint_unsupported")
            t0 = time.monotonic()
            d = self.dir(sandbox_id)
            images = d / ck.IMAGES
            shutil.rmtree(images, ignore_errors=True)
            images.mkdir(mode=0o700)
            if live == "paused":
                SandboxCgroup(sandbox_id, self.layout).set_frozen(False)
            sock = self._paths(sandbox_id, rec)[1]
            try:
                await agentclient.call_json(sock, "POST", "/checkpoint/park", {}, 10.0, only_200=True)
                meta = await self._dump_twice(criu, rec, images)
            except BaseException:
                try:
                    await self._unpark(rec)
                except Exception:  # noqa: BLE001 - the failure to report is the one above
                    log.exception("sandbox %s: the agent could not be given its socket back", sandbox_id)
                if live == "paused":
                    SandboxCgroup(sandbox_id, self.layout).set_frozen(True)
                shutil.rmtree(images, ignore_errors=True)
                raise
            seconds = time.monotonic() - t0
            if compress:  # an eviction: disk per sandbox matters more than the ~60 ms per 10 MiB
                await asyncio.to_thread(ck.compress, images)
            size = sum(f.stat().st_size for f in images.iterdir() if f.is_file())
            (images / ck.META).write_text(json.dumps(meta))
            _share(images, self._ids(rec).host_base)
            # The processes are gone (CRIU ended them): release what they held, but the uid range and, until
            # a host reboot, the network end parked in its own namespace.
            await self.cli.call("delete", "--force", rec.id, check=False)
            await self._kill_cgroup(rec.id)
            await asyncio.to_thread(self._root(rec).unmount)
            rec.status, rec.pid = CHECKPOINTED, None
            rec.extra["checkpoint"] = {"size_bytes": size, "seconds": round(seconds, 4), "at": time.time()}
            rec.save(d)
            return Checkpoint(size, seconds)

    async def _dump_twice(self, criu: criutools.Criu, rec: Record, images: Path) -> dict:
        """A dump that failed (the processes run on) is tried once more: a task waiting in the kernel (a FUSE
        read from a slow lxcfs, under load) can keep the freezer from finishing within CRIU's timeout."""
        try:
            return await uncancellable(asyncio.to_thread(self._dump, criu, rec, images))
        except RuntimeFailure as exc:
            if exc.code != "checkpoint_failed":
                raise
            log.info("sandbox %s: checkpoint failed once (%s); trying again", rec.id, exc.message)
        shutil.rmtree(images, ignore_errors=True)
        images.mkdir(mode=0o700)
        return await uncancellable(asyncio.to_thread(self._dump, criu, rec, images))

    def _dump(self, criu: criutools.Criu, rec: Record, images: Path, leave_running: bool = False) -> dict:
        init = rec.pid
        assert init is not None
        spec = rec.sandbox_spec
        ck.wait_unparked(init)
        state = self.cli.root / rec.id  # what the runtime knows of the container, for after the restore
        shutil.copyfile(state / "status", images / "runtime-status.json")
        if (state / "seccomp.bpf").exists():
            shutil.copyfile(state / "seccomp.bpf", images / "seccomp.bpf")
        criuprep.kdat(criu.argv)
        pids = ck.tree(init)
        files = ck.host_files(pids, ck.mount_ids(init), spec.image.layers[-1], self.agent_pkg,
                              config.AGENT_PKG_TARGET)
        cfg = json.loads((self.dir(rec.id) / "config.json").read_text())
        mounts = ck.external_mounts(init, {m["destination"] for m in cfg["mounts"] if m["type"] == "bind"})
        net = network.SandboxNet.from_dict(rec.net) if rec.net else None
        if net is not None and net.veth:
            ck.park_network(net, init)
        try:
            argv = [*criu.argv, "dump", "-t", str(init), "-D", str(images), "-o", "dump.log",
                    "--tcp-established", "--file-locks", "--manage-cgroups=soft", "--network-lock", "skip",
                    "--freeze-cgroup", str(self._freezer(rec.id))] + (["--leave-running"] if leave_running else [])
            for m in mounts:
                argv += ["--external", f"mnt[{m}]:{m}"]
            for f in files:
                argv += ["--external", f.key]
            ck.criu_run(argv, images / "dump.log")
            criuprep.drop_netns_config(images)
        except BaseException:
            if net is not None and net.veth:
                ck.unpark_network(net, init)
            raise
        if leave_running and net is not None and net.veth:
            ck.unpark_network(net, init)
        return {"mounts": mounts, "files": [f.__dict__ for f in files], "net": rec.net,
                "uid_slot": rec.extra.get("uid_slot"), "sandbox_dir": str(self.dir(rec.id)),
                "host_base": self._ids(rec).host_base}

    def _freezer(self, sandbox_id: str) -> Path:
        cg = SandboxCgroup(sandbox_id, self.layout)
        return cg.dir("") if self.layout is Layout.V2 else cg.dir("freezer")

    async def _unpark(self, rec: Record) -> None:
        """Give a parked agent a new listening socket (the checkpoint did not happen, or it was restored)."""
        sock_path = self._paths(rec.id, rec)[1]
        sock = channel.listen(sock_path)
        try:
            assert rec.pid is not None
            await asyncio.to_thread(ck.ring, rec.pid, sock.fileno())
        finally:
            sock.close()

    async def _restore(self, rec: Record) -> float:
        """Bring a checkpointed sandbox back: its root, then its processes, network and agent channel."""
        criu = self.criu()
        d = self.dir(rec.id)
        images = d / ck.IMAGES
        meta = json.loads((images / ck.META).read_text())
        await asyncio.to_thread(ck.decompress, images)
        _share(images, self._ids(rec).host_base)
        t0 = time.monotonic()
        self._claim_ids(rec)
        if rec.extra.get("uid_slot") != meta.get("uid_slot"):
            # The images hold a user namespace mapping that range: never restore it onto another sandbox's.
            raise RuntimeFailure(f"sandbox {rec.id}: its uid range is held by another sandbox since the pause",
                                 code="restore_failed")
        self._root_parent(rec)
        rec.save(d)
        root = self._root(rec)
        await uncancellable(asyncio.to_thread(root.mount))
        try:
            spec = rec.sandbox_spec
            rootfs = self._paths(rec.id, rec)[0]
            meta_dir = SandboxRoot(d, (), None).meta
            cfg = config.build(spec, uid_base=self._ids(rec).host_base, uid_count=self.settings.uid_count,
                               sandbox_dir=d, agent_pkg=await self._agent_pkg_source(), rootfs=rootfs,
                               etc_dir=meta_dir if meta_dir.is_dir() else d, runtime=self.runtime,
                               proc_binds=await lxcfs.binds(),
                               agent_rt=await self._agent_rt_source(spec.image.agent_runtime))
            pid = await uncancellable(asyncio.to_thread(self._criu_restore, criu, rec, cfg, images, meta))
            rec.pid = pid
            rec.save(d)
            self._adopt_state(rec, cfg)
            net = network.SandboxNet.from_dict(rec.net) if rec.net else None
            if net is not None and net.veth:
                if not await asyncio.to_thread(ck.unpark_network, net, pid):
                    rec.net = (await asyncio.to_thread(network.attach, rec.id, pid)).to_dict()
                    rec.save(d)
                if spec.egress is not None:
                    await asyncio.to_thread(self._apply_egress, rec)
            await self._unpark(rec)
            await self._wait_healthy(rec, d / "disk" / "agent.log")
        except BaseException:
            await self._halt(rec)
            await asyncio.to_thread(root.unmount)
            rec.status, rec.pid = CHECKPOINTED, None
            rec.save(d)
            raise
        seconds = time.monotonic() - t0
        shutil.rmtree(images, ignore_errors=True)  # the sandbox has moved on: they would only take disk
        rec.status = "running"
        rec.extra.setdefault("checkpoint", {})["restore_seconds"] = round(seconds, 4)
        rec.save(d)
        reaper.reap_orphans()
        return seconds

    def _criu_restore(self, criu: criutools.Criu, rec: Record, cfg: dict, images: Path,
                      meta: dict, cgroup_root: str | None = None) -> int:
        rootfs = cfg["root"]["path"]
        sources = {m["destination"]: m["source"] for m in cfg["mounts"] if m["type"] == "bind"}
        cg = SandboxCgroup(rec.id, self.layout)
        fds: list[int] = []
        stage = paths.RUN_ROOT / "restore" / f"{rec.id}-{uuid.uuid4().hex[:8]}"
        criuprep.kdat(criu.argv)
        criuprep.drop_netns_config(images)  # images written before dumps dropped them (their tools are not on PATH)
        try:
            argv = [*criu.argv, "restore", "-D", str(images), "-o", "restore.log", "--root", rootfs,
                    "--restore-detached", "--pidfile", str(images / "restore.pid"), "--tcp-established",
                    "--file-locks", "--manage-cgroups=soft", "--mntns-compat-mode"]
            if (yard := criuprep.cgroup_yard()) is not None:
                argv += ["--cgroup-yard", str(yard)]
            if cgroup_root:  # a fork's child: its own cgroups, not its parent's
                argv += ["--cgroup-root", cgroup_root]
            staged: dict[Path, Path] = {}
            for m in meta["mounts"]:
                src = ck.reachable(Path(ck.mount_source(m, sources, cg.dir, self.settings.lxcfs_dir)), stage,
                                   self._ids(rec).host_base, staged)
                argv += ["--external", f"mnt[{m}]:{src}"]
            for f in meta["files"]:
                fd = os.open(f["path"], f["flags"] | os.O_CLOEXEC)
                os.set_inheritable(fd, True)
                fds.append(fd)
                argv += ["--inherit-fd", f"fd[{fd}]:{f['key']}"]
            ck.criu_run(argv, images / "restore.log", pass_fds=tuple(fds), env={"PATH": criuprep.tools_path()})
        finally:
            for fd in fds:
                os.close(fd)
            # The staged binds only served CRIU; detaching them (~7 ms) need not hold up the sandbox.
            threading.Thread(target=ck.unstage, args=(stage,), daemon=True).start()
        pid = int((images / "restore.pid").read_text().strip())
        if not alive(pid):
            raise RuntimeFailure(f"sandbox {rec.id}: restored init exited at once", code="restore_failed")
        return pid

    def _adopt_state(self, rec: Record, cfg: dict) -> None:
        """The runtime's record of the container, pointing at the restored init (exec, kill and delete use it)."""
        d = self.dir(rec.id)
        state = self.cli.root / rec.id
        state.mkdir(parents=True, exist_ok=True)
        (state / "config.json").write_text(json.dumps(cfg))
        (d / "config.json").write_text(json.dumps(cfg))
        bpf = self.dir(rec.id) / ck.IMAGES / "seccomp.bpf"
        if bpf.exists():
            shutil.copyfile(bpf, state / "seccomp.bpf")
        status = json.loads((d / ck.IMAGES / "runtime-status.json").read_text())
        assert rec.pid is not None
        status["pid"] = rec.pid
        status["process-start-time"] = ck.start_time(rec.pid)
        status["rootfs"] = cfg["root"]["path"]
        status["bundle"] = str(d)
        status["cgroup-path"] = cfg["linux"]["cgroupsPath"]
        (state / "status").write_text(json.dumps(status))

    # ---- memory forks ---------------------------------------------------------------------------
    async def fork_memory(self, sandbox_id: str, files: Path, images: Path) -> None:
        """The sandbox's changed files and its processes at one instant (frozen between), while it runs on."""
        criu = self.criu()
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status != "running" or rec.pid is None or await self._live_status(rec) != "running":
                raise NotSupported(f"sandbox {sandbox_id} is not running: its fork takes its files only",
                                   code="memory_fork_not_running")
            if held := ck.host_sockets([rec.pid]):
                raise RuntimeFailure(f"sandbox {sandbox_id}: its init holds a socket of the host ({held[0]})",
                                     code="checkpoint_unsupported")
            images.mkdir(mode=0o700, exist_ok=True)
            cg = SandboxCgroup(sandbox_id, self.layout)
            sock = self._paths(sandbox_id, rec)[1]
            await agentclient.call_json(sock, "POST", "/checkpoint/park", {}, 10.0, only_200=True)
            try:
                await asyncio.to_thread(ck.wait_unparked, rec.pid)
                cg.set_frozen(True)
                deadline = time.monotonic() + 10
                while not cg.frozen():
                    if time.monotonic() > deadline:
                        raise RuntimeFailure(f"sandbox {sandbox_id} did not freeze within 10s")
                    await asyncio.sleep(0.002)
                await changes.copy_tree(SandboxRoot(self.dir(sandbox_id), (), None).upper, files)
                meta = await uncancellable(asyncio.to_thread(self._dump, criu, rec, images, True))
                (images / ck.META).write_text(json.dumps(meta))
            finally:
                cg.set_frozen(False)
                try:
                    await self._unpark(rec)
                except Exception:  # noqa: BLE001 - the failure to report, if any, is the one above
                    log.exception("sandbox %s: the agent could not be given its socket back", sandbox_id)

    async def _fork_child(self, rec: Record, source: Path) -> None:
        """A memory fork's child; where its parent's processes cannot be restored in it (a mount point its files
        lack, say), it boots on the files, as a fork did before."""
        try:
            await self._boot_from_memory(rec, source)
        except RuntimeFailure as exc:
            log.warning("sandbox %s: its parent's processes could not be restored (%s); it boots on its files",
                        rec.id, exc.message)
            await self._halt(rec)
            cg = SandboxCgroup(rec.id, self.layout)
            cg.thaw()  # CRIU may have made its cgroups already, frozen as the parent's were at the dump
            for path in reversed(cg.dirs()):
                with contextlib.suppress(OSError):
                    path.rmdir()
            shutil.rmtree(self.dir(rec.id) / ck.IMAGES, ignore_errors=True)
            await self._boot(rec)

    async def _boot_from_memory(self, rec: Record, source: Path) -> None:
        """A fork's child, its files already made from its parent's copy, takes over the parent's processes: the
        images are copied and moved to the child's uid range, host name, cgroups, paths and network."""
        criu = self.criu()
        d = self.dir(rec.id)
        images = d / ck.IMAGES
        await asyncio.to_thread(shutil.copytree, source, images)
        meta = json.loads((images / ck.META).read_text())
        ids = self._ids(rec)
        spec = rec.sandbox_spec
        for f in images.glob("userns-*.img"):
            ckimages.remap_userns(f, meta["host_base"], ids.host_base, ids.count)
        for f in images.glob("utsns-*.img"):
            ckimages.rename_uts(f, spec.hostname or f"sandbox-{rec.id[:12]}")
        parent = meta["sandbox_dir"].rstrip("/") + "/"
        for f in meta["files"]:  # the agent log is the child's own
            if f["path"].startswith(parent):
                f["path"] = str(d / f["path"][len(parent):])
        _share(images, ids.host_base)
        rootfs, sock_path = self._paths(rec.id, rec)
        meta_dir = SandboxRoot(d, (), None).meta
        cfg = config.build(spec, uid_base=ids.host_base, uid_count=self.settings.uid_count, sandbox_dir=d,
                           agent_pkg=await self._agent_pkg_source(), rootfs=rootfs,
                           etc_dir=meta_dir if meta_dir.is_dir() else d, runtime=self.runtime,
                           proc_binds=await lxcfs.binds(),
                           agent_rt=await self._agent_rt_source(spec.image.agent_runtime))
        (meta_dir / "boot_id").write_text(f"{uuid.uuid4()}\n")
        # Its processes' stdout and stderr, given back as the child's own: its root's, as a booted sandbox's is
        # (raw/ is the disk as stored, in the store's ids).
        log_file = SandboxRoot(d, (), None).raw / "agent.log"
        log_file.touch()
        os.chown(log_file, ids.store_base, ids.store_base)
        self.cli.root.mkdir(parents=True, exist_ok=True)
        if not sock_path.is_relative_to(d):
            paths.make_dir(sock_path.parent)
        rec.pid = await uncancellable(asyncio.to_thread(self._criu_restore, criu, rec, cfg, images, meta,
                                                        cgroups_path(rec.id)))
        rec.save(d)
        # Its parent was frozen for the dump, and CRIU gives the cgroups it makes their dumped state.
        SandboxCgroup(rec.id, self.layout).thaw()
        self._adopt_state(rec, cfg)
        if spec.internet_access:
            rec.net = (await asyncio.to_thread(network.attach, rec.id, rec.pid)).to_dict()
            rec.save(d)
            if spec.egress is not None:
                await asyncio.to_thread(self._apply_egress, rec)
        await self._unpark(rec)
        await self._wait_healthy(rec, d / "disk" / "agent.log")
        # Its agent's environment is its parent's, from memory: new commands get the child's own (its id, the
        # env vars of its create), over the parent's.
        env = dict(e.split("=", 1) for e in cfg["process"]["env"] if "=" in e)
        await agentclient.call_json(sock_path, "PATCH", "/env", {"env_vars": {
            k: v for k, v in env.items() if not k.startswith("SANDBOXD_AGENT_")}}, 10.0, only_200=True)
        shutil.rmtree(images, ignore_errors=True)
        rec.status = "running"
        rec.save(d)
        reaper.reap_orphans()

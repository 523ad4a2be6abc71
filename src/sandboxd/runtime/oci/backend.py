"""OciBackend: hardened sandboxes through an OCI runtime binary (crun by default, runc as fallback).

Per sandbox, under `<data_dir>/sandboxes/<id>/` (root's, group the sandbox's root gid, 0710: paths.py):
state.json (the record recover() reads), config.json (the bundle), disk.img + raw/ + disk/ + rootfs/ (see
rootfs.py; hosts, hostname and resolv.conf, bound read-only, are on the sandbox's disk in raw/meta/) and
agent.sock (the host end of the agent channel). Each sandbox runs in its own host uid range (uidslots.py),
recorded as `uid_slot` in state.json. The runtime's own state lives in a tmpfs
(`/run/sandboxd/<data dir hash>/<runtime>`) so every data dir sees only its own containers; the socket and
the root mount point move there too when the data dir cannot hold them (paths.py).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import replace
from pathlib import Path

import sandboxd
from sandboxd.errors import Conflict, Invalid, NotFound, RuntimeFailure
from sandboxd.runtime import agentclient, agentpkg, agentrt, changes, lxcfs, network, reaper, uidslots
from sandboxd.runtime.hostsetup import prepare_host
from sandboxd.runtime.base import (
    BUILTIN_LAYER, LAYER_INFO, Capabilities, Egress, EgressDenied, ExecResult, Resources, RuntimeSandbox, RuntimeState,
    SandboxSpec, Stats,
)
from sandboxd.runtime.cgroups import Layout, SandboxCgroup, detect
from sandboxd.runtime.egressproxy.client import EgressProxy
from sandboxd.runtime.oci import channel, checkpoint as ck, config, egress, paths, zygote
from sandboxd.runtime.oci.bpfcache import BpfCache
from sandboxd.runtime.oci.cli import OciCli
from sandboxd.runtime.oci.execution import run_exec
from sandboxd.runtime.oci.memory import CHECKPOINTED, MemoryCheckpoints
from sandboxd.runtime.oci.pids import alive
from sandboxd.runtime.oci.state import Record, spec_to_dict
from sandboxd.runtime.oci.teardown import os_errors_are_runtime_failures
from sandboxd.runtime.oci.stats import BatchStats
from sandboxd.runtime.rootfs import Ids, SandboxRoot, require_kernel
from sandboxd.runtime.uncancellable import uncancellable

log = logging.getLogger("sandboxd.runtime")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEALTH_TIMEOUT = 60.0  # 50 cold agents on 2 cores take ~15 s; leave room
DEFAULT_SHARES = 1024  # the kernel's cpu.shares when none is set


@functools.lru_cache(maxsize=1024)
def _builtin_layer(layer: Path) -> bool:
    """Whether a stored layer is one the platform built from Debian (its record says so; a layer never changes):
    the only layers a zygote may run."""
    try:
        info = json.loads((layer.parent / LAYER_INFO).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("kind") == BUILTIN_LAYER


@functools.cache
def _compile_once(pkg: str) -> None:
    """Bring the package's bytecode up to date. It is mounted read-only into every sandbox, where Python
    cannot write a .pyc: a module the host never imported (most of the agent) would be compiled again in
    each sandbox, +30 % of the agent's start-up CPU (measured: 113 vs 87 ms)."""
    import compileall

    try:
        compileall.compile_dir(pkg, quiet=2)
    except OSError as exc:
        log.warning("could not compile %s: %s", pkg, exc)


def _write_limits(cg: SandboxCgroup, layout: Layout, res: Resources) -> None:
    """Memory, CPU (quota and weight) and pids limits written straight into a live sandbox's cgroup."""
    mem = res.memory_mb * 1024 * 1024
    quota, period = int(res.vcpu * 100000), 100000
    shares = res.cpu_shares or DEFAULT_SHARES
    if layout is Layout.V2:
        d = cg.dir("")
        weight = 1 + ((shares - 2) * 9999) // 262142  # the conversion crun and runc use
        writes = [(d / "memory.max", str(mem)), (d / "cpu.max", f"{quota} {period}"), (d / "pids.max", str(res.pids)),
                  (d / "cpu.weight", str(weight))]
    else:
        limit, memsw = cg.dir("memory") / "memory.limit_in_bytes", cg.dir("memory") / "memory.memsw.limit_in_bytes"
        # memory+swap equals memory (config.py: no swap) and may never be below it: the kernel refuses either
        # write that would break that, so a raise moves memsw first and a cut moves memory first.
        memory = [(limit, str(mem))] + ([(memsw, str(mem))] if memsw.exists() else [])
        if mem > int(limit.read_text()):
            memory.reverse()
        writes = [*memory, (cg.dir("cpu") / "cpu.cfs_quota_us", str(quota)), (cg.dir("pids") / "pids.max", str(res.pids)),
                  (cg.dir("cpu") / "cpu.shares", str(shares))]
    for path, value in writes:
        path.write_text(value)


class OciBackend(MemoryCheckpoints):
    def __init__(self, settings, runtime: str = "crun", agent_argv: list[str] | None = None):
        self.settings = settings
        self.runtime = runtime
        self.capabilities = Capabilities(name=runtime, pause=True, stop_start=True, snapshot=False, network=True,
                                         disk_quota=True, user_namespace=True, isolation="container")
        self.run_dir = paths.runtime_dir(Path(settings.data_dir))
        self.cli = OciCli(runtime, self.run_dir / runtime)
        self.bpf = BpfCache(runtime)
        self.agent_argv = agent_argv
        self.agent_pkg = Path(sandboxd.__file__).resolve().parent
        _compile_once(str(self.agent_pkg))
        self.layout = detect()
        self._locks: dict[str, asyncio.Lock] = {}
        self._batch = BatchStats(Path(settings.sandboxes_dir), self.layout, runtime)
        self._reclaims: set[asyncio.Task] = set()
        self._zygotes: dict[str, zygote.Zygote] = {}  # image content hash -> its zygote
        # Started on the first sandbox whose policy names hosts (docs/network.md).
        self.egress_proxy = EgressProxy([w.strip() for w in settings.egress_resolvers.split(",") if w.strip()]
                                        or network.sandbox_resolvers())
        uidslots.check(settings)
        require_kernel()
        for grant in uidslots.subid_overlaps(settings):
            log.warning("host subordinate ids overlap the sandboxes' uid ranges (move uid_base past them): %s", grant)

    def _ensure_host(self) -> None:
        prepare_host(self.settings, backend=self.runtime)  # cached after the first call
        reaper.reap_periodically()  # we are the subreaper (prepare_host): orphans never wait long
        self.layout = detect()
        self._batch.layout = self.layout

    # ---- paths and records -------------------------------------------------------------------
    def dir(self, sandbox_id: str) -> Path:
        if not ID_RE.match(sandbox_id or ""):
            raise Invalid(f"invalid sandbox id {sandbox_id!r}")
        return Path(self.settings.sandboxes_dir) / sandbox_id

    def _lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def _record(self, sandbox_id: str) -> Record:
        rec = Record.load(self.dir(sandbox_id))
        if rec is None or rec.runtime != self.runtime:
            raise NotFound(f"sandbox {sandbox_id} not found", code="sandbox_not_found")
        return rec

    def _paths(self, sandbox_id: str, rec: Record | None = None) -> tuple[Path, Path]:
        """(root mount point, agent socket): as recorded, else where they go for this data dir now."""
        d, data = self.dir(sandbox_id), Path(self.settings.data_dir)
        got = (rec.extra if rec else {}) or {}
        uid = self._ids(rec).host_base if rec else self.settings.uid_base
        rootfs = got.get("rootfs") or paths.rootfs_path(data, d, sandbox_id, uid)
        sock = got.get("agent_socket") or paths.socket_path(data, d, sandbox_id)
        return Path(rootfs), Path(sock)

    def _ids(self, rec: Record) -> Ids:
        """The sandbox's host uid range; a sandbox recorded without one (made before per-sandbox ranges, and
        still running) keeps the store's until it next starts."""
        s, slot = self.settings, rec.extra.get("uid_slot")
        return Ids(store_base=s.uid_base, host_base=uidslots.base(s, slot) if slot else s.uid_base,
                   count=s.uid_count)

    def _claim_ids(self, rec: Record) -> None:
        """Hold a uid range for the sandbox (its recorded one when still free) and give it its dir."""
        d = self.dir(rec.id)
        rec.extra["uid_slot"] = uidslots.claim(self.settings, d, prefer=rec.extra.get("uid_slot"))
        paths.sandbox_dir(d, self._ids(rec).host_base)

    def _root_parent(self, rec: Record) -> None:
        """The dir above the root's mount point when it lives under /run (a tmpfs: gone after a host reboot)."""
        rootfs = self._paths(rec.id, rec)[0]
        if rootfs.is_relative_to(self.dir(rec.id)):
            return
        if rootfs.name != "rootfs":  # recorded as root/<id> itself, before the private dir above it
            rootfs = rootfs / "rootfs"
            rec.extra["rootfs"] = str(rootfs)
        paths.make_dir(rootfs.parent.parent)
        paths.sandbox_dir(rootfs.parent, self._ids(rec).host_base)

    def _root(self, rec: Record) -> SandboxRoot:
        spec = rec.sandbox_spec
        return SandboxRoot(self.dir(rec.id), spec.image.layers, self._ids(rec), rootfs=self._paths(rec.id, rec)[0],
                           volumes=tuple(src for src, _ in spec.volumes))

    def _view(self, rec: Record, state: RuntimeState) -> RuntimeSandbox:
        d = self.dir(rec.id)
        # Builds copy the upper dir as stored (the store's ids): raw/, not the idmapped disk/.
        return RuntimeSandbox(id=rec.id, state=state, agent_socket=self._paths(rec.id, rec)[1], pid=rec.pid,
                              bundle=d, upper_dir=SandboxRoot(d, (), None).upper, on_disk=rec.status == CHECKPOINTED)

    # ---- lifecycle ---------------------------------------------------------------------------
    @os_errors_are_runtime_failures
    async def create(self, spec: SandboxSpec, *, memory: Path | None = None) -> RuntimeSandbox:
        d = self.dir(spec.id)
        self._ensure_host()
        async with self._lock(spec.id):
            Path(self.settings.sandboxes_dir).mkdir(parents=True, exist_ok=True)
            try:
                d.mkdir()
            except FileExistsError:
                raise Conflict(f"sandbox {spec.id} already exists", code="sandbox_exists") from None
            rec = Record(id=spec.id, runtime=self.runtime, status="creating", spec=spec_to_dict(spec))
            try:
                self._claim_ids(rec)
                rootfs, sock = self._paths(spec.id, rec)
                rec.extra.update(rootfs=str(rootfs), agent_socket=str(sock))
                rec.save(d)
                await uncancellable(asyncio.to_thread(self._prepare_files, rec))
                if memory is not None:
                    await self._fork_child(rec, memory)
                else:
                    await self._boot(rec)
            except BaseException:
                await self._teardown(spec.id)
                uidslots.release(d, rec.extra.get("uid_slot"))  # claimed before the record had it
                raise
            return self._view(rec, RuntimeState.RUNNING)

    def _prepare_files(self, rec: Record) -> None:
        spec = rec.sandbox_spec
        self._root_parent(rec)
        # The disk is a sparse copy of a blank image cached per size under the data dir: no mkfs per sandbox.
        root = self._root(rec)
        root.create(spec.resources.disk_mb, cache_dir=Path(self.settings.data_dir) / "cache")
        hostname = spec.hostname or f"sandbox-{spec.id[:12]}"
        (root.meta / "hostname").write_text(hostname + "\n")
        (root.meta / "hosts").write_text(f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost ip6-loopback\n")
        (root.meta / "resolv.conf").write_text(network.resolv_conf())

    async def _agent_pkg_source(self) -> Path:
        """Where sandboxes bind the agent package from: its copy in agentpkg's tmpfs (their mountinfo then
        names no host install path), or the package itself when the copy cannot be made."""
        src = agentpkg.ready(self.agent_pkg)
        if src is not None:
            return src
        try:
            return await asyncio.to_thread(agentpkg.copy_for_sandboxes, self.agent_pkg, config.AGENT_PKG_TARGET)
        except OSError as exc:
            log.warning("sandboxes bind the agent package from %s: no copy (%s)", self.agent_pkg, exc)
            return self.agent_pkg

    @staticmethod
    async def _agent_rt_source(layer: Path | None) -> Path | None:
        """The host mount sandboxes bind the image's agent runtime from (None: the image runs its own)."""
        if layer is None:
            return None
        return agentrt.mounted(layer) or await asyncio.to_thread(agentrt.mount_for_sandboxes, layer)

    def _zygote(self, spec: SandboxSpec) -> zygote.Zygote | None:
        """The zygote of the builtin layer at the bottom of the sandbox's image (see zygote.py), when enabled and
        not broken. An image built on a builtin (a snapshot, a fork, a derived template) shares its zygote as long
        as its own layers leave the Python installation alone: the forked agent has the builtin's interpreter and
        modules in memory and imports the rest from the sandbox's files."""
        image = spec.image
        bottom = image.layers[-1]
        if (not self.settings.zygote or self.agent_argv or self.runtime != "crun" or image.agent_runtime
                or not _builtin_layer(bottom)
                or not all(self._keeps_python(layer) for layer in image.layers[:-1])):
            return None
        z = self._zygotes.get(bottom.parent.name)
        if z is None:
            z = self._zygotes[bottom.parent.name] = zygote.Zygote(bottom, self.agent_pkg, self.run_dir)
        return None if z.broken else z

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _keeps_python(layer: Path) -> bool:
        # A stored layer never changes: each is looked at once, not on every create of its sandboxes.
        return zygote.keeps_python(layer)

    async def _boot(self, rec: Record) -> None:
        """Start the container on its (mounted) root and wait for the agent. rec.status ends 'running'."""
        z = self._zygote(rec.sandbox_spec)
        if z is not None:
            try:
                await self._boot_once(rec, z)
                z.failures = 0
                return
            except zygote.ZygoteFailed as exc:
                # A failure can be this sandbox's own (killed while its agent was forked); three in a row
                # are the zygote's, and its image's next sandboxes start cold.
                z.failures += 1
                z.broken = z.failures >= zygote.MAX_FAILURES
                log.warning("sandbox %s: the zygote failed (%s); starting its agent cold%s", rec.id, exc,
                            "; no more zygote for this image" if z.broken else "")
                await self._halt(rec)
        await self._boot_once(rec, None)

    async def _boot_once(self, rec: Record, z: zygote.Zygote | None) -> None:
        d = self.dir(rec.id)
        spec = rec.sandbox_spec
        rootfs, sock_path = self._paths(rec.id, rec)
        argv = zygote.WAIT_ARGV if z else self.agent_argv
        meta = SandboxRoot(d, (), None).meta
        etc_dir = meta if meta.is_dir() else d  # d: a sandbox made before meta/
        # Each boot its own id, as a machine's: kept across pause/resume, new after a stop and start, and
        # never the host's (which would tell sandboxes on one host apart from others).
        (etc_dir / "boot_id").write_text(f"{uuid.uuid4()}\n")
        cfg = config.build(spec, uid_base=self._ids(rec).host_base, uid_count=self.settings.uid_count,
                           sandbox_dir=d, agent_pkg=await self._agent_pkg_source(), argv=argv, rootfs=rootfs,
                           etc_dir=etc_dir, runtime=self.runtime, proc_binds=await lxcfs.binds(),
                           agent_rt=await self._agent_rt_source(spec.image.agent_runtime),
                           agent_fd="3" if z else "doorbell")
        profile_key = self.bpf.annotate(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
        self.cli.root.mkdir(parents=True, exist_ok=True)
        if not sock_path.is_relative_to(d):
            paths.make_dir(sock_path.parent)
        sock = channel.listen(sock_path)
        # With a zygote the container's own process waits on the life pipe; the agent gets the socket. Without,
        # the agent takes it at its doorbell once it runs (agent/park.py): the init never holds a host socket
        # (CRIU could not take the sandbox) and gets no fd 3 (/dev/null stands in for it).
        life_r, life_w = os.pipe() if z else (-1, -1)
        fd3 = life_r if z else os.open(os.devnull, os.O_RDONLY)
        # The container's stdout/stderr (and the runtime's errors) go to a file on the sandbox's own disk,
        # outside its root, so a chatty sandbox fills its quota and never the host's disk.
        log_path = d / "disk" / "agent.log"
        try:
            with open(log_path, "ab") as log_file:
                # With egress the veth goes in between create and start; otherwise one `run -d`.
                verb = "create" if spec.internet_access else "run"
                args = [verb, "--bundle", str(d), "--pid-file", str(d / "init.pid")]
                if z:
                    args += ["--preserve-fds", "1"]
                if verb == "run":
                    args.insert(1, "-d")
                rc = await self.cli.call_with_fd3(*args, rec.id, fd=fd3, log=log_file.fileno())
                if rc != 0:
                    raise self.cli.failure(args, rc, paths.tail(log_path))
                self.bpf.learn(profile_key, self.cli.root / rec.id)
                rec.pid = int((d / "init.pid").read_text().strip())
                if spec.internet_access:
                    net = await uncancellable(asyncio.to_thread(network.attach, rec.id, rec.pid))
                    rec.net = net.to_dict()
                    rec.save(d)
                    if spec.egress is not None:  # before the first packet: the sandbox never runs without them
                        await asyncio.to_thread(self._apply_egress, rec)
                    await self.cli.call("start", rec.id)
                if not z:
                    try:
                        await asyncio.to_thread(ck.ring, rec.pid, sock.fileno(), HEALTH_TIMEOUT)
                    except RuntimeFailure as exc:
                        raise RuntimeFailure(f"sandbox {rec.id}: agent did not start ({exc.message})",
                                             details={"log_tail": paths.tail(log_path).decode(errors="replace")}
                                             ) from None
                if z:
                    program = self.bpf.program(profile_key) or (self.cli.root / rec.id / "seccomp.bpf").read_bytes()
                    await z.spawn(rec.pid, sock=sock.fileno(), life=life_w, log_fd=log_file.fileno(),
                                  env=config.process_env(cfg), caps=cfg["process"]["capabilities"]["bounding"],
                                  seccomp=program, oom_score_adj=cfg["process"]["oomScoreAdj"])
        finally:
            sock.close()
            for fd in {life_r, life_w, fd3}:
                if fd >= 0:
                    os.close(fd)
        rec.save(d)
        reaper.reap_orphans()  # the runtime's intermediate process
        await self._wait_healthy(rec, log_path)
        rec.status = "running"
        rec.save(d)

    async def _wait_healthy(self, rec: Record, log_path: Path) -> None:
        sock = self._paths(rec.id, rec)[1]
        probe = asyncio.ensure_future(agentclient.health(sock, HEALTH_TIMEOUT))
        deadline = time.monotonic() + HEALTH_TIMEOUT
        try:
            while not probe.done():
                await asyncio.wait({probe}, timeout=0.05)
                if probe.done():
                    break
                if not alive(rec.pid) or time.monotonic() > deadline:
                    why = "exited" if not alive(rec.pid) else f"did not answer within {HEALTH_TIMEOUT:.0f}s"
                    raise RuntimeFailure(f"sandbox {rec.id}: agent {why}",
                                         details={"log_tail": paths.tail(log_path).decode(errors="replace")})
            doc = probe.result()
            if not doc or doc.get("status") != "healthy":
                raise RuntimeFailure(f"sandbox {rec.id}: agent unhealthy: {doc!r}",
                                     details={"log_tail": paths.tail(log_path).decode(errors="replace")})
        finally:
            probe.cancel()

    @os_errors_are_runtime_failures
    async def start(self, sandbox_id: str) -> RuntimeSandbox:
        self._ensure_host()
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status in ("running", "paused") and await self._live_status(rec) in ("running", "paused"):
                raise Conflict(f"sandbox {sandbox_id} is already running", code="sandbox_running")
            await self._halt(rec)
            self._claim_ids(rec)  # kept from before a restart; a sandbox older than per-sandbox ranges gets one
            self._root_parent(rec)
            rec.save(self.dir(sandbox_id))
            await uncancellable(asyncio.to_thread(self._root(rec).mount))
            try:
                await self._boot(rec)
            except BaseException:
                await self._halt(rec)
                rec.status = "stopped"
                rec.save(self.dir(sandbox_id))
                raise
            return self._view(rec, RuntimeState.RUNNING)

    @os_errors_are_runtime_failures
    async def stop(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            await self._put_down(self._record(sandbox_id))

    async def _put_down(self, rec: Record) -> None:
        """End the container and release its network and root mount; keep the files for start()."""
        await self._halt(rec)
        await asyncio.to_thread(self._root(rec).unmount)
        shutil.rmtree(self.dir(rec.id) / "checkpoint", ignore_errors=True)  # it boots afresh: its memory is gone
        rec.extra.pop("checkpoint", None)
        rec.status, rec.pid, rec.net = "stopped", None, None
        rec.save(self.dir(rec.id))

    async def adopt(self, rec: Record) -> RuntimeSandbox:
        """After a restart: claim the sandbox's uid range again and take it as it is. A running or paused one
        stays so; one whose processes are gone (or that was killed mid-start, so not trusted) is put down
        to stopped."""
        d = self.dir(rec.id)
        async with self._lock(rec.id):
            if rec.extra.get("uid_slot"):
                self._claim_ids(rec)
                rec.save(d)
            if rec.status == CHECKPOINTED:  # on disk: nothing runs, its images wait for resume (its uid range
                return self._view(rec, RuntimeState.PAUSED)  # was claimed above: the images map that one)
            live = await self._live_status(rec)
            if rec.status != "stopped" and live in ("running", "paused"):
                rec.status = live
                rec.save(d)
                # A table made afresh (network.ensure_table, a newer floor) holds no sandbox's rules: they come back here.
                await asyncio.to_thread(self._apply_egress, rec)
                return self._view(rec, RuntimeState.RUNNING if live == "running" else RuntimeState.PAUSED)
            if rec.status != "stopped" or live != "stopped":
                log.info("recover: sandbox %s lost its processes; now stopped", rec.id)
                await self._put_down(rec)
            return self._view(rec, RuntimeState.STOPPED)

    @os_errors_are_runtime_failures
    async def pause(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status == CHECKPOINTED:
                raise Conflict(f"sandbox {sandbox_id} is already paused", code="sandbox_paused")
            await self._runtime_op(rec, "pause")
            # The v1 freezer can report FREEZING for a while after the runtime returns (busy tasks):
            # paused means frozen, so wait for it.
            cg = SandboxCgroup(sandbox_id, self.layout)
            deadline = time.monotonic() + 10
            while not cg.frozen():
                if time.monotonic() > deadline:
                    raise RuntimeFailure(f"sandbox {sandbox_id} did not freeze within 10s")
                await asyncio.sleep(0.002)
            rec.status = "paused"
            rec.save(self.dir(sandbox_id))

    @os_errors_are_runtime_failures
    async def resume(self, sandbox_id: str) -> float | None:
        self._ensure_host()
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status == CHECKPOINTED:  # paused on disk (memory.py)
                return await self._restore(rec)
            await self._runtime_op(rec, "resume")
            rec.status = "running"
            rec.save(self.dir(sandbox_id))
            return None

    async def export_changes(self, sandbox_id: str, dest: Path) -> None:
        rec = self._record(sandbox_id)
        if rec.status == CHECKPOINTED:  # on disk: its root is not mounted while nothing runs
            async with self._lock(sandbox_id):
                root = self._root(rec)
                await uncancellable(asyncio.to_thread(root.mount))
                try:
                    await changes.copy_tree(SandboxRoot(self.dir(sandbox_id), (), None).upper, dest)
                finally:
                    await asyncio.to_thread(root.unmount)
            return
        if rec.status == "stopped" or await self._live_status(rec) == "stopped":
            raise Conflict(f"sandbox {sandbox_id} is not running", code="sandbox_not_running")
        was_running = await self._live_status(rec) == "running"
        if was_running:
            await self.pause(sandbox_id)
        try:
            await changes.copy_tree(SandboxRoot(self.dir(sandbox_id), (), None).upper, dest)
        finally:
            if was_running:
                await self.resume(sandbox_id)

    @os_errors_are_runtime_failures
    async def update(self, sandbox_id: str, spec: SandboxSpec) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.spec["resources"] != spec.resources.__dict__ and rec.status in ("running", "paused"):
                _write_limits(SandboxCgroup(sandbox_id, self.layout), self.layout, spec.resources)
            # The next start rebuilds config.json from the record: it must say what the sandbox now serves.
            # Its egress rules change through set_egress only; its volumes are the ones it was created with.
            rec.spec = spec_to_dict(replace(spec, id=sandbox_id, hostname=rec.spec.get("hostname") or spec.hostname,
                                            egress=rec.sandbox_spec.egress, volumes=rec.sandbox_spec.volumes))
            rec.save(self.dir(sandbox_id))

    @os_errors_are_runtime_failures
    async def set_egress(self, sandbox_id: str, egress: Egress) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            rec.spec = spec_to_dict(replace(rec.sandbox_spec, egress=egress))
            if rec.status != "stopped":  # a stopped one gets them at its next start
                await asyncio.to_thread(self._apply_egress, rec)
            rec.save(self.dir(sandbox_id))

    @os_errors_are_runtime_failures
    async def egress_denied(self, sandbox_id: str) -> EgressDenied:
        return await asyncio.to_thread(egress.report, self.egress_proxy, self._record(sandbox_id).net or {})

    def _apply_egress(self, rec: Record) -> None:
        egress.apply(self.egress_proxy, rec.sandbox_spec.egress, rec.net or {})

    async def _live_status(self, rec: Record) -> str:
        """running, paused or stopped, from the kernel rather than `crun state`: the lifecycle's watch asks
        for every sandbox every 5 s, and a runtime call (~4 ms of CPU) per sandbox would keep a core busy at
        a thousand idle ones. The recorded init counts only while it lives in the sandbox's own cgroup (a
        reused pid is someone else's process); a zombie init has died (the agent crashed)."""
        cg = SandboxCgroup(rec.id, self.layout)
        if not alive(rec.pid) or rec.pid not in cg.pids():
            return "stopped"
        return "paused" if cg.frozen() else "running"

    async def _runtime_op(self, rec: Record, verb: str) -> None:
        """pause/resume; a sandbox that is not running is a Conflict, not a runtime failure."""
        if rec.status == "stopped":
            raise Conflict(f"sandbox {rec.id} is not running", code="sandbox_not_running")
        if alive(rec.pid) and SandboxCgroup(rec.id, self.layout).set_frozen(verb == "pause"):
            return
        rc, _, err = await self.cli.call(verb, rec.id, check=False)
        if rc != 0:
            if await self._live_status(rec) not in ("running", "paused"):
                raise Conflict(f"sandbox {rec.id} is not running", code="sandbox_not_running")
            raise self.cli.failure([verb], rc, err)

    @os_errors_are_runtime_failures
    async def state(self, sandbox_id: str) -> RuntimeState | None:
        rec = Record.load(self.dir(sandbox_id))
        if rec is None or rec.runtime != self.runtime or rec.status in ("creating", "destroying"):
            return None
        if rec.status == "stopped":
            return RuntimeState.STOPPED
        if rec.status == CHECKPOINTED:
            return RuntimeState.PAUSED
        live = await self._live_status(rec)
        return {"running": RuntimeState.RUNNING, "paused": RuntimeState.PAUSED}.get(live, RuntimeState.STOPPED)

    @os_errors_are_runtime_failures
    async def stats(self, sandbox_id: str) -> Stats:
        rec = self._record(sandbox_id)
        c = await asyncio.to_thread(SandboxCgroup(sandbox_id, self.layout).counters)
        # usage() looks at the disk mount only: no need for the layers or the root mount point here
        used, limit = await asyncio.to_thread(SandboxRoot(self.dir(sandbox_id), (), None).usage)
        rx = tx = 0
        if rec.net and rec.net.get("veth") and rec.status != "stopped":
            rx, tx = network.veth_counters(rec.net["veth"])
        return Stats(cpu_usage_ns=c.cpu_usage_ns, cpu_quota_cores=c.cpu_quota_cores,
                     memory_used_bytes=c.memory_used_bytes, memory_limit_bytes=c.memory_limit_bytes,
                     memory_cache_bytes=c.memory_cache_bytes, disk_used_bytes=used, disk_limit_bytes=limit,
                     pids=c.pids, oom_kills=c.oom_kills, net_rx_bytes=rx, net_tx_bytes=tx)

    async def stats_many(self, ids: list[str]) -> dict[str, Stats | Exception]:
        """Counters of many sandboxes in one thread hop (the sampler's path; see stats.py). A sandbox that
        cannot be read gets its exception (NotFound, or a RuntimeFailure) instead of a Stats."""
        got = await asyncio.to_thread(self._batch.read, list(ids))
        return {sid: (RuntimeFailure(f"stats of {sid} failed: {v}", details={"errno": v.errno})
                      if isinstance(v, OSError) else v) for sid, v in got.items()}

    async def close(self) -> None:
        """Forget this backend's in-memory state and remove the data dir's folders under /run/sandboxd when
        no container, socket or mount point is left in them (sandboxes that still run keep theirs)."""
        await self.drain()
        for z in self._zygotes.values():
            z.close()
        self._zygotes.clear()
        self.egress_proxy.close()
        self._locks = {k: v for k, v in self._locks.items() if v.locked()}
        if self._locks or await self.cli.list_ids():
            return
        await asyncio.to_thread(paths.remove_empty, Path(self.settings.data_dir))

    @os_errors_are_runtime_failures
    async def exec(self, sandbox_id: str, argv: list[str], *, env: dict[str, str] | None = None,
                   user: str = "root", cwd: str | None = None, timeout: float | None = None,
                   stdin: bytes | None = None) -> ExecResult:
        rec = self._record(sandbox_id)
        if rec.status != "running":
            raise Conflict(f"sandbox {sandbox_id} is {rec.status}, not running", code="sandbox_not_running")
        return await run_exec(self.cli, rec.id, self.dir(sandbox_id), rec.sandbox_spec, argv, env=env, user=user,
                              cwd=cwd, timeout=timeout, stdin=stdin)

    # ---- recovery ----------------------------------------------------------------------------
    @os_errors_are_runtime_failures
    async def recover(self) -> list[RuntimeSandbox]:
        from sandboxd.runtime.oci.recovery import recover

        self._ensure_host()
        return await recover(self)


__all__ = ["OciBackend"]

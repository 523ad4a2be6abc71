"""OciBackend: hardened sandboxes through an OCI runtime binary (crun by default, runc as fallback).

Per sandbox, under `<data_dir>/sandboxes/<id>/`: state.json (the record recover() reads), config.json
(the bundle), disk.img + disk/ + rootfs/ (see rootfs.py), hosts/hostname/resolv.conf (bound read-only) and
agent.sock (the host end of the agent channel). The runtime's own state lives in a tmpfs
(`/run/sandboxd/<data dir hash>/<runtime>`) so every data dir sees only its own containers.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import sandboxd
from sandboxd.core.errors import Conflict, Invalid, NotFound, RuntimeFailure
from sandboxd.runtime import network, reaper
from sandboxd.runtime.hostsetup import prepare_host
from sandboxd.runtime.base import Capabilities, ExecResult, RuntimeSandbox, RuntimeState, SandboxSpec, Stats
from sandboxd.runtime.cgroups import SandboxCgroup, detect
from sandboxd.runtime.oci import channel, config
from sandboxd.runtime.oci.cli import OciCli, dup_to_fd3
from sandboxd.runtime.oci.execution import run_exec
from sandboxd.runtime.oci.state import Record, spec_to_dict
from sandboxd.runtime.rootfs import SandboxRoot

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEALTH_TIMEOUT = 60.0  # 50 cold agents on 2 cores take ~15 s (ARCHITECTURE §6); leave room


def _os_errors_are_runtime_failures(fn):
    """Layer boundary: an OSError from a mount, a file or a socket becomes RuntimeFailure."""
    @functools.wraps(fn)
    async def inner(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except OSError as exc:
            raise RuntimeFailure(f"{fn.__name__} failed: {exc}", details={"errno": exc.errno}) from exc
    return inner


class OciBackend:
    def __init__(self, settings, runtime: str = "crun", agent_argv: list[str] | None = None):
        self.settings = settings
        self.runtime = runtime
        self.capabilities = Capabilities(name=runtime, pause=True, stop_start=True, snapshot=False, network=True,
                                         disk_quota=True, user_namespace=True, isolation="container")
        tag = hashlib.sha1(str(settings.data_dir).encode()).hexdigest()[:12]
        self.cli = OciCli(runtime, Path("/run/sandboxd") / tag / runtime)
        self.agent_argv = agent_argv
        self.agent_pkg = Path(sandboxd.__file__).resolve().parent
        self.layout = detect()
        self._locks: dict[str, asyncio.Lock] = {}

    def _ensure_host(self) -> None:
        prepare_host(self.settings, backend=self.runtime)  # cached after the first call
        self.layout = detect()

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

    def _root(self, rec: Record) -> SandboxRoot:
        return SandboxRoot(self.dir(rec.id), rec.sandbox_spec.image.layers, self.settings.uid_base)

    def _view(self, rec: Record, state: RuntimeState) -> RuntimeSandbox:
        d = self.dir(rec.id)
        return RuntimeSandbox(id=rec.id, state=state, agent_socket=d / "agent.sock", pid=rec.pid, bundle=d,
                              upper_dir=d / "disk" / "upper")

    # ---- lifecycle ---------------------------------------------------------------------------
    @_os_errors_are_runtime_failures
    async def create(self, spec: SandboxSpec) -> RuntimeSandbox:
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
                rec.save(d)
                await asyncio.to_thread(self._prepare_files, spec, d)
                await self._boot(rec)
            except BaseException:
                await self._teardown(spec.id)
                raise
            return self._view(rec, RuntimeState.RUNNING)

    def _prepare_files(self, spec: SandboxSpec, d: Path) -> None:
        SandboxRoot(d, spec.image.layers, self.settings.uid_base).create(spec.resources.disk_mb)
        hostname = spec.hostname or f"sandbox-{spec.id[:12]}"
        (d / "hostname").write_text(hostname + "\n")
        (d / "hosts").write_text(f"127.0.0.1 localhost {hostname}\n::1 localhost ip6-localhost ip6-loopback\n")
        (d / "resolv.conf").write_text(_resolv_conf())

    async def _boot(self, rec: Record) -> None:
        """Start the container on its (mounted) root and wait for the agent. rec.status ends 'running'."""
        d = self.dir(rec.id)
        spec = rec.sandbox_spec
        cfg = config.build(spec, uid_base=self.settings.uid_base, uid_count=self.settings.uid_count,
                           sandbox_dir=d, agent_pkg=self.agent_pkg, argv=self.agent_argv)
        (d / "config.json").write_text(json.dumps(cfg))
        self.cli.root.mkdir(parents=True, exist_ok=True)
        sock = channel.listen(d / "agent.sock")
        # The container's stdout/stderr (and the runtime's errors) go to a file on the sandbox's own disk,
        # outside its root, so a chatty sandbox fills its quota and never the host's disk.
        log_path = d / "disk" / "agent.log"
        try:
            with open(log_path, "ab") as log:
                # With egress the veth goes in between create and start; otherwise one `run -d`.
                verb = "create" if spec.internet_access else "run"
                args = [verb, "--bundle", str(d), "--pid-file", str(d / "init.pid"), "--preserve-fds", "1"]
                if verb == "run":
                    args.insert(1, "-d")
                rc, _, _ = await self.cli.call(*args, rec.id, check=False, stdout=log, stderr=log,
                                               close_fds=False, preexec_fn=dup_to_fd3(sock.fileno()))
            if rc != 0:
                raise self.cli.failure(args, rc, _tail(log_path))
        finally:
            sock.close()
        rec.pid = int((d / "init.pid").read_text().strip())
        if spec.internet_access:
            net = await asyncio.to_thread(network.attach, rec.id, rec.pid)
            rec.net = net.to_dict()
            rec.save(d)
            await self.cli.call("start", rec.id)
        rec.save(d)
        reaper.reap_orphans()  # the runtime's intermediate process
        await self._wait_healthy(rec, log_path)
        rec.status = "running"
        rec.save(d)

    async def _wait_healthy(self, rec: Record, log_path: Path) -> None:
        sock = self.dir(rec.id) / "agent.sock"
        probe = asyncio.ensure_future(channel.health(sock, HEALTH_TIMEOUT))
        deadline = time.monotonic() + HEALTH_TIMEOUT
        try:
            while not probe.done():
                await asyncio.wait({probe}, timeout=0.05)
                if probe.done():
                    break
                if not _alive(rec.pid) or time.monotonic() > deadline:
                    why = "exited" if not _alive(rec.pid) else f"did not answer within {HEALTH_TIMEOUT:.0f}s"
                    raise RuntimeFailure(f"sandbox {rec.id}: agent {why}",
                                         details={"log_tail": _tail(log_path).decode(errors="replace")})
            doc = probe.result()
            if not doc or doc.get("status") != "healthy":
                raise RuntimeFailure(f"sandbox {rec.id}: agent unhealthy: {doc!r}",
                                     details={"log_tail": _tail(log_path).decode(errors="replace")})
        finally:
            probe.cancel()

    @_os_errors_are_runtime_failures
    async def start(self, sandbox_id: str) -> RuntimeSandbox:
        self._ensure_host()
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            if rec.status in ("running", "paused") and await self._live_status(rec) in ("running", "paused"):
                raise Conflict(f"sandbox {sandbox_id} is already running", code="sandbox_running")
            await self._halt(rec)
            await asyncio.to_thread(self._root(rec).mount)
            try:
                await self._boot(rec)
            except BaseException:
                await self._halt(rec)
                rec.status = "stopped"
                rec.save(self.dir(sandbox_id))
                raise
            return self._view(rec, RuntimeState.RUNNING)

    @_os_errors_are_runtime_failures
    async def stop(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            await self._halt(rec)
            await asyncio.to_thread(self._root(rec).unmount)
            rec.status, rec.pid, rec.net = "stopped", None, None
            rec.save(self.dir(sandbox_id))

    async def _halt(self, rec: Record) -> None:
        """End the container (if any) and its network; the filesystem stays mounted."""
        st = await self.cli.state(rec.id)
        if st is not None:
            if st.get("status") == "paused":
                await self.cli.call("resume", rec.id, check=False)  # frozen tasks cannot die
            await self.cli.call("kill", rec.id, "KILL", check=False)
            await _wait_gone(st.get("pid") or rec.pid)
            await self.cli.call("delete", "--force", rec.id, check=False)
        elif rec.pid:
            _reap(rec.pid)
        await self._kill_cgroup(rec.id)
        if rec.net:
            await asyncio.to_thread(network.destroy, network.SandboxNet.from_dict(rec.net))

    async def _kill_cgroup(self, sandbox_id: str) -> None:
        """Kill whatever is still in the sandbox's cgroup: after a crash, a container the runtime no
        longer lists (or one half set up) can still hold processes, mounts and the loop device."""
        cg = SandboxCgroup(sandbox_id, self.layout)
        pids = cg.pids()
        if not pids:
            return
        cg.thaw()
        for pid in pids:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        for pid in pids:
            await _wait_gone(pid, timeout=5.0)
        await self.cli.call("delete", "--force", sandbox_id, check=False)

    @_os_errors_are_runtime_failures
    async def pause(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
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

    @_os_errors_are_runtime_failures
    async def resume(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            rec = self._record(sandbox_id)
            await self._runtime_op(rec, "resume")
            rec.status = "running"
            rec.save(self.dir(sandbox_id))

    @_os_errors_are_runtime_failures
    async def destroy(self, sandbox_id: str) -> None:
        async with self._lock(sandbox_id):
            await self._teardown(sandbox_id)
        self._locks.pop(sandbox_id, None)

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
        await self._halt(rec)
        await asyncio.to_thread(self._remove_files, sandbox_id, d)

    def _remove_files(self, sandbox_id: str, d: Path) -> None:
        SandboxRoot(d, (), self.settings.uid_base).unmount()
        SandboxCgroup(sandbox_id, self.layout).remove()
        shutil.rmtree(d, ignore_errors=True)
        if d.exists():
            raise RuntimeFailure(f"could not remove {d}")

    # ---- inspection --------------------------------------------------------------------------
    async def _live_status(self, rec: Record) -> str:
        st = await self.cli.state(rec.id)
        if st is None:
            return "stopped"
        status = st.get("status", "stopped")
        if status in ("running", "paused") and not _alive(st.get("pid")):
            return "stopped"  # its init died (the agent crashed): a zombie we may still have to reap
        return status

    async def _runtime_op(self, rec: Record, verb: str) -> None:
        """pause/resume; a sandbox that is not running is a Conflict, not a runtime failure."""
        if rec.status == "stopped":
            raise Conflict(f"sandbox {rec.id} is not running", code="sandbox_not_running")
        rc, _, err = await self.cli.call(verb, rec.id, check=False)
        if rc != 0:
            if await self._live_status(rec) not in ("running", "paused"):
                raise Conflict(f"sandbox {rec.id} is not running", code="sandbox_not_running")
            raise self.cli.failure([verb], rc, err)

    @_os_errors_are_runtime_failures
    async def state(self, sandbox_id: str) -> RuntimeState | None:
        rec = Record.load(self.dir(sandbox_id))
        if rec is None or rec.runtime != self.runtime or rec.status == "creating":
            return None
        if rec.status == "stopped":
            return RuntimeState.STOPPED
        live = await self._live_status(rec)
        return {"running": RuntimeState.RUNNING, "paused": RuntimeState.PAUSED}.get(live, RuntimeState.STOPPED)

    @_os_errors_are_runtime_failures
    async def stats(self, sandbox_id: str) -> Stats:
        rec = self._record(sandbox_id)
        c = await asyncio.to_thread(SandboxCgroup(sandbox_id, self.layout).counters)
        used, limit = await asyncio.to_thread(self._root(rec).usage)
        rx = tx = 0
        if rec.net and rec.net.get("veth") and rec.status != "stopped":
            rx, tx = _veth_counters(rec.net["veth"])
        return Stats(cpu_usage_ns=c.cpu_usage_ns, cpu_quota_cores=c.cpu_quota_cores,
                     memory_used_bytes=c.memory_used_bytes, memory_limit_bytes=c.memory_limit_bytes,
                     memory_cache_bytes=c.memory_cache_bytes, disk_used_bytes=used, disk_limit_bytes=limit,
                     pids=c.pids, oom_kills=c.oom_kills, net_rx_bytes=rx, net_tx_bytes=tx)

    @_os_errors_are_runtime_failures
    async def exec(self, sandbox_id: str, argv: list[str], *, env: dict[str, str] | None = None,
                   user: str = "root", cwd: str | None = None, timeout: float | None = None,
                   stdin: bytes | None = None) -> ExecResult:
        rec = self._record(sandbox_id)
        if rec.status != "running":
            raise Conflict(f"sandbox {sandbox_id} is {rec.status}, not running", code="sandbox_not_running")
        return await run_exec(self.cli, rec.id, self.dir(sandbox_id), rec.sandbox_spec, argv, env=env, user=user,
                              cwd=cwd, timeout=timeout, stdin=stdin)

    # ---- recovery ----------------------------------------------------------------------------
    @_os_errors_are_runtime_failures
    async def recover(self) -> list[RuntimeSandbox]:
        from sandboxd.runtime.oci.recovery import recover

        self._ensure_host()
        return await recover(self)


def _resolv_conf() -> str:
    """The host's upstream resolvers unless they are loopback ones the sandbox cannot reach."""
    try:
        servers = [l.split()[1] for l in Path("/etc/resolv.conf").read_text().splitlines()
                   if l.startswith("nameserver") and len(l.split()) > 1]
    except OSError:
        servers = []
    servers = [s for s in servers if not s.startswith("127.") and s != "::1"] or ["1.1.1.1", "8.8.8.8"]
    return "".join(f"nameserver {s}\n" for s in servers)


def _tail(path: Path, size: int = 4000) -> bytes:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(fh.seek(0, os.SEEK_END) - size, 0))
            return fh.read()
    except OSError:
        return b""


def _reap(pid: int | None) -> bool:
    """Collect pid if it is our (subreaper) child and has exited. True when it is gone."""
    if not pid:
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        return not _alive(pid)


def _alive(pid: int | None) -> bool:
    """True while pid exists and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


async def _wait_gone(pid: int | None, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    n = 0
    while pid and time.monotonic() < deadline:
        if _reap(pid) or not _alive(pid):
            _reap(pid)
            return
        n += 1
        if n % 10 == 1:  # an orphaned zombie in its pid namespace keeps init from finishing its exit
            reaper.reap_orphans()
        await asyncio.sleep(0.005)


def _veth_counters(veth: str) -> tuple[int, int]:
    # Host-side counters are mirrored: what the host receives is what the sandbox sent.
    base = Path("/sys/class/net") / veth / "statistics"
    try:
        return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())
    except (OSError, ValueError):
        return 0, 0


__all__ = ["OciBackend"]

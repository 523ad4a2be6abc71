"""FakeBackend: runs the REAL agent (`python -m sandboxd.agent`) as a plain subprocess per sandbox.

No isolation at all (capabilities say isolation="process"): it exists so the control plane, gateway and
streams can be tested quickly and without root. The agent gets its listening unix socket as fd 3, exactly
as inside a real sandbox. Pause/resume are SIGSTOP/SIGCONT to the agent's process group; stats come from
psutil. State is kept in `<sandboxes_dir>/<id>/fake.json` so a restarted server can adopt its agents.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import psutil

from sandboxd.errors import Conflict, NotFound, NotSupported, RuntimeFailure
from sandboxd.runtime import agentclient, changes
from sandboxd.runtime.base import (
    Checkpoint,
    Capabilities, Egress, EgressDenied, ExecResult, RuntimeSandbox, RuntimeState, SandboxSpec, Stats,
)

HEALTH_TIMEOUT = 30.0
AGENT_FD = 3


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


class FakeBackend:
    capabilities = Capabilities(
        name="fake", pause=True, stop_start=True, snapshot=False, network=False, disk_quota=False,
        user_namespace=False, isolation="process",
    )

    def __init__(self, settings, python: str | None = None):
        self.root = Path(settings.sandboxes_dir)
        self.python = python or sys.executable
        self._procs: dict[str, asyncio.subprocess.Process] = {}

    # ---- helpers ----------------------------------------------------------------------------------

    def _dir(self, sid: str) -> Path:
        return self.root / sid

    def _read(self, sid: str) -> dict | None:
        try:
            return json.loads((self._dir(sid) / "fake.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _write(self, sid: str, state: dict) -> None:
        path = self._dir(sid) / "fake.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)

    def _alive(self, state: dict | None) -> bool:
        if not state or not state.get("pid"):
            return False
        started = _start_time(state["pid"])
        # A recycled pid has another start time.
        if started is None or abs(started - state.get("pid_started", 0)) > 0.1:
            return False
        try:
            return psutil.Process(state["pid"]).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _sock(self, sid: str) -> Path:
        path = self._dir(sid) / "agent.sock"
        if len(str(path)) < 100:
            return path
        # sun_path holds ~107 bytes: a deep data dir gets its sockets under /tmp, named from the dir.
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"sandboxd-fake-{digest}.sock"

    def _runtime(self, sid: str, state: dict) -> RuntimeSandbox:
        d = self._dir(sid)
        return RuntimeSandbox(id=sid, state=RuntimeState(state["state"]), agent_socket=self._sock(sid),
                              pid=state.get("pid"), bundle=None, upper_dir=d / "root")

    async def _spawn(self, sid: str, spec_env: dict[str, str], workdir: Path) -> dict:
        d = self._dir(sid)
        sock_path = self._sock(sid)
        sock_path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(128)
        fd = listener.fileno()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env.update(spec_env)
        env.update({"SANDBOXD_AGENT_FD": str(AGENT_FD), "HOME": str(workdir), "SANDBOXD_SANDBOX_ID": sid})

        def _child() -> None:  # runs between fork and exec: put the listening socket at fd 3
            os.dup2(fd, AGENT_FD)

        logf = open(d / "agent.log", "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "sandboxd.agent", "--workspace", str(workdir), cwd=str(workdir), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=logf, stderr=logf, start_new_session=True, close_fds=False, preexec_fn=_child,
            )
        finally:
            logf.close()
            listener.close()
        self._procs[sid] = proc
        state = {"pid": proc.pid, "pid_started": _start_time(proc.pid) or time.time(), "state": "running",
                 "env": spec_env, "workdir": str(workdir)}
        self._write(sid, state)
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            if await agentclient.health(sock_path, 2.0) is not None:
                return state
            await asyncio.sleep(0.02)
        tail = (d / "agent.log").read_bytes()[-2000:].decode(errors="replace")
        await self._kill_tree(sid, state)
        raise RuntimeFailure(f"agent of {sid} did not become healthy: {tail.strip()[-500:]}")

    @staticmethod
    def _same_process(state: dict | None) -> bool:
        """The recorded pid still names the agent it was recorded for (alive or a zombie): a pid the agent left
        is soon another process's, and a process started in a session of its own (a real sandbox's kernel) has
        that pid as its process group. Being our child is not enough: asyncio reaps a child as it exits."""
        started = _start_time(state["pid"]) if state and state.get("pid") else None
        return started is not None and abs(started - state.get("pid_started", 0)) <= 0.1  # type: ignore[union-attr]

    async def _kill_tree(self, sid: str, state: dict | None) -> None:
        proc = self._procs.pop(sid, None)
        pid = (state or {}).get("pid")
        if pid and self._same_process(state):
            try:
                kids = psutil.Process(pid).children(recursive=True)
            except psutil.Error:
                kids = []
            for p in kids:  # a kernel may have left the process group; catch it too
                try:
                    p.kill()
                except psutil.Error:
                    pass
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                raise RuntimeFailure(f"cannot signal agent of {sid}: {exc}") from exc
        if proc is not None:
            await proc.wait()
        elif pid:
            for _ in range(200):  # adopted after a restart: not our child, so poll until it is gone
                if not self._alive(state):
                    break
                await asyncio.sleep(0.01)

    def _need(self, sid: str) -> dict:
        state = self._read(sid)
        if state is None:
            raise NotFound(f"sandbox {sid} not known to the fake backend", code="sandbox_not_found")
        return state

    def _signal(self, state: dict, sig: int) -> None:
        if not self._same_process(state):
            raise RuntimeFailure("agent process is gone")
        try:
            os.killpg(state["pid"], sig)
        except ProcessLookupError as exc:
            raise RuntimeFailure("agent process is gone") from exc

    # ---- the protocol -----------------------------------------------------------------------------

    async def create(self, spec: SandboxSpec, *, memory: Path | None = None) -> RuntimeSandbox:
        d = self._dir(spec.id)
        try:
            d.mkdir(parents=True, exist_ok=False)
        except FileExistsError as exc:
            raise Conflict(f"sandbox {spec.id} already exists", code="sandbox_exists") from exc
        workdir = d / "root" / "workspace"
        workdir.mkdir(parents=True)
        for src, target in spec.volumes:
            # No mount namespace here: a volume is a symlink at its path under the sandbox's root dir.
            link = d / "root" / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src, target_is_directory=True)
        env = {**spec.image.env, **spec.env}
        state = await self._spawn(spec.id, env, workdir)
        return self._runtime(spec.id, state)

    async def start(self, sandbox_id: str) -> RuntimeSandbox:
        state = self._need(sandbox_id)
        if self._alive(state):
            return self._runtime(sandbox_id, state)
        state = await self._spawn(sandbox_id, state.get("env", {}), Path(state["workdir"]))
        return self._runtime(sandbox_id, state)

    async def stop(self, sandbox_id: str) -> None:
        state = self._need(sandbox_id)
        await self._kill_tree(sandbox_id, state)
        state.update(state="stopped", pid=None)
        self._write(sandbox_id, state)

    async def update(self, sandbox_id: str, spec: SandboxSpec) -> None:
        state = self._need(sandbox_id)  # no cgroups here: only the env is the fake's to keep
        state["env"] = dict(spec.env)
        self._write(sandbox_id, state)

    async def set_egress(self, sandbox_id: str, egress: Egress) -> None:
        raise NotSupported("the fake backend has no network of its own: it cannot enforce egress rules",
                           code="egress_not_supported")

    async def egress_denied(self, sandbox_id: str) -> EgressDenied:
        raise NotSupported("the fake backend has no network of its own: it counts no denied egress",
                           code="egress_not_supported")

    async def pause(self, sandbox_id: str) -> None:
        state = self._need(sandbox_id)
        self._signal(state, signal.SIGSTOP)
        state["state"] = "paused"
        self._write(sandbox_id, state)

    def memory_snapshots(self) -> bool:
        return False

    async def fork_memory(self, sandbox_id: str, files: Path, images: Path) -> None:
        raise NotSupported("the fake backend forks files only", code="memory_snapshots_unavailable")

    async def checkpoint(self, sandbox_id: str, *, compress: bool = False) -> Checkpoint:
        raise NotSupported("the fake backend keeps paused sandboxes in RAM", code="memory_snapshots_unavailable")

    async def resume(self, sandbox_id: str) -> None:
        state = self._need(sandbox_id)
        self._signal(state, signal.SIGCONT)
        state["state"] = "running"
        self._write(sandbox_id, state)

    async def export_changes(self, sandbox_id: str, dest: Path) -> None:
        state = self._need(sandbox_id)
        if state.get("state") == "stopped":
            raise Conflict(f"sandbox {sandbox_id} is not running", code="sandbox_not_running")
        running = state.get("state") == "running"
        if running:
            await self.pause(sandbox_id)
        try:
            if (self._dir(sandbox_id) / "root").is_dir():
                await changes.copy_tree(self._dir(sandbox_id) / "root", dest)
        finally:
            if running:
                await self.resume(sandbox_id)

    async def destroy(self, sandbox_id: str, *, background: bool = False) -> None:
        d = self._dir(sandbox_id)
        state = self._read(sandbox_id)
        await self._kill_tree(sandbox_id, state)
        if state is None:
            self._kill_strays(d)  # spawned, then the server died before the state file was written
        self._sock(sandbox_id).unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    @staticmethod
    def _kill_strays(d: Path) -> None:
        needle = str(d / "root")
        for p in psutil.process_iter(["cmdline"]):
            try:
                if needle in " ".join(p.info["cmdline"] or ()):
                    p.kill()
            except psutil.Error:
                pass

    async def exec(self, sandbox_id, argv, *, env=None, user="root", cwd=None, timeout=None, stdin=None) -> ExecResult:
        state = self._need(sandbox_id)
        penv = {**os.environ, **state.get("env", {}), **(env or {})}
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd if cwd and os.path.isdir(cwd) else state["workdir"], env=penv,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except asyncio.TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return ExecResult(exit_code=-9, stdout=out, stderr=err, timed_out=True)
        assert proc.returncode is not None  # communicate() returned: the process was reaped
        return ExecResult(exit_code=proc.returncode, stdout=out, stderr=err)

    async def stats(self, sandbox_id: str) -> Stats:
        state = self._need(sandbox_id)
        cpu_ns = rss = pids = 0
        if self._alive(state):
            root = psutil.Process(state["pid"])
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    cpu_ns += int((t.user + t.system) * 1e9)
                    rss += p.memory_info().rss
                    pids += 1
                except psutil.Error:
                    pass
        disk = 0
        for dirpath, _dirs, files in os.walk(state["workdir"]):
            for f in files:
                try:
                    disk += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return Stats(cpu_usage_ns=cpu_ns, cpu_quota_cores=float(os.cpu_count() or 1), memory_used_bytes=rss,
                     memory_limit_bytes=psutil.virtual_memory().total, disk_used_bytes=disk, pids=pids)

    async def state(self, sandbox_id: str) -> RuntimeState | None:
        state = self._read(sandbox_id)
        if state is None:
            return None
        if state["state"] == "stopped":
            return RuntimeState.STOPPED
        return RuntimeState(state["state"]) if self._alive(state) else None

    async def close(self) -> None:
        """Nothing to release: its agents are host processes that outlive the control plane like sandboxes do."""

    async def recover(self) -> list[RuntimeSandbox]:
        found: list[RuntimeSandbox] = []
        if not self.root.is_dir():
            return found
        for d in self.root.iterdir():
            state = self._read(d.name)
            if state is None:
                continue  # not ours (another backend) or half-written before the first state write
            if state["state"] in ("running", "paused") and self._alive(state):
                found.append(self._runtime(d.name, state))
            elif state["state"] == "stopped":
                continue  # files kept; the control plane decides (state() reports STOPPED)
            else:
                await self.destroy(d.name)
        return found

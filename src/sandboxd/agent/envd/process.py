"""envd's process.Process service: start processes (pipes or a PTY), stream their output, list, signal,
feed stdin, resize. Processes outlive the stream that started them (a client may Connect again later);
a stream whose deadline (Connect-Timeout-Ms, the SDK's command `timeout`) passes kills its process, as
envd does. Finished processes leave the table, so signalling one afterwards is NOT_FOUND.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import os
import signal
import struct
import termios
from typing import AsyncIterator, Callable

from sandboxd.errors import Forbidden, Invalid, NotFound

from ..processes import kill_group, kill_marked_soon, spawn_marked
from . import users
from .errors import FailedPrecondition

SIGNALS = {"SIGNAL_SIGKILL": signal.SIGKILL, "SIGNAL_SIGTERM": signal.SIGTERM, 9: signal.SIGKILL,
           15: signal.SIGTERM}
READ = 65536
MAX_KEEPALIVE = 50.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(value: str | None) -> bytes:
    try:
        return base64.b64decode(value or "", validate=False)
    except (binascii.Error, ValueError):
        raise Invalid("input is not valid base64") from None


class Proc:
    def __init__(self, config: dict, tag: str | None, proc: asyncio.subprocess.Process, pid: int,
                 master: int | None):
        self.config, self.tag, self.proc, self.pid, self.master = config, tag, proc, pid, master
        self.subscribers: list[asyncio.Queue] = []
        self.end: dict | None = None
        self.done = asyncio.Event()
        self.stdin_open = True

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        if self.end is not None:
            q.put_nowait({"end": self.end})
        else:
            self.subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        if q in self.subscribers:
            self.subscribers.remove(q)

    def publish(self, event: dict) -> None:
        for q in self.subscribers:
            q.put_nowait(event)

    def info(self) -> dict:
        out: dict = {"config": self.config, "pid": self.pid}
        if self.tag:
            out["tag"] = self.tag
        return out

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.end is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            kill_group(self.proc, sig)
        if sig == signal.SIGKILL:
            kill_marked_soon(self.proc)  # what left the process group too (see agent/processes.py)


class ProcessService:
    def __init__(self, base_env: Callable[[dict | None], dict] | None = None) -> None:
        self.base_env = base_env  # the agent's env store: extra env -> the environment of a run
        self.procs: dict[int, Proc] = {}

    # ---- lookup ---------------------------------------------------------------------------------

    def select(self, selector: dict | None) -> Proc:
        selector = selector or {}
        if "pid" in selector:
            try:
                p = self.procs.get(int(selector["pid"]))
            except (TypeError, ValueError):
                p = None
            if p is None:
                raise NotFound(f"process with pid {selector['pid']} not found")
            return p
        if "tag" in selector:
            for p in self.procs.values():
                if p.tag == selector["tag"]:
                    return p
            raise NotFound(f"process with tag {selector['tag']} not found")
        raise Invalid("process selector needs pid or tag")

    # ---- start ----------------------------------------------------------------------------------

    def _env(self, user: users.User, extra: dict | None) -> dict[str, str]:
        if self.base_env is not None:
            env = dict(self.base_env(None))
        else:
            env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_AGENT_")}
        env.update({"HOME": user.home, "USER": user.name, "LOGNAME": user.name})
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        for k, v in (extra or {}).items():
            env[str(k)] = "" if v is None else str(v)
        return env

    async def start(self, msg: dict, user: users.User) -> Proc:
        cfg = msg.get("process") or {}
        cmd = cfg.get("cmd")
        if not cmd:
            raise Invalid("process.cmd is required")
        args = [str(a) for a in cfg.get("args") or []]
        envs = cfg.get("envs") or {}
        cwd = users.expand(cfg.get("cwd"), user, default=user.home)
        if not os.path.isdir(cwd):
            if cfg.get("cwd"):
                raise Invalid(f"cwd '{cwd}' does not exist")
            cwd = "/"
        env = self._env(user, envs)
        pty = msg.get("pty")
        want_stdin = msg.get("stdin", True) is not False  # absent means true (older clients)
        ids = {} if user.is_self else {"user": user.uid, "group": user.gid, "extra_groups": []}
        master = None
        try:
            if pty is not None:
                master, slave = os.openpty()
                size = (pty.get("size") or {})
                _winsize(master, int(size.get("rows") or 24), int(size.get("cols") or 80))
                env.setdefault("TERM", "xterm-256color")
                try:
                    proc = await spawn_marked([cmd, *args], cwd=cwd, env=env, stdin=slave, stdout=slave,
                                              stderr=slave, ids=ids, preexec_fn=_controlling_tty)
                finally:
                    os.close(slave)
            else:
                proc = await spawn_marked([cmd, *args], cwd=cwd, env=env,
                                          stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                                          ids=ids)
        except BaseException as e:
            if master is not None:
                os.close(master)
            if isinstance(e, FileNotFoundError):
                raise Invalid(f"executable not found: {cmd}") from None
            if isinstance(e, PermissionError):
                raise Forbidden(f"cannot execute {cmd}: {e}") from None
            raise
        config = {"cmd": cmd, "args": args, "envs": {str(k): str(v) for k, v in envs.items()}}
        if cfg.get("cwd"):
            config["cwd"] = cfg["cwd"]
        p = Proc(config, msg.get("tag"), proc, proc.pid, master)
        if not want_stdin and pty is None:
            p.stdin_open = False
        self.procs[p.pid] = p
        return p

    def run(self, p: Proc) -> None:
        """Start pumping output once the starter has subscribed (so it misses nothing)."""
        asyncio.get_running_loop().create_task(self._pump_all(p))

    async def _pump_all(self, p: Proc) -> None:
        try:
            if p.master is not None:
                await self._pump_pty(p, p.master)
            else:
                out, err = p.proc.stdout, p.proc.stderr
                assert out is not None and err is not None  # without a PTY: spawned with pipes for both
                await asyncio.gather(self._pump(p, out, "stdout"), self._pump(p, err, "stderr"))
            code = await p.proc.wait()
        finally:
            if p.master is not None:
                try:
                    os.close(p.master)
                except OSError:
                    pass
        if code >= 0:
            end = {"exited": True, "status": f"exit status {code}"}
            if code:
                end["exitCode"] = code
        else:
            # Go's os.ProcessState wording, which envd reports: "signal: killed", "signal: terminated".
            name = (signal.strsignal(-code) or f"signal {-code}").lower()
            end = {"exitCode": -1, "exited": False, "status": f"signal: {name}"}
        p.end = end
        self.procs.pop(p.pid, None)
        p.publish({"end": end})
        p.subscribers.clear()
        p.done.set()

    async def _pump(self, p: Proc, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            chunk = await stream.read(READ)
            if not chunk:
                return
            p.publish({"data": {name: b64(chunk)}})

    async def _pump_pty(self, p: Proc, master: int) -> None:
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(master, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                try:
                    chunk = os.read(master, READ)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: every holder of the slave side is gone
                    return
                if not chunk:
                    return
                p.publish({"data": {"pty": b64(chunk)}})
        finally:
            loop.remove_reader(master)

    # ---- streams ----------------------------------------------------------------------------------

    async def events(self, p: Proc, q: asyncio.Queue, keepalive: float) -> AsyncIterator[dict]:
        """{start}, then data/keepalive events, ending with {end}."""
        yield {"event": {"start": {"pid": p.pid}}}
        try:
            while True:
                try:
                    ev = await asyncio.wait_for(q.get(), keepalive)
                except asyncio.TimeoutError:
                    yield {"event": {"keepalive": {}}}
                    continue
                yield {"event": ev}
                if "end" in ev:
                    return
        finally:
            p.unsubscribe(q)

    # ---- input and control ------------------------------------------------------------------------

    async def send_input(self, p: Proc, inp: dict | None) -> None:
        inp = inp or {}
        if "pty" in inp:
            if p.master is None:
                raise FailedPrecondition(f"process {p.pid} has no PTY")
            data = unb64(inp["pty"])
            while data:
                try:
                    n = os.write(p.master, data)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                    continue
                data = data[n:]
            return
        data = unb64(inp.get("stdin"))
        if p.master is not None:
            os.write(p.master, data)
            return
        stdin = p.proc.stdin
        if not p.stdin_open or stdin is None:
            raise FailedPrecondition(f"stdin of process {p.pid} is not open")
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise FailedPrecondition(f"process {p.pid} closed its stdin") from None

    def close_stdin(self, p: Proc) -> None:
        if p.master is not None:
            os.write(p.master, b"\x04")  # EOF for a terminal
            return
        if p.proc.stdin is not None and p.stdin_open:
            p.stdin_open = False
            p.proc.stdin.close()

    def signal(self, p: Proc, sig_name) -> None:
        sig = SIGNALS.get(sig_name)
        if sig is None:
            raise Invalid(f"unsupported signal {sig_name!r}")
        p.kill(sig)

    def resize(self, p: Proc, pty: dict | None) -> None:
        if p.master is None:
            raise FailedPrecondition(f"process {p.pid} has no PTY")
        size = (pty or {}).get("size") or {}
        _winsize(p.master, int(size.get("rows") or 24), int(size.get("cols") or 80))
        try:
            os.killpg(p.pid, signal.SIGWINCH)
        except ProcessLookupError:
            pass

    def list(self) -> list[dict]:
        return [p.info() for p in self.procs.values() if p.end is None]

    async def shutdown(self) -> None:
        for p in list(self.procs.values()):
            p.kill()


def _winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:
    # Runs in the child after setsid(): make the PTY slave (fd 0) its controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def keepalive_interval(header: str | None) -> float:
    try:
        value = float(header) if header else MAX_KEEPALIVE
    except ValueError:
        value = MAX_KEEPALIVE
    return max(1.0, min(value, MAX_KEEPALIVE))

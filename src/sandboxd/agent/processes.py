"""Running user processes: one-shot runs with timeouts, and background jobs that can be listed and killed.

Every process gets its own session/process group so a timeout or kill takes out its children too
(`bash -c "sleep 100 & wait"` must not leave `sleep` behind). A child may leave that group (`setsid`),
so each command also carries a marker in its environment (MARK=<run id>), inherited by everything it
starts; a kill ends every process that carries the command's marker, scanning /proc until a scan
finds none (a fork bomb's children are found by the next scan; the sandbox's pids limit bounds it).
The marker, not the parent chain, because orphans are adopted by the sandbox's init and lose the chain.
A process that clears its own environment can leave; it then lives on like a daemon it started.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from .errors import CannotFork, FailedPrecondition, InvalidRequest, PermissionDenied, ProcessNotFound
from .server import now_iso
from .users import User, lookup

OUTPUT_CAP = 16 * 1024 * 1024  # per stream; beyond this output is dropped and a note is appended
OnData = Callable[[str], Awaitable[None]] | None
MARK = "SANDBOXD_RUN"
KILL_SCANS = 200  # a bound on rescans; each kills all found, so a bomb under the pids limit ends far sooner


# The /proc scans run on one thread of their own, made with the first command: a thread is a task
# under the pids limit too, so one made when a kill is needed (the limit reached) could not start.
_KILLER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kill-marked")
# Each marked process's MARK as it appears inside /proc/<pid>/environ; an entry goes with its process.
_MARKS: weakref.WeakKeyDictionary[asyncio.subprocess.Process, bytes] = weakref.WeakKeyDictionary()


def warm_killer() -> None:
    """Makes the scan thread now, while a thread can still be made (after the first call: a no-op task)."""
    try:
        _KILLER.submit(int)
    except RuntimeError:  # no thread can be made now: the kill falls back to the process group
        pass


@dataclass
class RunResult:
    stdout: str
    stderr: str
    exit_code: int
    duration: float
    timed_out: bool = False
    pid: int | None = None


def run_as(user: str | int | None) -> User | None:
    """The user a HopX request names (a name or uid) to run as, or None to run as the agent's own user."""
    if user in (None, "", "root", 0) and os.geteuid() == 0:
        return None
    if user in (None, ""):
        return None
    found = lookup(user if isinstance(user, int) else str(user))
    if found is None:
        raise InvalidRequest(f"unknown user: {user}", user=user)
    return None if found.is_self else found


def ids_of(user: User | None) -> dict:
    """The spawn arguments that run a process as `user` (none for the agent's own user)."""
    return {} if user is None else {"user": user.uid, "group": user.gid, "extra_groups": []}


async def spawn(argv: list[str], *, cwd: str | None, env: dict[str, str], user: str | int | None = None,
                stdin: int | None = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
    as_user = run_as(user)
    if as_user is not None:
        env = {**env, "HOME": as_user.home, "USER": as_user.name}
    if cwd and not os.path.isdir(cwd):
        cwd = None  # the contract's default /workspace may not exist in every template: fall back quietly
    try:
        return await spawn_marked(argv, cwd=cwd, env=env, stdin=stdin, ids=ids_of(as_user))
    except PermissionError as e:
        raise InvalidRequest(f"cannot execute {argv[0]}: {e}") from None


async def spawn_marked(argv: list[str], *, cwd: str | None, env: dict[str, str], stdin, stdout=asyncio.subprocess.PIPE,
                       stderr=asyncio.subprocess.PIPE, ids: dict | None = None, preexec_fn=None
                       ) -> asyncio.subprocess.Process:
    """Start a user process the one way every dialect does (HopX runs and jobs, envd's Process.Start): in its
    own session and marked (`MARK` in its environment) so a kill reaches all it started. OSErrors other
    than a full process table are the caller's to answer."""
    token = os.urandom(8).hex()
    env = {**env, MARK: token}
    warm_killer()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
            preexec_fn=preexec_fn, **(ids or {}))
    except BlockingIOError:  # EAGAIN from fork or pipe creation: the pids limit is reached
        raise CannotFork("cannot start a process: the sandbox's process limit is reached") from None
    _MARKS[proc] = f"\0{MARK}={token}\0".encode()
    return proc


def _kill_marked(mark: bytes, sig: int) -> None:
    """Signals every process whose environment carries `mark`, until a scan finds none (blocking: /proc)."""
    me = os.getpid()
    for _ in range(KILL_SCANS):
        found = False
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if mark not in b"\0" + f.read() + b"\0":
                        continue
                os.kill(int(name), sig)
                found = True
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to read
        if not found:
            return


def kill_group(proc: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass


def kill_marked_soon(proc: asyncio.subprocess.Process) -> None:
    """kill_tree's scan for callers that cannot wait: it runs on a worker thread."""
    mark = _MARKS.get(proc)
    if not mark:
        return
    try:
        asyncio.get_running_loop().run_in_executor(_KILLER, _kill_marked, mark, signal.SIGKILL)
    except RuntimeError:  # no loop in this thread: nothing to hold up
        _kill_marked(mark, signal.SIGKILL)


async def kill_tree(proc: asyncio.subprocess.Process) -> None:
    """Ends the command and everything it started, also what left its process group (see the docstring)."""
    kill_group(proc)
    mark = _MARKS.get(proc)
    if mark:
        await asyncio.get_running_loop().run_in_executor(_KILLER, _kill_marked, mark, signal.SIGKILL)


async def _pump(stream: asyncio.StreamReader, sink: list[str], on_data: OnData) -> None:
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        text = chunk.decode("utf-8", "replace")
        if size < OUTPUT_CAP:
            sink.append(text)
            size += len(chunk)
            if size >= OUTPUT_CAP:
                sink.append("\n[output truncated]\n")
        if on_data:
            await on_data(text)


async def communicate(proc: asyncio.subprocess.Process, timeout: float | None, *, on_stdout: OnData = None,
                      on_stderr: OnData = None, started: float | None = None) -> RunResult:
    started = started or time.monotonic()
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None  # spawned with pipes for both
    pumps = asyncio.gather(_pump(proc.stdout, out, on_stdout), _pump(proc.stderr, err, on_stderr))
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
    except asyncio.TimeoutError:
        timed_out = True
        await kill_tree(proc)
        await proc.wait()
    except asyncio.CancelledError:
        kill_group(proc)  # no awaiting while cancelled; the marked rest goes on a worker thread
        kill_marked_soon(proc)
        raise
    try:
        # Grandchildren may still hold the pipes open: give them a moment, then kill the group.
        await asyncio.wait_for(asyncio.shield(pumps), 2)
    except asyncio.TimeoutError:
        kill_group(proc)
        try:
            await asyncio.wait_for(pumps, 2)
        except asyncio.TimeoutError:
            pumps.cancel()
    code = proc.returncode if proc.returncode is not None else -1
    if code < 0:
        code = 128 - code  # shell convention: killed by signal N -> 128+N
    if timed_out:
        code = 124
        err.append(f"\nTimed out after {timeout:g}s; the command and every process it started were killed\n")
    return RunResult("".join(out), "".join(err), code, round(time.monotonic() - started, 6), timed_out, proc.pid)


async def run(argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
              user: str | int | None = None, on_stdout: OnData = None, on_stderr: OnData = None) -> RunResult:
    started = time.monotonic()
    try:
        proc = await spawn(argv, cwd=cwd, env=env, user=user)
    except FileNotFoundError:
        return RunResult("", f"{argv[0]}: command not found\n", 127, 0.0)
    return await communicate(proc, timeout, on_stdout=on_stdout, on_stderr=on_stderr, started=started)


@dataclass
class Job:
    """A background execution or command."""

    process_id: str
    name: str
    language: str
    command: str
    status: str = "running"
    start_time: str = field(default_factory=now_iso)
    started: float = field(default_factory=time.monotonic)
    end_time: str | None = None
    duration: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    stdout: str = ""
    stderr: str = ""
    proc: asyncio.subprocess.Process | None = None
    task: asyncio.Task | None = None

    def info(self) -> dict:
        return {
            "process_id": self.process_id, "execution_id": self.process_id, "name": self.name,
            "status": self.status, "language": self.language, "command": self.command,
            "start_time": self.start_time, "started_at": self.start_time, "end_time": self.end_time,
            "exit_code": self.exit_code, "duration": self.duration, "pid": self.pid,
            "stdout": self.stdout[-65536:], "stderr": self.stderr[-65536:],
        }


class Jobs:
    def __init__(self, keep: int = 500):
        self.jobs: dict[str, Job] = {}
        self.keep = keep

    async def start(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                    language: str, name: str | None = None, command: str = "",
                    user: str | int | None = None) -> Job:
        pid_ = "proc_" + os.urandom(6).hex()
        job = Job(pid_, name or pid_, language, command or " ".join(argv))
        try:
            proc = await spawn(argv, cwd=cwd, env=env, user=user)
        except FileNotFoundError:
            job.status, job.exit_code, job.stderr = "failed", 127, f"{argv[0]}: command not found\n"
            job.end_time, job.duration = now_iso(), 0.0
            self._add(job)
            return job
        job.proc, job.pid = proc, proc.pid
        job.task = asyncio.create_task(self._watch(job, proc, timeout))
        self._add(job)
        return job

    def _add(self, job: Job) -> None:
        self.jobs[job.process_id] = job
        if len(self.jobs) > self.keep:  # forget the oldest finished jobs
            for k in [k for k, j in self.jobs.items() if j.status != "running"][: len(self.jobs) - self.keep]:
                del self.jobs[k]

    async def _watch(self, job: Job, proc: asyncio.subprocess.Process, timeout: float | None) -> None:
        res = await communicate(proc, timeout, started=job.started)
        job.stdout, job.stderr, job.exit_code = res.stdout, res.stderr, res.exit_code
        job.end_time, job.duration = now_iso(), res.duration
        if job.status == "running":
            job.status = "completed" if res.exit_code == 0 else ("timeout" if res.timed_out else "failed")

    def list(self) -> list[dict]:
        return [j.info() for j in self.jobs.values()]

    def get(self, process_id: str) -> Job:
        job = self.jobs.get(process_id)
        if job is None:
            # Accept the OS pid too: users see it in listings.
            job = next((j for j in self.jobs.values() if str(j.pid) == str(process_id)), None)
        if job is None:
            raise ProcessNotFound(f"no such process: {process_id}", process_id=process_id)
        return job

    async def kill(self, process_id: str) -> Job:
        job = self.get(process_id)
        if job.status == "running" and job.proc:
            job.status = "killed"
            await kill_tree(job.proc)
            if job.task:
                try:
                    await asyncio.wait_for(asyncio.shield(job.task), 5)
                except asyncio.TimeoutError:
                    pass
        return job

    async def shutdown(self) -> None:
        for job in self.jobs.values():
            if job.status == "running" and job.proc:
                kill_group(job.proc)


# ---- streamed processes: output to subscribers as it comes, input while they run, optionally on a PTY ----

READ = 65536


@dataclass
class Ended:
    """How a streamed process ended: its exit code, or the signal that killed it."""

    code: int | None
    signal: int | None = None


class Proc:
    """A streamed process. Subscribers get ("stdout" | "stderr" | "pty", bytes) as output comes, then
    ("end", Ended) once; a late subscriber to an ended process gets just the end."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None, tag: str | None, config: dict):
        self.proc, self.pid, self.master, self.tag, self.config = proc, proc.pid, master, tag, config
        self.subscribers: list[asyncio.Queue] = []
        self.end: Ended | None = None
        self.done = asyncio.Event()
        self.stdin_open = master is not None or proc.stdin is not None

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        if self.end is not None:
            q.put_nowait(("end", self.end))
        else:
            self.subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        if q in self.subscribers:
            self.subscribers.remove(q)

    def publish(self, kind: str, value) -> None:
        for q in self.subscribers:
            q.put_nowait((kind, value))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.end is not None:
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            kill_group(self.proc, sig)
        if sig == signal.SIGKILL:
            kill_marked_soon(self.proc)  # what left the process group too (see the module docstring)


class Processes:
    """The streamed processes that run now, by pid. They outlive the request that started them (a client
    may subscribe again later); an ended one leaves the table."""

    def __init__(self) -> None:
        self.procs: dict[int, Proc] = {}

    def get(self, pid: int) -> Proc:
        p = self.procs.get(pid)
        if p is None:
            raise ProcessNotFound(f"process with pid {pid} not found", pid=pid)
        return p

    def tagged(self, tag: str) -> Proc:
        for p in self.procs.values():
            if p.tag == tag:
                return p
        raise ProcessNotFound(f"process with tag {tag} not found", tag=tag)

    async def start(self, argv: list[str], *, cwd: str | None, env: dict[str, str], ids: dict | None = None,
                    pty: tuple[int, int] | None = None, stdin: bool = True, tag: str | None = None,
                    config: dict | None = None) -> Proc:
        """Starts `argv` (on a PTY of (rows, cols) if given); `config` is kept for listings. Output is
        pumped once `run` is called, so that the starter can subscribe first and miss nothing."""
        master = None
        try:
            if pty is not None:
                master, slave = os.openpty()
                # Non-blocking: the reader callback can fire once more after the pump has drained the
                # master, and a blocking read would then stall the whole agent until the process speaks.
                os.set_blocking(master, False)
                _winsize(master, *pty)
                env = {"TERM": "xterm-256color", **env}
                try:
                    proc = await spawn_marked(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                              ids=ids, preexec_fn=_controlling_tty)
                finally:
                    os.close(slave)
            else:
                proc = await spawn_marked(argv, cwd=cwd, env=env, ids=ids,
                                          stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL)
        except BaseException as e:
            if master is not None:
                os.close(master)
            if isinstance(e, FileNotFoundError):
                raise InvalidRequest(f"executable not found: {argv[0]}") from None
            if isinstance(e, PermissionError):
                raise PermissionDenied(f"cannot execute {argv[0]}: {e}") from None
            raise
        p = Proc(proc, master, tag, config or {})
        self.procs[p.pid] = p
        return p

    def run(self, p: Proc) -> None:
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
        p.end = Ended(code) if code >= 0 else Ended(None, -code)
        self.procs.pop(p.pid, None)
        p.publish("end", p.end)
        p.subscribers.clear()
        p.done.set()

    async def _pump(self, p: Proc, stream: asyncio.StreamReader, name: str) -> None:
        while True:
            chunk = await stream.read(READ)
            if not chunk:
                return
            p.publish(name, chunk)

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
                p.publish("pty", chunk)
        finally:
            loop.remove_reader(master)

    async def send_input(self, p: Proc, data: bytes, *, to_pty: bool = False) -> None:
        """Feeds the process: its terminal (`to_pty`, or any input of a PTY process), else its stdin."""
        if to_pty and p.master is None:
            raise FailedPrecondition(f"process {p.pid} has no PTY")
        if p.master is not None:
            while data:
                try:
                    n = os.write(p.master, data)
                except BlockingIOError:
                    await asyncio.sleep(0.01)
                    continue
                data = data[n:]
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

    def resize(self, p: Proc, rows: int, cols: int) -> None:
        if p.master is None:
            raise FailedPrecondition(f"process {p.pid} has no PTY")
        _winsize(p.master, rows, cols)
        try:
            os.killpg(p.pid, signal.SIGWINCH)
        except ProcessLookupError:
            pass

    def running(self) -> list[Proc]:
        return [p for p in self.procs.values() if p.end is None]

    async def shutdown(self) -> None:
        for p in list(self.procs.values()):
            p.kill()


def _winsize(fd: int, rows: int, cols: int) -> None:
    import fcntl
    import struct
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:
    # Runs in the child after setsid(): make the PTY slave (fd 0) its controlling terminal. Imported in
    # the parent already (by _winsize), so the child does no import between fork and exec.
    import fcntl
    import termios

    fcntl.ioctl(0, termios.TIOCSCTTY, 0)

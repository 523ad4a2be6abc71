"""Running user processes: one-shot runs with timeouts, and one table (`Processes`) of the processes that
outlive a request (background jobs, streamed processes, terminals), listed and killed by every dialect.

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
import shutil
import signal
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Awaitable, Callable

from .errors import CannotFork, FailedPrecondition, InvalidRequest, PermissionDenied, ProcessNotFound
from .server import now_iso
from .users import User, lookup, template_user

OUTPUT_CAP = 16 * 1024 * 1024  # per stream; beyond this output is dropped and a note is appended
OnData = Callable[[str], Awaitable[None]] | None
Publish = Callable[[str, bytes], None] | None
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
    """The user a HopX request names (a name or uid) to run as, or None to run as the agent's own user. A
    request that names none runs as the template's USER (docs/templates.md "At run time")."""
    if user in (None, ""):
        user = template_user()
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
    argv = without_bash(argv, env)
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


def without_bash(argv: list[str], env: dict[str, str]) -> list[str]:
    """argv with the image's /bin/sh for a bash the image does not have (busybox, alpine, distroless with a
    shell): E2B's and HopX's clients run every command as `bash [-l] -c ...`, which sh takes as well."""
    if os.path.basename(argv[0]) != "bash" or (shutil.which(argv[0], path=env.get("PATH", os.defpath))
                                               if "/" not in argv[0] else os.path.exists(argv[0])):
        return argv
    return ["/bin/sh", *argv[1:]] if os.path.exists("/bin/sh") else argv


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
    """Signal the process group the command leads. Once the command is reaped, its id stays reserved while
    anyone of its group lives; an id that names a process again was handed to someone else, whose group
    (a session leader's) this must not hit."""
    if proc.returncode is not None and os.path.exists(f"/proc/{proc.pid}"):
        return
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


async def _pump(stream: asyncio.StreamReader, sink: list[str], on_data: OnData, name: str,
                publish: Publish = None) -> None:
    size = 0
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        if publish is not None:
            publish(name, chunk)
        text = chunk.decode("utf-8", "replace")
        if size < OUTPUT_CAP:
            sink.append(text)
            size += len(chunk)
            if size >= OUTPUT_CAP:
                sink.append("\n[output truncated]\n")
        if on_data:
            await on_data(text)


async def communicate(proc: asyncio.subprocess.Process, timeout: float | None, *, on_stdout: OnData = None,
                      on_stderr: OnData = None, started: float | None = None, publish: Publish = None) -> RunResult:
    """Collects the output until the process ends (killed at `timeout`); `publish` also gets each raw chunk."""
    started = started or time.monotonic()
    out: list[str] = []
    err: list[str] = []
    assert proc.stdout is not None and proc.stderr is not None  # spawned with pipes for both
    pumps = asyncio.gather(_pump(proc.stdout, out, on_stdout, "stdout", publish),
                           _pump(proc.stderr, err, on_stderr, "stderr", publish))
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


# ---- the process table: every user process however started, output to subscribers as it comes ----

READ = 65536


@dataclass
class Ended:
    """How a process ended: its exit code, or the signal that killed it."""

    code: int | None
    signal: int | None = None


def _ended(returncode: int) -> Ended:
    return Ended(returncode) if returncode >= 0 else Ended(None, -returncode)


class Proc:
    """One user process of the table. `config` is what it was started with (cmd, args, the envs asked for,
    cwd), `tag` envd's name for it, `id`/`name`/`language`/`command` HopX's; each dialect shows its own part.

    Subscribers get ("stdout" | "stderr" | "pty", bytes) as output comes, then ("end", Ended) once; a late
    subscriber to an ended process gets just the end. A background job (`Processes.background`) also
    collects its output for HopX's listings; `proc` is None for one whose executable was not found."""

    def __init__(self, proc: asyncio.subprocess.Process | None, config: dict, *, master: int | None = None,
                 tag: str | None = None, name: str | None = None, language: str = "bash", command: str = ""):
        self.proc, self.master, self.tag, self.config = proc, master, tag, config
        self.pid = proc.pid if proc is not None else None
        self.id = "proc_" + os.urandom(6).hex()
        self.name, self.language = name or tag or self.id, language
        self.command = command or " ".join([config.get("cmd", ""), *config.get("args", [])])
        self.status = "running"  # then completed, failed, timeout or killed
        self.start_time, self.started = now_iso(), time.monotonic()
        self.end_time: str | None = None
        self.duration: float | None = None
        self.exit_code: int | None = None
        self.stdout = self.stderr = ""
        self.subscribers: list[asyncio.Queue] = []
        self.end: Ended | None = None
        self.done = asyncio.Event()
        self.task: asyncio.Task | None = None
        self.stdin_open = master is not None or (proc is not None and proc.stdin is not None)

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
        if self.end is not None or self.proc is None:
            return
        self.status = "killed"
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            kill_group(self.proc, sig)
        if sig == signal.SIGKILL:
            kill_marked_soon(self.proc)  # what left the process group too (see the module docstring)

    def finish(self, end: Ended, exit_code: int, *, timed_out: bool = False, duration: float | None = None) -> None:
        """Records the end and tells the subscribers."""
        self.exit_code, self.end_time = exit_code, now_iso()
        self.duration = round(time.monotonic() - self.started, 6) if duration is None else duration
        if self.status == "running":
            self.status = "completed" if exit_code == 0 else ("timeout" if timed_out else "failed")
        self.end = end
        self.publish("end", end)
        self.subscribers.clear()
        self.done.set()


class Processes:
    """The one table of user processes, whichever dialect started them: envd's and the terminal's streamed
    processes and HopX's background jobs, so each dialect lists, signals and kills the others' too. A
    process outlives the request that started it (a client may subscribe again later). Lookups by pid or
    tag see running processes only (envd: an ended process is not found); HopX's listing also shows the
    last `keep` ended ones."""

    def __init__(self, keep: int = 500) -> None:
        self.table: dict[str, Proc] = {}  # by id, in start order
        self.keep = keep

    def _add(self, p: Proc) -> Proc:
        self.table[p.id] = p
        if len(self.table) > self.keep:  # forget the oldest ended processes
            for k in [k for k, e in self.table.items() if e.end is not None][: len(self.table) - self.keep]:
                del self.table[k]
        return p

    def get(self, pid: int) -> Proc:
        for p in self.table.values():
            if p.pid == pid and p.end is None:
                return p
        raise ProcessNotFound(f"process with pid {pid} not found", pid=pid)

    def tagged(self, tag: str) -> Proc:
        for p in self.table.values():
            if p.tag == tag and p.end is None:
                return p
        raise ProcessNotFound(f"process with tag {tag} not found", tag=tag)

    def find(self, process_id: str) -> Proc:
        """A process running or recently ended, by its id or its OS pid (users see both in listings)."""
        p = self.table.get(process_id)
        if p is None:
            p = next((e for e in reversed(self.table.values()) if str(e.pid) == str(process_id)), None)
        if p is None:
            raise ProcessNotFound(f"no such process: {process_id}", process_id=process_id)
        return p

    def running(self) -> list[Proc]:
        return [p for p in self.table.values() if p.end is None]

    def listed(self) -> list[Proc]:
        return list(self.table.values())

    async def start(self, argv: list[str], *, cwd: str | None, env: dict[str, str], ids: dict | None = None,
                    pty: tuple[int, int] | None = None, stdin: bool = True, tag: str | None = None,
                    config: dict | None = None) -> Proc:
        """Starts `argv` (on a PTY of (rows, cols) if given) to stream; `config` is kept for listings. Output
        is pumped once `run` is called, so that the starter can subscribe first and miss nothing."""
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
        config = config or {"cmd": argv[0], "args": argv[1:], "envs": {}}
        return self._add(Proc(proc, config, master=master, tag=tag))

    def run(self, p: Proc) -> None:
        p.task = asyncio.get_running_loop().create_task(self._pump_all(p))

    async def background(self, argv: list[str], *, cwd: str | None, env: dict[str, str], timeout: float | None,
                         language: str, name: str | None = None, command: str = "", user: str | int | None = None,
                         envs: dict | None = None) -> Proc:
        """Starts a HopX background job: its output is collected (and streamed to any subscriber), it is
        killed at `timeout`. An executable that is not there makes a failed job (127), not an error."""
        config = {"cmd": argv[0], "args": argv[1:], "envs": {str(k): str(v) for k, v in (envs or {}).items()}}
        if cwd:
            config["cwd"] = cwd
        try:
            proc = await spawn(argv, cwd=cwd, env=env, user=user)
        except FileNotFoundError:
            p = Proc(None, config, name=name, language=language, command=command)
            p.stderr = f"{argv[0]}: command not found\n"
            p.finish(Ended(127), 127, duration=0.0)
            return self._add(p)
        p = Proc(proc, config, name=name, language=language, command=command)
        p.task = asyncio.create_task(self._collect(p, proc, timeout))
        return self._add(p)

    async def _collect(self, p: Proc, proc: asyncio.subprocess.Process, timeout: float | None) -> None:
        res = await communicate(proc, timeout, started=p.started, publish=p.publish)
        p.stdout, p.stderr = res.stdout, res.stderr
        p.finish(_ended(proc.returncode if proc.returncode is not None else -signal.SIGKILL), res.exit_code,
                 timed_out=res.timed_out, duration=res.duration)

    async def stop(self, p: Proc) -> Proc:
        """Kills the process and all it started (see the module docstring) and waits a moment for its end."""
        if p.end is None and p.proc is not None:
            p.status = "killed"
            await kill_tree(p.proc)
            try:
                await asyncio.wait_for(p.done.wait(), 5)
            except asyncio.TimeoutError:
                pass
        return p

    async def _pump_all(self, p: Proc) -> None:
        proc = p.proc
        assert proc is not None  # only started processes are pumped
        try:
            if p.master is not None:
                await self._pump_pty(p, p.master)
            else:
                out, err = proc.stdout, proc.stderr
                assert out is not None and err is not None  # without a PTY: spawned with pipes for both
                await asyncio.gather(self._pump(p, out, "stdout"), self._pump(p, err, "stderr"))
            code = await proc.wait()
        finally:
            if p.master is not None:
                try:
                    os.close(p.master)
                except OSError:
                    pass
        p.finish(_ended(code), code if code >= 0 else 128 - code)

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
        stdin = p.proc.stdin if p.proc is not None else None
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
        if p.proc is not None and p.proc.stdin is not None and p.stdin_open:
            p.stdin_open = False
            p.proc.stdin.close()

    def resize(self, p: Proc, rows: int, cols: int) -> None:
        if p.master is None or p.pid is None:
            raise FailedPrecondition(f"process {p.pid} has no PTY")
        _winsize(p.master, rows, cols)
        try:
            os.killpg(p.pid, signal.SIGWINCH)
        except ProcessLookupError:
            pass

    async def shutdown(self) -> None:
        for p in self.running():
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

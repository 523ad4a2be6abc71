"""Start a sandbox's agent by forking it from a per-image zygote (agent/zygote.py) instead of exec'ing Python.

The agent's Python start is most of a cold create's CPU (docs/performance.md): the zygote imports it once
per builtin template image, and each sandbox's agent is a fork that enters the container crun made. The
zygote runs as root in a private mount namespace, chrooted into the image's (read-only) layer with the
agent package bound where sandboxes have it: the template's own interpreter, never the host's, and only in
builtin layers (user-built layers are written by sandbox code: a zygote never runs them). An image built on a
builtin layer uses that layer's zygote when its own layers do not touch the Python installation
(`keeps_python`); otherwise its agent starts cold.

What a fork is given (SCM_RIGHTS): a pidfd of the container's init, the `cgroup.procs` file of each of its
cgroups, the agent's listening socket, the write end of the "life" pipe whose read end the container's own
process waits on (so the sandbox ends when its agent does), the log file, and a memfd with the env vars.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

from sandboxd.errors import RuntimeFailure
from sandboxd.runtime.inroot import OPAQUE_XATTR

log = logging.getLogger("sandboxd.runtime.zygote")
MOUNT_OPTIONS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "nsdelegate",
                 "memory_recursiveprot", "favordynmods"}  # cgroup mount options that are not controllers
TARGET_PKG = "/opt/sandboxd/pkg/sandboxd"
# The container's own process: tini reaps, sh waits until the agent's end of the life pipe (fd 3) closes.
WAIT_ARGV = ["/usr/bin/tini", "-g", "--", "/bin/sh", "-c", "read _ <&3"]
# Run by the host's interpreter in the zygote's new mount namespace: the image's layer (read-only) becomes
# the root, with the agent package on it and /proc, and the host's whole tree is detached, so the zygote
# holds none of the host's mounts (a sandbox's disk it kept would stay busy after the host unmounts it).
# Then the template's own interpreter, with an empty environment; the socket on stdin becomes its fd 3.
SETUP = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH, SYS_PIVOT_ROOT = 1, 32, 4096, 16384, 262144, 2, 155
def check(rc, what):
    if rc != 0:
        raise OSError(ctypes.get_errno(), what)
def mount(src, dst, fstype, flags):
    check(libc.mount(src and src.encode(), dst.encode(), fstype and fstype.encode(), flags, None), "mount " + dst)
env = dict(os.environ)
root, target = env["ROOT"], env["ROOT"] + env["TARGET"]
os.dup2(0, 3)
os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount(env["LAYER"], root, None, MS_BIND)
mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
mount(env["PKG"], target, None, MS_BIND)
mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
mount("proc", root + "/proc", "proc", 0)
os.chdir(root)
check(libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
check(libc.umount2(b".", MNT_DETACH), "detach the host's tree")
os.chdir("/")
os.execve("/opt/sandboxd/venv/bin/python",
          ["/opt/sandboxd/venv/bin/python", "-I", "-B", "-m", "sandboxd.agent.zygote"], {})
"""


@functools.cache
def _cgroup_mounts() -> dict[frozenset[str], Path]:
    """Where each cgroup hierarchy is mounted, by its controllers (the unified one: empty). Read once: the
    host's cgroup mounts do not change while the daemon runs, and mountinfo grows with every sandbox."""
    mounts: dict[frozenset[str], Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _, opts = right.split()[:3]
            point = Path(left.split()[4])
            if fstype == "cgroup2":
                mounts.setdefault(frozenset(), point)
            elif fstype == "cgroup":
                names = frozenset(o for o in opts.split(",") if o.startswith("name=")
                                  or ("=" not in o and o not in MOUNT_OPTIONS))
                mounts.setdefault(names, point)
    return mounts


def cgroup_files(pid: int) -> list[int]:
    """The `cgroup.procs` of every cgroup the process is in (each v1 hierarchy and the unified one), open
    for writing: a fork that writes "0" to them joins exactly the container's cgroups."""
    mounts = _cgroup_mounts()
    fds = []
    try:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, ctrls, path = line.split(":", 2)
            point = mounts.get(frozenset(c for c in ctrls.split(",") if c))
            if point is None:
                continue
            fds.append(os.open(point / path.lstrip("/") / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


MAX_FAILURES = 3  # failures in a row before an image's sandboxes stop using its zygote


class ZygoteFailed(RuntimeFailure):
    """The zygote could not start an agent; the backend starts that sandbox's agent cold."""


PYTHON_DIRS = ("usr/lib", "usr/local/lib", "usr/bin", "usr/local/bin")


def keeps_python(layer: Path) -> bool:
    """Whether a layer above a builtin one leaves its Python alone: no python* entry where the interpreter and
    its modules live, and no replacement of the directories on the way (the merged-/usr links `lib`, `bin`,
    `lib64`, or `usr` itself turned into something else). The layer was written by sandbox code: nothing here
    follows a link out of it, and anything unexpected answers False (the agent then starts cold)."""
    try:
        for link in ("lib", "lib64", "bin", "sbin"):
            if os.path.lexists(layer / link):
                return False
        for rel in ("usr", "usr/local", *PYTHON_DIRS):  # parents first: each is known to be a real directory
            path = layer / rel
            if not os.path.lexists(path):
                continue
            if not stat.S_ISDIR(os.lstat(path).st_mode) or _opaque(path):  # opaque: hides all below it
                return False
            if rel in PYTHON_DIRS and any(name.startswith("python") for name in os.listdir(path)):
                return False
    except OSError:
        return False
    return True


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


class Zygote:
    """One zygote process for one image layer; `spawn` is serialised (one request in flight)."""

    def __init__(self, layer: Path, agent_pkg: Path, run_dir: Path):
        self.layer, self.agent_pkg, self.run_dir = layer, agent_pkg, run_dir
        self.broken = False
        self.failures = 0
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.lock = asyncio.Lock()

    def _start(self) -> None:
        root = self.run_dir / "zygote-root"
        root.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LAYER": str(self.layer), "ROOT": str(root),
               "PKG": str(self.agent_pkg), "TARGET": TARGET_PKG}
        try:
            # Its end of the socketpair comes as stdin and becomes the zygote's fd 3; nothing else is inherited.
            with open(self.run_dir / "zygote.log", "ab") as errors:
                self.proc = subprocess.Popen(["unshare", "--mount", "--", sys.executable, "-I", "-S", "-c", SETUP], env=env,
                                             stdin=theirs.fileno(), stdout=subprocess.DEVNULL, stderr=errors,
                                             start_new_session=True)
        finally:
            theirs.close()
        self.sock = ours

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def spawn(self, init_pid: int, *, sock: int, life: int, log_fd: int, env: dict[str, str],
                    caps: list[str], seccomp: bytes, oom_score_adj: int) -> None:
        """Fork an agent into the container whose init is `init_pid`; RuntimeFailure if any step failed."""
        async with self.lock:
            if not self.alive():
                self._start()
            fds: list[int] = []
            try:
                fds.append(os.pidfd_open(init_pid))
                memfd = os.memfd_create("env", os.MFD_CLOEXEC)
                fds.append(memfd)
                os.write(memfd, json.dumps(env).encode())
                fds.extend(cgroup_files(init_pid))
                req = json.dumps({"caps": caps, "seccomp": seccomp.hex(), "oom_score_adj": oom_score_adj})
                order = [fds[0], sock, life, log_fd, memfd, *fds[2:]]
                answer = await asyncio.to_thread(self._ask, req.encode(), order)
            except OSError as exc:  # the container's init already gone, a cgroup missing
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            finally:
                for fd in fds:
                    os.close(fd)
        if not answer.get("ok"):
            raise ZygoteFailed(f"zygote could not start the agent: {answer.get('error')}")

    def _ask(self, req: bytes, fds: list[int]) -> dict:
        assert self.sock is not None
        try:
            socket.send_fds(self.sock, [req], fds)
            line = b""
            while not line.endswith(b"\n"):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the zygote exited")
                line += chunk
            return json.loads(line)
        except (OSError, ValueError) as exc:
            self.close()
            return {"ok": False, "error": str(exc)}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None

"""The agent zygote: the agent's modules imported once, then one fork per sandbox that enters the sandbox.

Started by the host (runtime/oci/zygote.py) as root, in a private mount namespace chrooted into a builtin
template's own layer, so it runs the template's interpreter and every module path is the one the sandbox
sees. For each request on fd 3 (a unix socket; the fds come with SCM_RIGHTS) it forks a child that:

1. joins the sandbox's cgroups (the `cgroup.procs` files the host opened) while still host root;
2. enters all the container's namespaces at once (`setns` on a pidfd of its init) and becomes its root,
   which the sandbox's own user namespace maps to the first host uid of that sandbox's range;
3. forks twice, the middle process exiting at once, so the agent is in the sandbox's PID namespace and a child
   of the sandbox's tini (its own process tree: a memory checkpoint takes that tree);
4. drops to the container's capabilities, sets no_new_privs, stays non-dumpable (its memory, mapped from
   the host's namespace, must stay closed to sandbox code), loads the container's very seccomp program;
5. runs the agent on the listening socket, with the environment read from a memfd only the child reads:
   the zygote itself never holds a sandbox's secrets, so no sandbox can inherit another's.

Every step failing ends the child with a message; the host then starts that sandbox's agent cold.
"""
from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import os
import signal
import socket
import sys

from sandboxd.agent import __main__ as agent_main  # asyncio (without ssl), the argument parser
from sandboxd.agent import app as _app, server as _server, services as _services  # noqa: F401
from sandboxd.agent import processes as _processes  # noqa: F401  (what a first command loads)

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x02000000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
ALL_NS = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP
PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER = 4, 22, 24, 36
PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 38, 47
PR_CAP_AMBIENT_CLEAR_ALL, SECCOMP_MODE_FILTER = 4, 2
CAP_VERSION_3 = 0x20080522
CAPS = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
        "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
        "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
        "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
        "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
        "CHECKPOINT_RESTORE"]

libc = ctypes.CDLL(None, use_errno=True)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(*args: int, what: str) -> None:
    _check(libc.prctl(*[ctypes.c_ulong(a) for a in args]), what)


def _capabilities(names: list[str]) -> None:
    keep = {CAPS.index(n.removeprefix("CAP_")) for n in names}
    for cap in range(64):
        if cap not in keep and libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) != 0:
            if ctypes.get_errno() != 22:  # EINVAL: past the kernel's last capability
                _check(-1, f"drop capability {cap} from the bounding set")
    mask = sum(1 << c for c in keep)
    data = (_CapData * 2)(_CapData(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0),
                          _CapData(mask >> 32, mask >> 32, 0))
    _check(libc.capset(ctypes.byref(_CapHeader(CAP_VERSION_3, 0)), data), "capset")
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, what="clear ambient capabilities")


def _seccomp(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "load the seccomp program")


def _agent(req: dict, sock: int, life: int, log: int, envfd: int, report: int) -> None:
    """The second child: already in every namespace of the sandbox; becomes its agent."""
    os.chdir("/")
    os.setsid()  # its own session, inside the sandbox (the zygote's is outside: a checkpoint takes none of it)
    env = json.loads(os.pread(envfd, 1 << 24, 0) or b"{}")
    os.close(envfd)
    _capabilities(req["caps"])
    _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, what="no_new_privs")
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0, what="dumpable")
    # Out of the way first (a received fd may be numbered 3, 4 or 5), then to their places.
    null, log, sock, life, report = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in
                                     (os.open("/dev/null", os.O_RDONLY), log, sock, life, report))
    for fd, target in ((null, 0), (log, 1), (log, 2)):
        os.dup2(fd, target)
    for fd, target in ((sock, 3), (life, 4), (report, 5)):
        os.dup2(fd, target, inheritable=False)
    os.closerange(6, 1 << 16)
    _seccomp(bytes.fromhex(req["seccomp"]))
    os.write(5, b"ok")
    os.close(5)
    os.environ.clear()
    os.environ.update(env)
    os.environ["SANDBOXD_AGENT_FD"] = "3"
    sys.argv = ["/opt/sandboxd/venv/bin/python", "-I", "-m", "sandboxd.agent"]
    gc.enable()
    agent_main.main([])


def _enter(req: dict, fds: list[int]) -> None:
    """The first child: host root until it enters the sandbox; forks the agent and reports how that went."""
    pidfd, sock, life, log, envfd, *cgroups = fds
    # Still host root: after the uid change the kernel makes this process's /proc files root's (it is
    # not dumpable), so the sandbox's root could not write them any more.
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(str(req.get("oom_score_adj", 0)))
    for fd in cgroups:
        os.write(fd, b"0")  # "0": the writing process
        os.close(fd)
    _check(libc.setns(pidfd, ALL_NS), "setns")
    os.close(pidfd)
    try:
        os.setgroups([])
    except PermissionError:  # a user namespace with setgroups denied: the groups map to nobody anyway
        pass
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        # Already in the sandbox's PID namespace: this middle process exits at once, so the kernel gives the
        # agent to the sandbox's init (a process that dies in a namespace hands its children to that
        # namespace's init, not to a subreaper outside). The agent is then in the sandbox's own process tree,
        # which is what a memory checkpoint takes (docs/snapshots.md).
        os.close(r)
        if os.fork() == 0:
            try:
                _agent(req, sock, life, log, envfd, w)
            except BaseException as exc:  # noqa: BLE001 - reported to the host, which starts the agent cold
                try:
                    os.write(w, f"{type(exc).__name__}: {exc}".encode()[:1000])
                except OSError:
                    pass
            os._exit(70)
        os._exit(0)
    os.close(w)
    os.waitpid(middle, 0)
    answer = os.read(r, 1024)
    os.write(1, answer)
    os._exit(0 if answer == b"ok" else 1)


def serve(ctl: socket.socket) -> None:
    # Each first fork's own exited child is re-parented to the zygote when that fork exits, and reaped at
    # once by the kernel (SIGCHLD ignored).
    _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, what="child subreaper")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    gc.collect()
    gc.freeze()  # what was imported stays shared with every fork instead of being copied by the collector
    gc.disable()
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1 << 20, 64)
        except OSError:
            return
        if not msg:
            return
        req = json.loads(msg)
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the agent waits for its own children
            os.dup2(out_w, 1)
            ctl.close()
            try:
                _enter(req, fds)
            except BaseException as exc:  # noqa: BLE001
                os.write(1, f"{type(exc).__name__}: {exc}".encode()[:1000])
            os._exit(1)
        os.close(out_w)
        for fd in fds:
            os.close(fd)
        answer = b""
        while chunk := os.read(out_r, 1024):
            answer += chunk
        os.close(out_r)  # at EOF the first fork has exited (and was reaped by the kernel)
        ok = answer == b"ok"
        ctl.sendall(json.dumps({"ok": ok, "error": None if ok else answer.decode(errors="replace")}).encode()
                    + b"\n")


if __name__ == "__main__":
    serve(socket.socket(fileno=3))

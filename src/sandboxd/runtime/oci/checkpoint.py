"""A sandbox's processes to disk and back with CRIU (docs/snapshots.md).

What CRIU takes itself: the sandbox's process tree from its init (tini, the agent, kernels, user processes,
PTYs), their memory, the namespaces crun made (user, pid, mount, net with loopback, ipc, uts, cgroup), its
mounts and its cgroups' limits. What is the platform's and is handed over here:
- bind mounts from the host (config binds, the devices crun binds, masked files, cgroup v1 hierarchies):
  external mounts, keyed by their path in the sandbox and bound again from today's sources on restore;
- host files the sandbox's processes hold or map but cannot see (the agent log on fds 1 and 2, /dev/null,
  and the interpreter and libraries an agent forked by the zygote maps from the zygote's view of the template
  layer): external files `file[mnt:ino]`, recorded with the host path they are on (checked by device and
  inode when dumped) and given back as open fds;
- the agent's listening socket (fd 3, bound on the host): external, and a new one listening on the same host
  path is given back;
- the network: the host end of the veth goes down before the dump, so the outside gets no answers from a
  sandbox that is no longer there (its peers retransmit); the sandbox end is taken out of the sandbox before
  the dump and kept in a parking namespace with its address until the restore puts it back. After a host
  reboot a new veth is made.
"""
from __future__ import annotations

import contextlib
import ctypes
import shutil
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sandboxd.errors import RuntimeFailure
from sandboxd.runtime import criuprep, lxcfs, mountinfo, network
from sandboxd.runtime.oci import config, paths
from sandboxd.runtime.oci.pids import alive

log = logging.getLogger("sandboxd.runtime")
IMAGES = "checkpoint"  # under the sandbox dir
META = "sandboxd.json"


def _fdinfo_mnt_id(pid: int | str, fd: int | str) -> int:
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("mnt_id:"):
            return int(line.split()[1])
    raise OSError(f"no mnt_id for fd {fd} of {pid}")


def _flags(pid: int | str, fd: int | str) -> int:
    for line in Path(f"/proc/{pid}/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    return os.O_RDONLY


def mount_ids(pid: int) -> set[int]:
    return {int(line.split()[0]) for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()}


@dataclass(frozen=True)
class HostFile:
    key: str  # CRIU's external id: file[<mnt_id hex>:<ino hex>]
    path: str  # where it is on the host
    flags: int  # how to open it again


def _host_path(st: os.stat_result, candidates: list[Path]) -> str | None:
    """The host path of a file a sandbox process holds: the first candidate that is that very inode."""
    for path in candidates:
        try:
            got = os.stat(path)
        except OSError:
            continue
        if (got.st_dev, got.st_ino) == (st.st_dev, st.st_ino):
            return str(path)
    return None


def host_files(pids: list[int], inside: set[int], layer: Path | None, pkg: Path | None,
               pkg_target: str) -> list[HostFile]:
    """Files the sandbox's processes map or hold that live on mounts the sandbox does not have."""
    found: dict[str, HostFile] = {}
    me = os.getpid()
    for pid in pids:
        entries: list[tuple[str, bool]] = [(f"/proc/{pid}/exe", False)]
        try:
            entries += [(f"/proc/{pid}/map_files/{n}", False) for n in os.listdir(f"/proc/{pid}/map_files")]
            entries += [(f"/proc/{pid}/fd/{n}", True) for n in os.listdir(f"/proc/{pid}/fd")]
        except FileNotFoundError:
            continue
        for entry, is_fd in entries:
            try:
                fd = os.open(entry, os.O_PATH)
            except OSError:
                continue
            try:
                st = os.fstat(fd)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode)):
                    continue
                mnt = _fdinfo_mnt_id(me, fd)
                if mnt in inside:
                    continue
                key = f"file[{mnt:x}:{st.st_ino:x}]"
                if key in found:
                    continue
                seen = os.readlink(entry)
                cands = [Path(seen)]
                if pkg is not None and seen.startswith(pkg_target + "/"):
                    cands.append(pkg / seen[len(pkg_target) + 1:])
                if layer is not None:
                    cands.append(layer / seen.lstrip("/"))
                path = _host_path(st, cands)
                if path is None:
                    raise RuntimeFailure(f"a sandbox process holds a host file CRIU cannot place: {seen}",
                                         code="checkpoint_unsupported")
                flags = _flags(pid, entry.rsplit("/", 1)[1]) if is_fd else os.O_RDONLY
                found[key] = HostFile(key, path, flags & (os.O_ACCMODE | os.O_APPEND))
            finally:
                os.close(fd)
    return list(found.values())


def tree(init: int) -> list[int]:
    """init and its descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    out, todo = [], [init]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def external_mounts(init: int, binds: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """Mount points in the sandbox that bind something from outside it: the config's binds (`binds`: their
    destinations; one may be a whole file system of the host's, as the agent runtime's mount is), and any
    other whose file system no mount of the sandbox's own shows from its root (a bind of part of the sandbox's
    /proc is its own; a device, a lxcfs file, a cgroup hierarchy are not). Also the empty tmpfs crun puts on each masked
    directory: as a tmpfs CRIU would save and restore its contents with tar, two processes and ~4.5 ms each;
    restored, it is a bind of the host's empty read-only tmpfs (criuprep.masked_dir)."""
    rows = mountinfo.read(init)
    whole = {m.dev for m in rows if m.root == "/"}
    out: list[str] = []
    for m in rows:
        masked = m.point in config.MASKED_PATHS and m.fstype == "tmpfs"
        if m.point != "/" and (m.dev not in whole or masked or m.point in binds) and m.point not in out:
            out.append(m.point)
    return out


def mount_source(point: str, binds: dict[str, str], cgroup_dir, lxcfs_dir: Path | None) -> str:
    """Where an external mount of the sandbox is bound from today (config binds, cgroups, devices, masks, lxcfs)."""
    if point in binds:
        return binds[point]
    if point.startswith("/sys/fs/cgroup/"):
        return str(cgroup_dir(point.removeprefix("/sys/fs/cgroup/")))
    if point in DEVICES:
        return point
    if point in config.MASKED_PATHS:  # crun binds /dev/null over a masked file, a tmpfs over a directory
        return str(criuprep.masked_dir()) if Path(point).is_dir() else "/dev/null"
    if lxcfs_dir is not None and point.lstrip("/") in lxcfs.FILES:  # lxcfs slow to answer today's check
        return str(lxcfs_dir / point.lstrip("/"))
    raise RuntimeFailure(f"no source today for the sandbox's mount {point}", code="restore_failed")


def reachable(src: Path, stage: Path, uid: int, staged: dict[Path, Path]) -> Path:
    """src, or the same file through a bind under stage when uid cannot walk to it: CRIU binds external mounts
    from inside the sandbox's user namespace, as its root, which has no rights over host directories (a 0700
    data dir). Only the directories above src must be searchable, not src itself (a device, a lxcfs file). A
    bind of src's directory serves each of its files (`staged`: what was bound -> where), unless that
    directory itself is closed to uid."""
    blocked = paths.blocking_dir(src.parent, uid)
    if blocked is None:
        return src
    bound = src if blocked == src.parent else src.parent
    if bound not in staged:
        paths.make_dir(stage)
        point = stage / str(len(staged))
        point.mkdir() if bound.is_dir() else point.touch()
        if _libc.mount(os.fsencode(str(bound)), os.fsencode(str(point)), None, MS_BIND, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"bind {bound}: {os.strerror(err)}")
        staged[bound] = point
    return staged[bound] if bound == src else staged[bound] / src.name


def unstage(stage: Path) -> None:
    """Detach the binds reachable() made (the sandbox's own binds of what is in them stay) and remove their
    points. Never a recursive delete: a bind that failed to detach would lead into the sandbox's directory."""
    if not stage.exists():
        return
    for d in stage.iterdir():
        _libc.umount2(os.fsencode(str(d)), MNT_DETACH)
        with contextlib.suppress(OSError):
            d.rmdir() if d.is_dir() else d.unlink()
    with contextlib.suppress(OSError):
        stage.rmdir()


MS_BIND, MNT_DETACH = 4096, 2
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/random", "/dev/urandom")


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot, as the runtime records it."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def wait_unparked(init: int, timeout: float = 3.0) -> None:
    """Wait until no process of the sandbox holds a socket of the host's any more (the agent let go)."""
    deadline = time.monotonic() + timeout
    while True:
        held = host_sockets(tree(init))
        if not held:
            return
        if time.monotonic() > deadline:
            # e.g. an agent started cold, whose socket tini holds too (docs/snapshots.md)
            raise RuntimeFailure(f"sandbox processes hold sockets of the host ({', '.join(held[:4])}): CRIU "
                                 "cannot take them", code="checkpoint_unsupported")
        time.sleep(0.01)


def host_sockets(pids: list[int]) -> list[str]:
    """fds of these processes that are sockets of the host's network namespace (ours): CRIU cannot take
    them. The host's unix and TCP sockets are listed, by inode, in our own /proc/net."""
    host: set[str] = set()
    for table in ("unix", "tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/self/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        col = 6 if table == "unix" else 9
        host.update(ln.split()[col] for ln in lines if len(ln.split()) > col)
    found = []
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for n in names:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{n}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in host:
                found.append(f"pid {pid} fd {n}")
    return found


def ring(pid: int, listening_fd: int, timeout: float = 10.0) -> None:
    """Hand an agent waiting at its doorbell (agent/park.py) its listening socket, from a thread of our own that
    enters the sandbox's network namespace (abstract unix names are per namespace). Retried until the agent
    listens there (a cold agent is still starting), timeout passes or the sandbox's init (pid) is gone."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            ns = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                if _libc.setns(ns, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(ns)
            deadline = time.monotonic() + timeout
            while True:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(DOORBELL)
                    socket.send_fds(s, [b"s"], [listening_fd])
                    return
                except OSError:
                    if time.monotonic() > deadline or not alive(pid):
                        raise
                finally:
                    s.close()
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - given to the caller
            err.append(exc)

    t = threading.Thread(target=run, name="sandboxd-doorbell")
    t.start()
    t.join()
    if err:
        raise RuntimeFailure(f"could not reach the agent's doorbell: {err[0]}", code="restore_failed")


DOORBELL = b"\0sandboxd-agent-doorbell"  # agent/park.py
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def park_network(net, init: int) -> None:
    """Before the dump: the host end down (the outside's packets wait and are sent again), connections to the
    outside closed (their peers could not be reached from the restored sandbox anyway), and the sandbox end
    moved into a namespace of its own that keeps it and its address (and so the host end) until the restore."""
    nsenter = ["nsenter", "-t", str(init), "-n"]
    subprocess.run(["ip", "link", "set", net.veth, "down"], check=True, capture_output=True)
    subprocess.run([*nsenter, "ss", "-K", "-t", "state", "connected", "not", "dst", "127.0.0.0/8", "and", "not",
                    "dst", "[::1]"], capture_output=True)
    subprocess.run(["ip", "netns", "add", net.netns], capture_output=True)
    subprocess.run([*nsenter, "ip", "link", "set", "eth0", "netns", net.netns], check=True, capture_output=True)


def unpark_network(net, pid: int) -> bool:
    """Put the parked sandbox end back into the sandbox whose init is pid; False when there is none (after a
    host reboot: the caller makes a new one)."""
    if not (Path("/run/netns") / net.netns).exists() or not network.link_exists(net.veth):
        subprocess.run(["ip", "netns", "del", net.netns], capture_output=True)
        return False
    subprocess.run(["ip", "-n", net.netns, "link", "set", "eth0", "netns", str(pid)], check=True, capture_output=True)
    subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-b", "-"], check=True, capture_output=True, input=(
        f"addr add {net.sandbox_ip}/30 dev eth0\nlink set eth0 up\nroute add default via {net.host_ip}\n").encode())
    subprocess.run(["ip", "link", "set", net.veth, "up"], check=True, capture_output=True)
    subprocess.run(["ip", "netns", "del", net.netns], capture_output=True)
    return True


def compress(images: Path) -> None:
    """The memory pages with zstd -1 (an idle agent's 10.7 MiB become ~2.6 MiB); nothing when zstd is missing."""
    pages = [str(p) for p in images.glob("pages-*.img")]
    if pages and shutil.which("zstd"):
        subprocess.run(["zstd", "-1", "-q", "--rm", "-T2", *pages], check=True, capture_output=True)


def decompress(images: Path) -> None:
    packed = [str(p) for p in images.glob("pages-*.img.zst")]
    if packed:
        subprocess.run(["zstd", "-d", "-q", "--rm", "-f", *packed], check=True, capture_output=True)


# A sandbox has no CAP_NET_ADMIN: its network namespace can hold no iptables rules, so CRIU saves none
# (CR_IPTABLES replaces iptables-save; criuprep.drop_netns_config removes the empty images, so the restore
# runs no iptables-restore either).
CRIU_ENV = {"CR_IPTABLES": "true"}


def criu_run(argv: list[str], log_path: Path, pass_fds: tuple[int, ...] = (), timeout: float = 300.0,
             env: dict[str, str] | None = None) -> None:
    r = subprocess.run(argv, capture_output=True, pass_fds=pass_fds, timeout=timeout,
                       env={**os.environ, **CRIU_ENV, **(env or {})})
    if r.returncode != 0:
        tail = ""
        try:
            lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if "Error" in ln or "err" in ln.lower()]
            tail = "\n".join(lines[-8:])
        except OSError:
            pass
        verb = next((a for a in argv if a in ("dump", "restore")), "criu")
        raise RuntimeFailure(f"criu {verb} failed ({r.returncode}): {tail or r.stderr.decode(errors='replace')[-800:]}",
                             code="checkpoint_failed" if verb == "dump" else "restore_failed")

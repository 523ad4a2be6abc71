"""What a sandbox reads as its machine: /proc/meminfo, cpuinfo, stat, uptime, diskstats, swaps and the online
CPU list from lxcfs.

Without it a sandbox's /proc shows the host's RAM, every host CPU and the host's uptime: `free`, `nproc`,
psutil, the JVM and Node size themselves by the host and plan for memory they will never get. lxcfs is a
FUSE file system on the host (Debian's `lxcfs`, as LXC and Incus use it) that answers each read with the
values of the reader's own cgroups: MemTotal is the sandbox's memory limit; with --enable-cfs (how the host
set-up starts it) cpuinfo, stat and /sys/devices/system/cpu/online count the CPUs of its quota, which is what
os.cpu_count() and sysconf(_SC_NPROCESSORS_ONLN) read.
Each file is bound over its /proc path in the sandbox's config (runtime/oci/config.py); in the sandbox's
mountinfo the bind names only the path inside lxcfs (/proc/meminfo), no host path.

The backend's host set-up starts lxcfs when it is installed and not yet mounted at `lxcfs_dir`
(SANDBOXD_LXCFS_DIR, default /var/lib/lxcfs; empty turns this off), in a session of its own so that it
outlives `sandboxd serve`: a bind made from a lxcfs that later dies reads ENOTCONN until the sandbox ends, so
lxcfs must outlive the sandboxes (a systemd host runs it as Debian's lxcfs.service). Before each create the
binds are checked with one stat through FUSE (~20 us); if lxcfs is gone, new sandboxes get the host's
files and a warning is logged, rather than failing to start.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger("sandboxd.runtime")

FILES = ("proc/meminfo", "proc/cpuinfo", "proc/stat", "proc/uptime", "proc/diskstats", "proc/swaps",
         "sys/devices/system/cpu/online")
START_TIMEOUT = 5.0
LOG = Path("/run/sandboxd/lxcfs.log")
_warned: set[str] = set()
_active: Path | None = None  # where this process's sandboxes take the files from (set by ensure)


def mounted(directory: Path) -> bool:
    """True when a lxcfs FUSE file system is mounted exactly at directory."""
    want = str(directory)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and fields[4] == want and right.startswith("fuse.lxcfs "):
                    return True
    except OSError:
        pass
    return False


def ensure(directory: Path | None) -> str | None:
    """Start lxcfs at directory unless it is mounted there already; returns a note when sandboxes will see
    the host's /proc files instead."""
    global _active
    _active = None
    if directory is None:
        return None
    if mounted(directory):
        _active = directory
        return None
    binary = shutil.which("lxcfs")
    if binary is None:
        return "lxcfs is not installed (scripts/install.sh installs it): sandboxes see the host's memory and CPUs in /proc"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this host: lxcfs cannot run, sandboxes see the host's memory and CPUs in /proc"
    directory.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    # lxcfs daemonises once its file system is mounted; its own session keeps it alive after serve exits.
    with open(LOG, "ab") as out:
        proc = subprocess.Popen([binary, "--enable-cfs", "--pidfile", str(LOG.with_suffix(".pid")), str(directory)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if mounted(directory):
            _active = directory
            return None
        if proc.poll() not in (None, 0):
            return f"lxcfs did not start (exit {proc.returncode}, see {LOG}): sandboxes see the host's memory and CPUs in /proc"
        time.sleep(0.05)
    return "lxcfs did not mount in time: sandboxes see the host's memory and CPUs in /proc"


def binds() -> list[tuple[Path, str]]:
    """(host file, sandbox path) pairs to bind for a new sandbox; none when lxcfs is off or not answering."""
    directory = _active
    if directory is None:
        return []
    try:
        os.stat(directory / FILES[0])
    except OSError as exc:
        key = f"{directory}:{exc.errno}"
        if key not in _warned:
            _warned.add(key)
            log.warning("lxcfs at %s does not answer (%s): new sandboxes see the host's /proc files", directory,
                        exc.strerror)
        return []
    return [(directory / name, "/" + name) for name in FILES]

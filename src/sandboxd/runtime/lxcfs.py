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

The backend's host set-up starts lxcfs when it is installed and not yet answering at `lxcfs_dir`
(SANDBOXD_LXCFS_DIR, default /var/lib/lxcfs; empty turns this off), in a session of its own so that it
outlives `sandboxd serve`: a bind made from a lxcfs that later dies reads ENOTCONN until the sandbox ends, so
lxcfs must outlive the sandboxes (a systemd host runs it as Debian's lxcfs.service). A mount left behind by a
lxcfs that died (a reboot of the service, a killed session) answers ENOTCONN; it is detached and lxcfs is
started again, at set-up and, in the background, when a create finds it gone.

Each create takes the binds from `binds()`, which checks lxcfs with one stat through FUSE (~20 us) at most
once a second, in a worker thread with a timeout: a hung FUSE server must not stall the event loop. If lxcfs
does not answer, new sandboxes get the host's files and a warning is logged, rather than failing to start.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("sandboxd.runtime")

FILES = ("proc/meminfo", "proc/cpuinfo", "proc/stat", "proc/uptime", "proc/diskstats", "proc/swaps",
         "sys/devices/system/cpu/online")
START_TIMEOUT = 5.0
CHECK_EVERY = 1.0  # seconds between checks that lxcfs answers
PROBE_TIMEOUT = 1.0
REVIVE_EVERY = 30.0  # seconds between attempts to start a lxcfs that is gone
LOG = Path("/run/sandboxd/lxcfs.log")
_warned: set[Path] = set()
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


def pidfile(directory: Path) -> Path:
    """One pid file per mount point: lxcfs locks its pid file, so two instances may not share one."""
    return LOG.parent / f"lxcfs-{hashlib.sha256(str(directory).encode()).hexdigest()[:12]}.pid"


def answers(directory: Path) -> bool:
    try:
        os.stat(directory / FILES[0])
        return True
    except OSError:
        return False


def ensure(directory: Path | None) -> str | None:
    """Start lxcfs at directory unless it answers there already; returns a note when sandboxes will see
    the host's /proc files instead."""
    global _active
    _active = None
    if directory is None:
        return None
    if mounted(directory):
        if answers(directory):
            _active = directory
            _health.up()
            return None
        # Left by a lxcfs that is gone: detach it (sandboxes holding binds from it keep their dead view).
        subprocess.run(["umount", "-l", str(directory)], stdin=subprocess.DEVNULL, capture_output=True)
    binary = shutil.which("lxcfs")
    if binary is None:
        return "lxcfs is not installed (scripts/install.sh installs it): sandboxes see the host's memory and CPUs in /proc"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this host: lxcfs cannot run, sandboxes see the host's memory and CPUs in /proc"
    # From here on lxcfs can run: binds() keeps checking it, and starts it again while it is gone.
    _active = directory
    _health.checked_at = _health.revived_at = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    LOG.parent.mkdir(parents=True, exist_ok=True)
    # lxcfs daemonises once its file system is mounted; its own session keeps it alive after serve exits.
    with open(LOG, "ab") as out:
        proc = subprocess.Popen([binary, "--enable-cfs", "--pidfile", str(pidfile(directory)), str(directory)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if mounted(directory) and answers(directory):
            _health.up()
            return None
        if proc.poll() not in (None, 0):
            return f"lxcfs did not start (exit {proc.returncode}, see {LOG}): sandboxes see the host's memory and CPUs in /proc"
        time.sleep(0.05)
    return "lxcfs did not mount in time: sandboxes see the host's memory and CPUs in /proc"


class _Health:
    """The last answer of lxcfs, so that a create pays for at most one check a second, and at most one check
    and one restart are under way at a time."""

    def __init__(self) -> None:
        self.checked_at = -CHECK_EVERY
        self.ok = False
        self.probe: asyncio.Future[bool] | None = None
        self.revived_at = -REVIVE_EVERY
        self.reviving = False

    def up(self) -> None:
        self.ok, self.checked_at = True, time.monotonic()


_health = _Health()


async def binds() -> list[tuple[Path, str]]:
    """(host file, sandbox path) pairs to bind for a new sandbox; none when lxcfs is off or not answering."""
    directory = _active
    if directory is None:
        return []
    h = _health
    if time.monotonic() - h.checked_at >= CHECK_EVERY:
        if h.probe is None or h.probe.done():
            # A stat that hangs (a wedged FUSE server) holds one worker thread, never the loop or a second thread.
            h.probe = asyncio.ensure_future(asyncio.to_thread(answers, directory))
            try:
                h.ok = await asyncio.wait_for(asyncio.shield(h.probe), PROBE_TIMEOUT)
            except asyncio.TimeoutError:
                h.ok = False
        else:
            h.ok = False  # the last check has not come back
        h.checked_at = time.monotonic()
        if not h.ok:
            _gone(directory)
    if not h.ok:
        return []
    return [(directory / name, "/" + name) for name in FILES]


def _gone(directory: Path) -> None:
    h = _health
    if directory not in _warned:
        _warned.add(directory)
        log.warning("lxcfs at %s does not answer: new sandboxes see the host's /proc files until it is back",
                    directory)
    if h.reviving or time.monotonic() - h.revived_at < REVIVE_EVERY:
        return
    h.reviving, h.revived_at = True, time.monotonic()

    def revive() -> None:
        try:
            note = ensure(directory)
            if note:
                log.warning("lxcfs: %s", note)
            else:
                _warned.discard(directory)
                log.info("lxcfs at %s answers again", directory)
        finally:
            h.reviving = False

    threading.Thread(target=revive, name="lxcfs-revive", daemon=True).start()

"""What every CRIU restore would otherwise redo on this host, kept ready (docs/snapshots.md "Restore time").

Measured on the 2-core test host (kernel 6.18, cgroup v1 with a v2 `unified` hierarchy), for an idle sandbox
whose restore took ~190 ms inside `criu restore`:
- kernel feature probe (kerndat), ~35 ms: CRIU caches it in /run/criu.kdat, but only writes that file where
  /run is a tmpfs (it must not outlive a boot). `kdat()` has criu write it in a private tmpfs and copies it
  to where criu reads it, stamped with the boot id: a file of an earlier boot is made again.
- cgroup yard, ~22 ms: CRIU mounts every cgroup hierarchy in a scratch directory for each restore, and a
  cgroup2 mount alone costs ~21 ms. `cgroup_yard()` keeps one yard per boot under /run/sandboxd, each
  hierarchy bound from the host's mount, named as CRIU names them (`--cgroup-yard`).
- network tools, ~20 ms: CRIU restores a network namespace's addresses, routes, rules and firewall by running
  `ip` and `iptables-restore` (and probing which iptables the host has) — eight processes. A sandbox cannot
  change any of those (it has no CAP_NET_ADMIN), so its images of them hold only what the kernel makes by
  itself when the loopback comes up; `drop_netns_config()` removes them after a dump, and `tools_path()` is a
  PATH for the restore with only the tools it still needs (tar and gzip for tmpfs contents), so the probes
  fail at once instead of running the host's iptables.
- masked directories, ~18 ms: crun masks each (/proc/acpi, /sys/firmware, /sys/kernel, /sys/dev/block) with an
  empty tmpfs, whose contents CRIU saves and restores with tar and gzip, ~4.5 ms each. They are dumped as
  external mounts instead and restored as binds of one empty read-only tmpfs of the host (`masked_dir()`).
- cgroup moves: with cgroup2's favordynmods (runtime/hostsetup.py) a move does not wait for an RCU grace
  period; without it the first move of a restore does, ~15-20 ms, twice per restore.
Together with staging only the directories a sandbox's root cannot reach (one bind for its /etc files, none for
devices and lxcfs files; checkpoint.reachable), an idle restore went from ~190 to ~85 ms in `criu restore`.
"""
from __future__ import annotations

import base64
import ctypes
import fcntl
import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

from sandboxd.runtime import mountinfo

log = logging.getLogger("sandboxd.runtime")

RUN = Path("/run/sandboxd")
NETNS_CONFIG_IMAGES = ("ifaddr-", "route-", "route6-", "rule-", "iptables-", "ip6tables-", "nftables-")
RESTORE_TOOLS = ("tar", "gzip", "sh", "ip")
MS_BIND, MS_RDONLY = 4096, 1
_libc = ctypes.CDLL(None, use_errno=True)


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


_kdat_failed: set[str] = set()  # (boot id, criu) for which making the cache failed: not tried on every run


def kdat(argv: tuple[str, ...]) -> bool:
    """Make criu's kerndat cache for this boot if it is missing; True when it is there."""
    stamp = RUN / "criu.kdat.json"
    want = {"boot_id": boot_id(), "criu": list(argv)}
    try:
        had = json.loads(stamp.read_text())
        if had.get("want") == want and Path(had["path"]).is_file():
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    key = json.dumps(want)
    if key in _kdat_failed:
        return False
    if not _make_kdat(argv, stamp, want):
        _kdat_failed.add(key)
        return False
    return True


def _make_kdat(argv: tuple[str, ...], stamp: Path, want: dict) -> bool:
    # A private mount namespace with /run a fresh tmpfs: criu saves the file there, and it is read out before
    # the namespace goes. Its path (/run/criu.kdat as built) is found, not assumed.
    script = ('mount -t tmpfs sandboxd-kdat /run && "$@" check >/dev/null 2>&1; '
              'f=$(find /run -name criu.kdat | head -n 1); [ -n "$f" ] && echo "$f" && base64 -w0 "$f"')
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv],
                           capture_output=True, text=True, timeout=60)
        path_s, data = r.stdout.split("\n", 1)
        path, raw = Path(path_s.strip()), base64.b64decode(data.strip())
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        log.info("criu's kernel feature cache could not be made (%s): every criu run probes the kernel", exc)
        return False
    if not raw or not path.is_relative_to("/run"):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_bytes(raw)
    tmp.chmod(0o600)
    os.replace(tmp, path)
    RUN.mkdir(mode=0o711, parents=True, exist_ok=True)
    stamp_tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.{threading.get_ident()}")
    stamp_tmp.write_text(json.dumps({"want": want, "path": str(path)}))
    os.replace(stamp_tmp, stamp)
    return True


def _hierarchies() -> dict[str, str] | None:
    """CRIU's yard name of each cgroup hierarchy this process is in -> the host's mount of its root; None when a
    hierarchy has no mount of its root here (CRIU then makes its own yard)."""
    mounts = [(m.fstype, m.point, set(m.super_options)) for m in mountinfo.read()  # of roots only
              if m.fstype in ("cgroup", "cgroup2") and m.root == "/"]
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, ctrls, _ = line.split(":", 2)
        names = ctrls.split(",") if ctrls else []
        if not names:
            found = next((p for t, p, _ in mounts if t == "cgroup2"), None)
            name = "unified"
        else:
            found = next((p for t, p, opts in mounts if t == "cgroup" and set(names) <= opts), None)
            name = ",".join(n.removeprefix("name=") for n in names)
        if found is None:
            return None
        out[name] = found
    return out


def cgroup_yard() -> Path | None:
    """A directory with every cgroup hierarchy mounted under CRIU's name for it, for `--cgroup-yard`; None when
    it cannot be made (CRIU then mounts its own, as it does without the option)."""
    yard = RUN / "cgyard"
    try:
        wanted = _hierarchies()
        if wanted is None:
            return None
        RUN.mkdir(mode=0o711, parents=True, exist_ok=True)
        yard.mkdir(mode=0o700, exist_ok=True)
        dev = yard.stat().st_dev
        if all((yard / n).is_dir() and (yard / n).stat().st_dev != dev for n in wanted):
            return yard
        with open(RUN / "cgyard.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for name, source in wanted.items():
                d = yard / name
                d.mkdir(mode=0o700, exist_ok=True)
                if d.stat().st_dev == dev:  # an empty directory of an earlier boot, or new
                    if _libc.mount(os.fsencode(source), os.fsencode(str(d)), None, MS_BIND, None) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, f"bind {source}: {os.strerror(err)}")
        return yard
    except OSError as exc:
        log.info("no cgroup yard for criu (%s): each restore mounts its own", exc)
        return None


def masked_dir() -> Path:
    """An empty read-only tmpfs: what a restored sandbox's masked directories are bound from."""
    d = RUN / "masked"
    RUN.mkdir(mode=0o711, parents=True, exist_ok=True)
    d.mkdir(mode=0o555, exist_ok=True)
    if d.stat().st_dev == RUN.stat().st_dev:
        with open(RUN / "masked.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if d.stat().st_dev == RUN.stat().st_dev:
                # Only ro, as crun's masks are: CRIU remounts the bind with the dumped flags, and a flag this
                # mount had that they lack is locked in the sandbox's user namespace (EPERM). Empty and with
                # no room for a file, it needs no other.
                if _libc.mount(b"sandboxd-masked", os.fsencode(str(d)), b"tmpfs", MS_RDONLY,
                               b"size=4k,nr_inodes=1,mode=0555") != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"tmpfs at {d}: {os.strerror(err)}")
    return d


def drop_netns_config(images: Path) -> None:
    """Remove the images of a sandbox's network addresses, routes, rules and firewall (see the module doc)."""
    for f in images.iterdir():
        if f.name.startswith(NETNS_CONFIG_IMAGES) and f.suffix == ".img":
            f.unlink()


def tools_path() -> str:
    """A PATH with links to only the tools a restore of a sandbox runs."""
    d = RUN / "criu-tools"
    want = {t: shutil.which(t) for t in RESTORE_TOOLS}
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    for tool, found in want.items():
        link = d / tool
        if found and (not link.is_symlink() or os.readlink(link) != found):
            tmp = d / f".{tool}.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(found)
            os.replace(tmp, link)
    return str(d)

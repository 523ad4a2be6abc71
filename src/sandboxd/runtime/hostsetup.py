"""prepare_host(settings): make this host ready for real sandboxes. Idempotent, cheap the second time.

- cgroups: detect v1 / v2 / hybrid. crun 1.8 refuses the hybrid layout (v1 controllers plus a cgroup2
  mount holding hugetlb: "cgroups in hybrid mode not supported"); mounting hugetlb as a v1 hierarchy
  fixes that. If the mount is impossible, fall back to runc and log why.
- cgroup2's favordynmods (SANDBOXD_CGROUP_FAVORDYNMODS): a process moved between cgroups (crun at every
  create, CRIU twice per restore) otherwise waits for an RCU grace period, ~15-20 ms on the test host.
- ip_forward on (sandboxes with internet access are routed through the host), the nft guard table with
  the operator's egress floor (the CIDRs SANDBOXD_EGRESS_ALLOW_CIDRS opens; runtime/network.py).
- our directories; the runtime's state root on tmpfs.
- lxcfs, which serves each sandbox its own /proc/meminfo, cpuinfo, stat... (runtime/lxcfs.py).
- this process becomes a child subreaper: detached sandbox inits are re-parented to it (not to host
  PID 1, which in a container may never reap them) and the backend reaps them when they end.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sandboxd.errors import RuntimeFailure
from sandboxd.runtime import cgroups, lxcfs, mountinfo, network

log = logging.getLogger("sandboxd.runtime")
PR_SET_CHILD_SUBREAPER = 36
_done: dict[str, "HostInfo"] = {}


@dataclass
class HostInfo:
    backend: str  # the backend to use (may differ from the one asked for: runc fallback)
    layout: str
    notes: list[str] = field(default_factory=list)


def set_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def fix_hybrid_cgroups(root: Path = cgroups.ROOT) -> list[str]:
    """Mount every controller the cgroup2 mount holds as its own v1 hierarchy; returns what it mounted."""
    mounted = []
    for ctrl in cgroups.v2_unbound_controllers(root):
        target = root / ctrl
        target.mkdir(exist_ok=True)
        proc = subprocess.run(["mount", "-t", "cgroup", "-o", ctrl, "cgroup", str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeFailure(f"cannot mount the {ctrl} cgroup v1 hierarchy: {proc.stderr.strip()}")
        mounted.append(ctrl)
    return mounted


def favor_dynmods() -> str | None:
    """Remount the cgroup2 hierarchy with favordynmods (kernel >= 6.0); what was done, or why not, or None."""
    for m in mountinfo.read():
        if m.fstype == "cgroup2":
            if "favordynmods" in m.super_options:
                return None
            point = m.point
            r = subprocess.run(["mount", "-o", "remount,favordynmods", point], capture_output=True, text=True)
            if r.returncode != 0:
                return f"cgroup2 at {point} keeps no favordynmods ({r.stderr.strip()}): cgroup moves wait for RCU"
            return f"cgroup2 at {point} remounted with favordynmods"
    return None


def _write(path: str, value: str) -> None:
    try:
        if Path(path).read_text().strip() != value:
            Path(path).write_text(value)
    except OSError as exc:
        raise RuntimeFailure(f"cannot set {path}: {exc}") from exc


def prepare_host(settings, *, backend: str | None = None, force: bool = False) -> HostInfo:
    want = (backend or settings.backend or "crun").lower()
    key = f"{want}:{settings.data_dir}"
    if key in _done and not force:
        return _done[key]
    if want not in ("crun", "runc"):
        info = HostInfo(backend=want, layout="n/a")
        _done[key] = info
        return info
    if os.geteuid() != 0:
        raise RuntimeFailure(f"the {want} backend needs root")
    backend = want
    notes: list[str] = []
    if shutil.which(backend) is None:
        other = "runc" if backend == "crun" else "crun"
        if shutil.which(other) is None:
            raise RuntimeFailure("neither crun nor runc is installed (scripts/install.sh installs them)")
        notes.append(f"{backend} is not installed; using {other}")
        backend = other
    layout = cgroups.detect()
    if layout is cgroups.Layout.HYBRID and backend == "crun":
        try:
            mounted = fix_hybrid_cgroups()
            notes.append(f"hybrid cgroups: mounted {', '.join(mounted)} as v1 hierarchies for crun")
            layout = cgroups.detect()
        except RuntimeFailure as exc:
            notes.append(f"crun cannot run on this hybrid cgroup layout ({exc.message}); falling back to runc")
            backend = "runc"
    for d in (Path(settings.data_dir), Path(settings.sandboxes_dir), Path("/run/sandboxd")):
        d.mkdir(parents=True, exist_ok=True)
    for d in (Path(settings.data_dir), Path(settings.sandboxes_dir)):
        # A sandbox's root user (the first uid of its own range on the host) must be able to traverse to its rootfs.
        mode = d.stat().st_mode & 0o7777
        if mode & 0o011 != 0o011:
            os.chmod(d, mode | 0o011)
    if getattr(settings, "cgroup_favordynmods", True) and (note := favor_dynmods()):
        log.info("host setup: %s", note)
    _write("/proc/sys/net/ipv4/ip_forward", "1")
    network.ensure_table(network.parse_cidrs(settings.egress_allow_cidrs))
    note = lxcfs.ensure(settings.lxcfs_dir)
    if note:
        notes.append(note)
    if not set_subreaper():
        notes.append("could not become a child subreaper; host PID 1 will reap sandbox inits")
    for n in notes:
        log.warning("host setup: %s", n)
    info = HostInfo(backend=backend, layout=layout.value, notes=notes)
    _done[key] = info
    return info

"""cgroups: which layout this host has (v1, v2, or v1 with a cgroup2 mount holding some controllers),
and reading a sandbox's counters.

The OCI runtime creates and limits the cgroup from config.json; we only read it back. A sandbox's cgroup
is `/sandboxd/<id>` in every hierarchy (v1: under each controller's mount; v2: under the unified root).
"""
from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "sandboxd"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer", "devices", "cpuset", "blkio", "hugetlb",
                  "net_cls", "net_prio", "perf_event", "rdma", "misc", "systemd")


class Layout(str, enum.Enum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"  # v1 controllers plus a cgroup2 mount that holds controllers (crun 1.8 refuses it)


def _fstype(path: Path) -> str | None:
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if parts[1] == str(path):
                    return parts[2]
    except OSError:
        pass
    return None


def detect(root: Path = ROOT) -> Layout:
    if (root / "cgroup.controllers").exists():
        return Layout.V2
    unified = root / "unified" / "cgroup.controllers"
    try:
        held = unified.read_text().split()
    except OSError:
        held = []
    # A v2 controller still unbound in v1 is what crun's hybrid check trips on.
    if any(c for c in held if not (root / c).is_dir() or _fstype(root / c) != "cgroup"):
        return Layout.HYBRID
    return Layout.V1


def v2_unbound_controllers(root: Path = ROOT) -> list[str]:
    """Controllers the hybrid cgroup2 mount holds that have no v1 mount yet."""
    try:
        held = (root / "unified" / "cgroup.controllers").read_text().split()
    except OSError:
        return []
    return [c for c in held if _fstype(root / c) != "cgroup"]


def cgroups_path(sandbox_id: str) -> str:
    return f"/{PARENT}/{sandbox_id}"


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text()
    except OSError:
        return default


def _int(path: Path, default: int = 0) -> int:
    text = _read(path).strip()
    if not text or text == "max":
        return default
    try:
        return int(text)
    except ValueError:
        return default


def _kv(path: Path) -> dict[str, int]:
    out = {}
    for line in _read(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True)
class CgroupCounters:
    cpu_usage_ns: int
    cpu_quota_cores: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_cache_bytes: int
    pids: int
    oom_kills: int


class SandboxCgroup:
    """One sandbox's cgroup(s), wherever this host's layout puts them."""

    def __init__(self, sandbox_id: str, layout: Layout | None = None, root: Path = ROOT):
        self.layout = layout or detect(root)
        self.root = root
        self.rel = cgroups_path(sandbox_id).lstrip("/")

    def dir(self, controller: str) -> Path:
        if self.layout is Layout.V2:
            return self.root / self.rel
        return self.root / controller / self.rel

    def dirs(self) -> list[Path]:
        if self.layout is Layout.V2:
            return [self.root / self.rel]
        return [self.root / c / self.rel for c in V1_CONTROLLERS if (self.root / c).is_dir()]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    def pids(self) -> list[int]:
        text = _read(self.dir("pids") / "cgroup.procs")
        return [int(p) for p in text.split() if p.isdigit()]

    def counters(self) -> CgroupCounters:
        if self.layout is Layout.V2:
            d = self.dir("")
            cpu = _kv(d / "cpu.stat")
            quota, _, period = _read(d / "cpu.max", "max 100000").partition(" ")
            mem = _kv(d / "memory.stat")
            current = _int(d / "memory.current")
            return CgroupCounters(
                cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
                cpu_quota_cores=0.0 if quota == "max" else int(quota) / int(period or 100000),
                memory_used_bytes=max(current - mem.get("inactive_file", 0), 0),
                memory_limit_bytes=_int(d / "memory.max"),
                memory_cache_bytes=mem.get("file", 0),
                pids=_int(d / "pids.current"),
                oom_kills=_kv(d / "memory.events").get("oom_kill", 0),
            )
        quota_us = _int(self.dir("cpu") / "cpu.cfs_quota_us", -1)
        period_us = _int(self.dir("cpu") / "cpu.cfs_period_us", 100000) or 100000
        mem = _kv(self.dir("memory") / "memory.stat")
        usage = _int(self.dir("memory") / "memory.usage_in_bytes")
        return CgroupCounters(
            cpu_usage_ns=_int(self.dir("cpuacct") / "cpuacct.usage"),
            cpu_quota_cores=0.0 if quota_us < 0 else quota_us / period_us,
            memory_used_bytes=max(usage - mem.get("total_inactive_file", 0), 0),
            memory_limit_bytes=_int(self.dir("memory") / "memory.limit_in_bytes"),
            memory_cache_bytes=mem.get("total_cache", 0),
            pids=_int(self.dir("pids") / "pids.current"),
            oom_kills=_kv(self.dir("memory") / "memory.oom_control").get("oom_kill", 0),
        )

    def frozen(self) -> bool:
        if self.layout is Layout.V2:
            return _read(self.dir("") / "cgroup.freeze").strip() == "1"
        return _read(self.dir("freezer") / "freezer.state").strip() == "FROZEN"

    def set_frozen(self, frozen: bool) -> bool:
        """Pause/resume straight through the freezer file: it is all `crun pause|resume` does, and the runtime
        binary's start-up (crun re-copies itself on every call) costs ~7 ms of the ~7.5. False when the cgroup
        is gone or already in that state (the caller then asks the runtime)."""
        v2 = self.layout is Layout.V2
        path = self.dir("") / "cgroup.freeze" if v2 else self.dir("freezer") / "freezer.state"
        if not path.exists() or self.frozen() == frozen:
            return False
        try:
            path.write_text(("1" if frozen else "0") if v2 else ("FROZEN" if frozen else "THAWED"))
        except OSError:
            return False
        return True

    def thaw(self) -> None:
        try:
            if self.layout is Layout.V2:
                (self.dir("") / "cgroup.freeze").write_text("0")
            else:
                (self.dir("freezer") / "freezer.state").write_text("THAWED")
        except OSError:
            pass  # no such cgroup (any more)

    def remove(self) -> None:
        """rmdir what the runtime left behind (after a failed create); only empty cgroups can go."""
        for d in self.dirs():
            if d.is_dir():
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    _rmdir(sub)
                _rmdir(d)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        pass  # still has processes: the caller reports leftovers through exists()


__all__ = ["Layout", "detect", "v2_unbound_controllers", "cgroups_path", "SandboxCgroup", "CgroupCounters"]

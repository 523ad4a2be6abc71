"""Resource ceilings and host admission: what one sandbox may ask for, and whether the host has room for it.

Two checks, both raising domain errors (api/errors.py maps them):
- `check_maxima`: a template's or a request's vCPU, memory and disk against the operator's per-sandbox
  maxima (settings `max_sandbox_*`; 0 derives them from the host). Over a maximum is a 400 naming the field
  as the caller spelled it, the value asked for and the limit.
- `Admission.admit`: one more sandbox against the host. The memory limits of the sandboxes holding memory
  (creating, running, paused; warm-pool members too) may add up to `memory_overcommit` x the host's memory,
  and the disk sizes of every live sandbox to `disk_overcommit` x the data directory's filesystem: a
  sandbox's limits are ceilings, not reservations (one at rest uses ~15 MiB), so the ratios bound the worst
  case the operator accepts. Under that, the host must have `min_free_*` of memory and data-dir disk free
  right now. Otherwise a 503 with the reason and a Retry-After.

The caller sums the commitment from its records and calls `admit` with no await in between, so concurrent
creates in one event loop are counted one after the other.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from sandboxd.config import Settings
from sandboxd.errors import CapacityExceeded, Invalid

RETRY_AFTER_SECONDS = 10


class ResourceLimitExceeded(Invalid):
    code = "resource_limit_exceeded"


class HostFull(CapacityExceeded):
    code = "host_capacity_exceeded"


@dataclass(frozen=True)
class Maxima:
    vcpu: float
    memory_mb: int
    disk_mb: int


@dataclass(frozen=True)
class Commitment:
    memory_mb: int = 0  # memory limits of sandboxes that hold memory
    disk_mb: int = 0  # disk sizes of every live sandbox


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except OSError:
        return os.cpu_count() or 1


def meminfo_mb(field: str) -> int:
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1]) // 1024
    raise LookupError(f"{field} not in /proc/meminfo")


def _fs(path: Path) -> os.statvfs_result:
    path.mkdir(parents=True, exist_ok=True)
    return os.statvfs(path)


def fs_size_mb(path: Path) -> int:
    st = _fs(path)
    return st.f_blocks * st.f_frsize // (1024 * 1024)


def fs_free_mb(path: Path) -> int:
    st = _fs(path)
    return st.f_bavail * st.f_frsize // (1024 * 1024)


def sandbox_maxima(settings: Settings) -> Maxima:
    """The operator's per-sandbox maxima; each 0 is derived from the host: all its cores (at least 2, what the
    HopX builder asks by default), half its memory, a quarter of the data directory's filesystem."""
    return Maxima(
        vcpu=float(settings.max_sandbox_vcpu or max(host_cores(), 2)),
        memory_mb=settings.max_sandbox_memory_mb or meminfo_mb("MemTotal") // 2,
        disk_mb=settings.max_sandbox_disk_mb or fs_size_mb(settings.data_dir) // 4,
    )


def check_maxima(maxima: Maxima, *, vcpu: float, memory_mb: int, disk_mb: int, names: dict[str, str],
                 what: str = "a sandbox") -> None:
    """Raise ResourceLimitExceeded for the first of vcpu/memory/disk over its maximum. `names` spells each
    resource as the caller sent it ({"vcpu": "cpu", "memory": "memory", "disk": "diskGB"}); disk is
    reported in the unit of that field (GB when it ends in GB, else MB)."""
    if vcpu > maxima.vcpu:
        _over(names["vcpu"], vcpu, maxima.vcpu, "vCPU", what)
    if memory_mb > maxima.memory_mb:
        _over(names["memory"], memory_mb, maxima.memory_mb, "MB", what)
    if disk_mb > maxima.disk_mb:
        field = names["disk"]
        if field.endswith("GB"):
            _over(field, disk_mb // 1024, maxima.disk_mb // 1024, "GB", what)
        _over(field, disk_mb, maxima.disk_mb, "MB", what)


def _over(field: str, asked: float, limit: float, unit: str, what: str) -> NoReturn:
    asked, limit = _plain(asked), _plain(limit)
    raise ResourceLimitExceeded(
        f"{field}: {what} asks for {asked} {unit}; this server allows at most {limit} {unit} per sandbox",
        details={"field": field, "requested": asked, "limit": limit, "unit": unit},
    )


def _plain(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


class Admission:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = Path(settings.data_dir)
        self.memory_capacity_mb = int(meminfo_mb("MemTotal") * settings.memory_overcommit)
        self.disk_capacity_mb = int(fs_size_mb(self.data_dir) * settings.disk_overcommit)
        total = meminfo_mb("MemTotal")
        self.min_free_memory_mb = settings.min_free_memory_mb or min(total // 20, 1024)
        self.min_free_disk_mb = settings.min_free_disk_mb or min(fs_size_mb(self.data_dir) // 20, 2048)

    def admit(self, committed: Commitment, *, memory_mb: int, disk_mb: int) -> None:
        """Raise HostFull unless the host has room for one more sandbox with these limits."""
        mem = committed.memory_mb + memory_mb
        if mem > self.memory_capacity_mb:
            self._full(f"the memory limits of this host's sandboxes would reach {mem} MB, over the "
                       f"{self.memory_capacity_mb} MB it admits", "memory", mem, self.memory_capacity_mb)
        disk = committed.disk_mb + disk_mb
        if disk > self.disk_capacity_mb:
            self._full(f"the disks of this host's sandboxes would reach {disk} MB, over the "
                       f"{self.disk_capacity_mb} MB it admits", "disk", disk, self.disk_capacity_mb)
        free = meminfo_mb("MemAvailable")
        if free < self.min_free_memory_mb:
            self._full(f"the host has {free} MB of memory available, under the {self.min_free_memory_mb} MB "
                       "it keeps free", "memory", free, self.min_free_memory_mb)
        free = fs_free_mb(self.data_dir)
        if free < self.min_free_disk_mb:
            self._full(f"the host has {free} MB of disk free for sandboxes, under the {self.min_free_disk_mb} MB "
                       "it keeps free", "disk", free, self.min_free_disk_mb)

    def room_for(self, committed: Commitment, *, memory_mb: int, disk_mb: int) -> bool:
        try:
            self.admit(committed, memory_mb=memory_mb, disk_mb=disk_mb)
        except HostFull:
            return False
        return True

    @staticmethod
    def _full(reason: str, resource: str, value: int, limit: int) -> NoReturn:
        raise HostFull(f"no room for another sandbox on this host: {reason}; retry later",
                       details={"resource": resource, "value_mb": value, "limit_mb": limit,
                                "retry_after_seconds": RETRY_AFTER_SECONDS})

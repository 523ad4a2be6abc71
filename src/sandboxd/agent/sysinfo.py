"""CPU, memory and disk of the sandbox as seen from inside it (its own cgroup and root filesystem),
and the process table from /proc. Handles cgroup v2 and v1 (these hosts run v1)."""
from __future__ import annotations

import os
import time

CG = "/sys/fs/cgroup"
_HZ = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_STATES = {"R": "running", "S": "sleeping", "D": "disk-sleep", "Z": "zombie", "T": "stopped", "t": "tracing-stop",
           "X": "dead", "I": "idle"}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _int(path: str) -> int | None:
    v = _read(path)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None  # "max"


_pids_base: str | None = None  # where the sandbox's pids files are, once found (v2 root or v1 pids/)


def pids_exhausted() -> bool:
    """Whether the sandbox's pids limit is reached: it then cannot start a command (fork fails with EAGAIN).
    Read from its cgroup on every health check, so two raw reads of a known place: looking in both places
    through text files took 14 % of the agent's CPU under a stream of health checks."""
    global _pids_base
    for base in (_pids_base,) if _pids_base else (CG, f"{CG}/pids"):
        current = _raw(f"{base}/pids.current")
        if current is None:
            continue
        _pids_base = base
        limit = _raw(f"{base}/pids.max") or b"max"
        return current.isdigit() and limit.isdigit() and int(current) >= int(limit)
    return False


def _raw(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 64).strip()
    except OSError:
        return None
    finally:
        os.close(fd)


def cpu_usage_ns() -> int | None:
    stat = _read(f"{CG}/cpu.stat")
    if stat and "usage_usec" in stat:
        for line in stat.splitlines():
            k, _, v = line.partition(" ")
            if k == "usage_usec":
                return int(v) * 1000
    for p in (f"{CG}/cpuacct/cpuacct.usage", f"{CG}/cpu,cpuacct/cpuacct.usage"):
        usage = _int(p)
        if usage is not None:
            return usage
    return None


def cpu_cores() -> float:
    n = os.cpu_count() or 1
    maxv = _read(f"{CG}/cpu.max")
    if maxv:
        quota, _, period = maxv.partition(" ")
        if quota != "max" and period:
            return min(n, int(quota) / int(period))
    for d in (f"{CG}/cpu", f"{CG}/cpu,cpuacct"):
        q, p = _int(f"{d}/cpu.cfs_quota_us"), _int(f"{d}/cpu.cfs_period_us")
        if q and p and q > 0:
            return min(n, q / p)
    return float(n)


def memory() -> dict:
    total = used = None
    cur = _int(f"{CG}/memory.current")
    if cur is not None:
        used, total = cur, _int(f"{CG}/memory.max")
        stat = _read(f"{CG}/memory.stat") or ""
        for line in stat.splitlines():
            if line.startswith("inactive_file "):
                used = max(0, used - int(line.split()[1]))
    else:
        cur = _int(f"{CG}/memory/memory.usage_in_bytes")
        if cur is not None:
            used, total = cur, _int(f"{CG}/memory/memory.limit_in_bytes")
            stat = _read(f"{CG}/memory/memory.stat") or ""
            for line in stat.splitlines():
                if line.startswith("total_inactive_file "):
                    used = max(0, used - int(line.split()[1]))
    mem_total = _meminfo_total()
    if total is None or total >= 1 << 60 or (mem_total and total > mem_total):
        total = mem_total  # unlimited cgroup: the machine's memory is the limit
    if used is None:
        info = _meminfo()
        used = info.get("MemTotal", 0) - info.get("MemAvailable", 0)
    total = total or 0
    return {"total": total, "used": used, "free": max(0, total - used),
            "usage_percent": round(100.0 * used / total, 2) if total else 0.0}


def _meminfo() -> dict[str, int]:
    out = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        k, _, v = line.partition(":")
        try:
            out[k] = int(v.split()[0]) * 1024
        except (ValueError, IndexError):
            pass
    return out


def _meminfo_total() -> int:
    return _meminfo().get("MemTotal", 0)


def disk(path: str = "/") -> dict:
    try:
        st = os.statvfs(path)
    except OSError:
        return {"total": 0, "used": 0, "free": 0, "usage_percent": 0.0}
    total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    used = total - st.f_bfree * st.f_frsize
    return {"total": total, "used": used, "free": free,
            "usage_percent": round(100.0 * used / total, 2) if total else 0.0}


class CpuSampler:
    """CPU % between two calls (the first call measures against agent start)."""

    def __init__(self) -> None:
        self.last = (time.monotonic(), cpu_usage_ns())

    def percent(self) -> float:
        now, usage = time.monotonic(), cpu_usage_ns()
        t0, u0 = self.last
        self.last = (now, usage)
        if usage is None or u0 is None or now <= t0:
            return 0.0
        return round(max(0.0, (usage - u0) / 1e9 / (now - t0) / cpu_cores() * 100.0), 2)


def system(sampler: CpuSampler, started: float, disk_path: str = "/") -> dict:
    return {"cpu": {"usage_percent": sampler.percent(), "cores": max(1, round(cpu_cores()))},
            "memory": memory(), "disk": disk(disk_path), "uptime": round(time.time() - started, 3)}


def list_processes() -> list[dict]:
    uptime = float((_read("/proc/uptime") or "0").split()[0])
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
        age = max(uptime - start / _HZ, 1e-3)
        rss = int(fields[21]) * _PAGE
        try:
            uid = os.stat(f"/proc/{name}").st_uid
        except OSError:
            uid = None
        out.append({"pid": int(name), "ppid": int(fields[1]), "name": comm, "status": _STATES.get(fields[0], fields[0]),
                    "cpu_percent": round((utime + stime) / _HZ / age * 100, 2), "memory_mb": round(rss / 2**20, 2),
                    "command": cmdline or f"[{comm}]", "uid": uid})
    return sorted(out, key=lambda p: p["pid"])

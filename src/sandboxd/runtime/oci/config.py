"""config.json for a sandbox: the hardened OCI runtime spec shared by crun and runc.

What makes it hardened (docs/threat-model.md, boundary 1): a user namespace (0 → the sandbox's own host uid range), its own
pid/ipc/uts/mount/cgroup/net namespaces, a minimal capability set, no_new_privs, masked /proc and /sys
paths, the seccomp profile with the namespace-blocking rule, cgroup limits, and tini as the reaping PID 1.
`crun spec`'s default has neither seccomp nor a user namespace and must never be used.

What a sandbox sees of its host: /proc/cmdline is masked; /sys/fs/cgroup (a tmpfs crun makes under cgroup
v1 with a cgroup namespace, rw whatever the mount's plain "ro") is read-only with every hierarchy under it
("rro": recursive, by mount_setattr); the root overlay, the /etc binds and the agent package (bound from
its copy, agentpkg.py) name no host path in mountinfo (rootfs.py); /proc/meminfo, cpuinfo, stat, uptime,
diskstats and swaps come from lxcfs (runtime/lxcfs.py): the sandbox's own memory limit and CPUs. Still
visible, knowingly: the host cgroup hierarchies' names and the kernel version.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sandboxd.runtime import agentrt, seccomp
from sandboxd.runtime.base import SandboxSpec
from sandboxd.runtime.cgroups import cgroups_path

AGENT_ARGV = ["/usr/bin/tini", "-g", "--", "/opt/sandboxd/venv/bin/python", "-I", "-m", "sandboxd.agent"]
AGENT_PKG_TARGET = "/opt/sandboxd/pkg/sandboxd"
SUDO_TARGET = "/usr/local/bin/sudo"  # ahead of an image's own /usr/bin/sudo, which no_new_privs disarms
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/proc/sysrq-trigger", "/proc/kallsyms",
    "/proc/kmsg", "/proc/config.gz", "/sys/firmware", "/sys/kernel", "/sys/devices/virtual/powercap",
    "/sys/fs/selinux", "/sys/dev/block",
    "/proc/cmdline",  # the host kernel's command line: boot options, sometimes secrets
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys"]


def _mount(dest: str, typ: str, source: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dest, "type": typ, "source": source, "options": options}


def process_env(cfg: dict[str, Any]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in cfg["process"]["env"])


def base_mounts() -> list[dict[str, Any]]:
    return [
        _mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        _mount("/dev/pts", "devpts", "devpts",
               ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        _mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=268435456"]),
        _mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", ["nosuid", "noexec", "nodev", "relatime", "ro", "rro"]),
    ]


def build(spec: SandboxSpec, *, uid_base: int, uid_count: int, sandbox_dir: Path, agent_pkg: Path,
          argv: list[str] | None = None, rootfs: Path | None = None, etc_dir: Path | None = None,
          runtime: str = "crun", proc_binds: list[tuple[Path, str]] | None = None,
          agent_rt: Path | None = None, agent_fd: str = "3") -> dict[str, Any]:
    """etc_dir holds hosts, hostname, resolv.conf and boot_id (default: the sandbox dir); proc_binds are the
    sandbox's own /proc files (runtime/lxcfs.py: binds()). On the sandbox's own disk
    (rootfs.py: raw/meta) the sandbox's mountinfo shows them as /meta/..., not as a host path. agent_rt: the
    host mount of the image's agent runtime (runtime/agentrt.py), bound read-only; the agent then starts on it.
    agent_fd: SANDBOXD_AGENT_FD, "3" (the socket is inherited) or "doorbell" (agent/park.py)."""
    etc_dir = etc_dir or sandbox_dir
    image = spec.image
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "TERM": "xterm", "LANG": "C.UTF-8"}
    env.update(image.env)
    env.update(spec.env)
    env["SANDBOXD_AGENT_FD"] = agent_fd
    # The template's WORKDIR and USER: the agent's defaults for commands, code, terminals and relative paths.
    env["SANDBOXD_AGENT_WORKSPACE"] = image.workdir
    env["SANDBOXD_AGENT_USER"] = image.user
    env["SANDBOXD_SANDBOX_ID"] = spec.id
    env["SANDBOXD_AGENT_INTERPRETER_PORT"] = "49999"  # E2B's code interpreter, inside the sandbox too
    env["SANDBOXD_AGENT_SUDO"] = "1"  # sudo through the agent (agent/sudo.py): no setuid under no_new_privs
    caps = list(seccomp.CAPABILITIES)
    res = spec.resources
    memory = res.memory_mb * 1024 * 1024
    mounts = base_mounts() + [
        _mount("/etc/hosts", "bind", str(etc_dir / "hosts"), ["rbind", "ro", "nosuid", "nodev"]),
        _mount("/etc/hostname", "bind", str(etc_dir / "hostname"), ["rbind", "ro", "nosuid", "nodev"]),
        _mount("/etc/resolv.conf", "bind", str(etc_dir / "resolv.conf"), ["rbind", "ro", "nosuid", "nodev"]),
        _mount(AGENT_PKG_TARGET, "bind", str(agent_pkg), ["rbind", "ro", "nosuid", "nodev"]),
        _mount(SUDO_TARGET, "bind", str(agent_pkg / "agent" / "sudo_cli.py"), ["bind", "ro", "nosuid", "nodev"]),
    ]
    if agent_rt is not None:
        mounts.append(_mount(agentrt.TARGET, "bind", str(agent_rt), ["rbind", "ro", "nosuid", "nodev"]))
    if runtime != "runc":  # runc refuses mounts inside /proc but for the few lxcfs serves
        mounts.append(_mount("/proc/sys/kernel/random/boot_id", "bind", str(etc_dir / "boot_id"),
                             ["bind", "ro", "nosuid", "nodev", "noexec"]))
    for host_path, target in proc_binds or ():  # read-only: lxcfs answers writes with EACCES anyway
        mounts.append(_mount(target, "bind", str(host_path), ["bind", "ro", "nosuid", "nodev", "noexec"]))
    for host_path, target in spec.binds:
        mounts.append(_mount(target, "bind", str(host_path), ["rbind", "ro", "nosuid", "nodev"]))
    # Volumes: their idmapped views under the sandbox dir (rootfs.py), the only read-write binds.
    for i, (_, target) in enumerate(spec.volumes):
        mounts.append(_mount(target, "bind", str(sandbox_dir / "volumes" / str(i)), ["rbind", "rw", "nosuid", "nodev"]))
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": argv or (agentrt.ARGV if agent_rt is not None else AGENT_ARGV),
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": True,
            # Under host memory pressure the kernel should pick sandbox processes before the platform.
            "oomScoreAdj": 500,
        },
        "root": {"path": str(rootfs or sandbox_dir / "rootfs"), "readonly": False},
        "hostname": spec.hostname or f"sandbox-{spec.id[:12]}",
        "mounts": mounts,
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": uid_base, "size": uid_count}],
            "gidMappings": [{"containerID": 0, "hostID": uid_base, "size": uid_count}],
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "cgroup", "user", "network")],
            "cgroupsPath": cgroups_path(spec.id),
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "cpu": {"quota": max(int(res.vcpu * CPU_PERIOD), 1000), "period": CPU_PERIOD,
                        **({"shares": res.cpu_shares} if res.cpu_shares else {})},
                # swap == limit: no swap, so the memory limit is a real limit and an OOM kill is visible.
                "memory": {"limit": memory, "swap": memory},
                "pids": {"limit": res.pids},
            },
            "maskedPaths": MASKED_PATHS,
            # runc ignores "rro" on the cgroup mount and leaves its tmpfs writable: remount it read-only
            # (crun must not get this: its bind of the path would make the hierarchies under it writable).
            "readonlyPaths": READONLY_PATHS + (["/sys/fs/cgroup"] if runtime == "runc" else []),
            "seccomp": seccomp.profile(),
        },
    }

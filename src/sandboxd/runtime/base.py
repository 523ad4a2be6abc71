"""The backend protocol: what the node runtime asks of an isolation technology.

Backends never see the database or HTTP. They receive a SandboxSpec, manage the sandbox on this
host, and report state. Unsupported operations raise sandboxd.errors.NotSupported, and a backend
declares what it can do as data in its Capabilities.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable


class RuntimeState(str, enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Resources:
    vcpu: float = 1.0
    memory_mb: int = 1024
    disk_mb: int = 2048
    pids: int = 1024
    # CPU weight relative to other sandboxes (cgroup v1 cpu.shares scale, 2..262144); None = the default
    # 1024. Warm-pool members start at the minimum so filling the pool never slows a user's sandbox.
    cpu_shares: int | None = None


# Beside each stored layer's rootfs, what made it (templates/store.py writes it). A layer of kind BUILTIN_LAYER was
# built by the platform itself from Debian packages: the only kind an agent zygote may run (runtime/oci/zygote.py).
LAYER_INFO = "layer.json"
BUILTIN_LAYER = "base"


@dataclass(frozen=True)
class ReadyCheck:
    """How to tell the template's start command is ready: one of port, file, process, command."""

    kind: str  # "port" | "file" | "process" | "command"
    value: str
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class TemplateImage:
    """A built template, ready to be the lower layer of a sandbox's overlay root."""

    name: str
    # Read-only layer directories, top-most first (overlayfs lowerdir order), already uid-shifted for the
    # user namespace. A built-in base is one layer; each build step of a derived template adds one.
    layers: tuple[Path, ...]
    content_hash: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/workspace"
    user: str = "root"
    start_cmd: str | None = None
    ready_check: ReadyCheck | None = None
    # The agent runtime layer (runtime/agentrt.py) the agent starts from, for an image that cannot run it on
    # its own interpreter; None: the image's /opt/sandboxd/venv (docs/templates.md, "OCI import").
    agent_runtime: Path | None = None


@dataclass(frozen=True)
class Tunnel:
    """A SOCKS5 proxy of the sandbox owner's that its TCP goes out through (E2B's `egressProxy`), after its rules."""

    host: str  # an IPv4 address or a host name (resolved when a connection is made)
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False  # TLS to the proxy, verified against ca_cert or the host's trust store
    server_name: str | None = None  # checked against the proxy's certificate instead of host
    ca_cert: str | None = None  # PEM; replaces the trust store


@dataclass(frozen=True)
class Egress:
    """A sandbox's own egress rules under the operator's floor (docs/network.md). `allow`/`deny`: IPv4 CIDRs;
    `allow_names`/`deny_names`: host names (`example.com`, `*.example.com`), admitted by the name a TCP
    connection carries (TLS SNI, HTTP Host) and only to an address the name has; `headers`: per host
    pattern, headers set on its plain-HTTP requests. With nothing denied everything the floor lets through
    goes out; an allow entry wins over a deny entry."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    allow_names: tuple[str, ...] = ()
    deny_names: tuple[str, ...] = ()
    headers: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    tunnel: Tunnel | None = None  # every TCP connection it lets out goes through this proxy

    @property
    def by_name(self) -> bool:
        """Whether enforcing it needs the egress proxy (names, header rules, a tunnel), not nft alone."""
        return bool(self.allow_names or self.deny_names or self.headers or self.tunnel)

    @classmethod
    def from_dict(cls, d: dict) -> "Egress":
        return cls(tuple(d.get("allow") or ()), tuple(d.get("deny") or ()), tuple(d.get("allow_names") or ()),
                   tuple(d.get("deny_names") or ()),
                   tuple((p, tuple((k, v) for k, v in hs)) for p, hs in d.get("headers") or ()),
                   Tunnel(**d["tunnel"]) if d.get("tunnel") else None)


@dataclass(frozen=True)
class DestinationUsage:
    """Traffic to one destination (a host name the egress proxy admitted, or an address) in the last hour."""

    destination: str
    connections: int = 0
    bytes_sent: int = 0
    bytes_received: int | None = None  # None: not counted (direct traffic is counted one way)
    denied: int = 0


@dataclass(frozen=True)
class Refusal:
    """One connection the egress proxy refused: when, to what, and why (rules.Verdict's reasons)."""

    time: float
    destination: str
    address: str
    port: int
    reason: str


@dataclass(frozen=True)
class EgressDenied:
    """What the sandbox's egress rules refused and let through: packets and bytes refused since it started,
    the addresses refused in the last hour (at most a few hundred), the connections the egress proxy
    refused by name (the latest few hundred), and traffic per destination."""

    packets: int = 0
    bytes: int = 0
    destinations: tuple[str, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    usage: tuple[DestinationUsage, ...] = ()


@dataclass(frozen=True)
class SandboxSpec:
    id: str
    image: TemplateImage
    resources: Resources = Resources()
    env: dict[str, str] = field(default_factory=dict)
    internet_access: bool = False
    hostname: str | None = None
    # Extra read-only bind mounts (host path, path in sandbox). Template builds use it to lend the host's CA
    # bundle to package managers for the build only, never baking it into an image.
    binds: tuple[tuple[Path, str], ...] = ()
    egress: Egress | None = None  # None: only the floor
    # Read-write volume mounts (host dir, path in sandbox; core/volumes.py). The host dir keeps the template
    # store's id convention; a backend with a user namespace shows it through the sandbox's own range.
    volumes: tuple[tuple[Path, str], ...] = ()


@dataclass
class RuntimeSandbox:
    id: str
    state: RuntimeState
    agent_socket: Path  # host-side unix socket; HTTP/1.1 to the in-sandbox agent
    pid: int | None = None  # host pid of the sandbox's init
    bundle: Path | None = None
    upper_dir: Path | None = None  # the overlay upper dir (the sandbox's own changes); template builds read it
    on_disk: bool = False  # paused on disk (checkpoint()), not frozen in RAM


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False


@dataclass(frozen=True)
class Stats:
    """Counters read from the sandbox's cgroup and filesystem."""

    cpu_usage_ns: int  # cumulative CPU time
    cpu_quota_cores: float
    memory_used_bytes: int
    memory_limit_bytes: int
    memory_cache_bytes: int = 0
    disk_used_bytes: int = 0
    disk_limit_bytes: int = 0
    pids: int = 0
    oom_kills: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0


@dataclass(frozen=True)
class Capabilities:
    name: str
    pause: bool = True
    stop_start: bool = True
    snapshot: bool = False
    network: bool = True
    disk_quota: bool = True
    user_namespace: bool = True
    isolation: str = "container"  # "container" | "process" (fake) | "gvisor"


@dataclass(frozen=True)
class Checkpoint:
    size_bytes: int
    seconds: float


@runtime_checkable
class Backend(Protocol):
    capabilities: Capabilities

    async def create(self, spec: SandboxSpec, *, memory: Path | None = None) -> RuntimeSandbox:
        """Make the sandbox (root, cgroups, namespaces, network) and start it; return when its agent answers /health.
        `memory`: images from fork_memory(): the sandbox takes over those processes instead of booting."""

    async def start(self, sandbox_id: str) -> RuntimeSandbox:
        """Boot a stopped sandbox again on the same files."""

    async def stop(self, sandbox_id: str) -> None:
        """End every process; keep the filesystem."""

    async def pause(self, sandbox_id: str) -> None:
        """Freeze every process in RAM (milliseconds; a warm pool's sandboxes wait so)."""

    async def resume(self, sandbox_id: str) -> float | None:
        """Run a paused sandbox again: thawed, or restored from disk (then the seconds the restore took)."""

    async def fork_memory(self, sandbox_id: str, files: Path, images: Path) -> None:
        """For a fork: copy the sandbox's changed files into `files` (as export_changes) and its processes and
        memory into `images`, both at one instant, while it runs on. NotSupported / RuntimeFailure as
        checkpoint(); the caller then forks the files only."""

    def memory_snapshots(self) -> bool:
        """Whether checkpoint() can work on this host (docs/snapshots.md)."""

    async def checkpoint(self, sandbox_id: str, *, compress: bool = False) -> Checkpoint:
        """Write a running or frozen sandbox's processes and memory to disk and end them: it is then paused on
        disk, holds no RAM, survives restarts, and resume() restores it. NotSupported without a usable CRIU;
        RuntimeFailure (the sandbox runs on as before) when this sandbox cannot be taken. `compress`: the
        memory pages compressed (a few times smaller on disk, some CPU more on both sides)."""

    async def destroy(self, sandbox_id: str, *, background: bool = False) -> None:
        """Release everything: processes, mounts, cgroups, netns, veth, nft rules, directories. Idempotent.
        background=True may return once no process of the sandbox can run any more and release the rest
        later (the backend's close() waits for that)."""

    async def exec(
        self,
        sandbox_id: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        user: str = "root",
        cwd: str | None = None,
        timeout: float | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult: ...

    async def stats(self, sandbox_id: str) -> Stats: ...

    async def state(self, sandbox_id: str) -> RuntimeState | None:
        """Current state, or None when the runtime does not know the sandbox."""

    async def export_changes(self, sandbox_id: str, dest: Path) -> None:
        """Copy what the sandbox changed on top of its image (whiteouts, owners and xattrs kept) into the
        existing directory dest, for a snapshot. The sandbox is frozen while it is copied and runs on after
        (a paused one stays paused). Conflict(sandbox_not_running) when it is stopped."""

    async def update(self, sandbox_id: str, spec: SandboxSpec) -> None:
        """Make a created sandbox serve spec from now on: its limits apply at once (no restart) and a later
        start boots with its env and limits. The sandbox keeps its id and hostname; the env of processes
        already running is the agent's to change (PUT /env)."""

    async def set_egress(self, sandbox_id: str, egress: Egress) -> None:
        """Replace the sandbox's egress rules: new connections meet them as soon as this returns (no restart),
        and a later start keeps them. NotSupported from a backend without `network`."""

    async def egress_denied(self, sandbox_id: str) -> EgressDenied:
        """What the sandbox's egress rules refused. NotSupported from a backend without `network`."""

    async def recover(self) -> list[RuntimeSandbox]:
        """After a restart: adopt running and paused sandboxes, clean up half-created ones."""

    async def close(self) -> None:
        """The control plane stops: finish background releases and drop what this process made for itself;
        sandboxes keep running."""

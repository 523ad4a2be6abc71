"""Typed settings for every sandboxd process, read from SANDBOXD_* variables and validated at start."""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def parse_cidrs(text: str) -> list[ipaddress.IPv4Network]:
    """The operator's comma-separated CIDRs, merged. ValueError (naming the entry) for anything that is not
    an IPv4 network with its host bits clear: sandboxes have no IPv6 egress to open."""
    nets = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            net = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise ValueError(f"{item!r} is not a network in CIDR form ({exc})") from None
        if net.version != 4:
            raise ValueError(f"{item!r}: sandboxes have no IPv6 egress, so there is nothing to open")
        nets.append(net)
    return list(ipaddress.collapse_addresses(nets))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SANDBOXD_", extra="ignore")

    # Where everything lives: templates, sandbox upper dirs, sockets, the SQLite database.
    data_dir: Path = Path("/var/lib/sandboxd")

    # Built template images; shared between data dirs (tests point many data dirs at one image store).
    templates_path: Path | None = None

    # Control plane and gateway.
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    gateway_port: int | None = Field(None, ge=1, le=65535)  # default: port + 1
    public_host: str | None = None  # URL clients use to reach the gateway; default http://{host}:{gateway_port}
    # A wildcard DNS name (and TLS proxy) pointing at the gateway: a sandbox's port N is then reachable at
    # {N}-{sandboxID}.{public_domain}, the `domain` the E2B routes return (`sbx.get_host(port)`).
    public_domain: str | None = None
    database_url: str | None = None  # default: sqlite in data_dir
    api_key: SecretStr | None = None  # first admin key on a fresh install
    jwt_secret: SecretStr | None = None  # default: generated once and kept in data_dir
    token_ttl_seconds: int = Field(24 * 3600 + 3600, ge=3600)
    default_timeout_seconds: int = Field(3600, ge=1)
    max_sandboxes: int = Field(500, ge=1)
    rate_limit_per_minute: int = Field(6000, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    sse_heartbeat_seconds: float = Field(15.0, gt=0)  # comment lines on idle SSE streams

    # Runtime.
    backend: str = "crun"  # crun | runc | fake
    # Agents of builtin-template sandboxes forked from a per-image zygote instead of a fresh Python
    # (runtime/oci/zygote.py); any failure falls back to the exec'd agent.
    zygote: bool = True
    uid_base: int = Field(100000, ge=1)  # host uid of range 0: the template store's on-disk ids (no sandbox runs in it)
    uid_count: int = Field(65536, ge=1024)
    # Host uid ranges for sandboxes, one each: sandbox k (1..uid_ranges) maps its uid 0 to
    # uid_base + k * uid_count; range 0 is the template store's (runtime/uidslots.py).
    uid_ranges: int = Field(4096, ge=1)
    default_vcpu: float = Field(1.0, gt=0)
    default_memory_mb: int = Field(1024, ge=64)
    default_disk_mb: int = Field(2048, ge=64)
    default_pids: int = Field(1024, ge=16)

    # Monitoring.
    sample_interval_seconds: float = Field(1.0, gt=0)
    metrics_retention_seconds: int = Field(7 * 24 * 3600, ge=60)
    webhook_allow_private: bool = False
    per_sandbox_prometheus: bool = False
    metrics_downsample_after_seconds: int = Field(3600, ge=60)  # raw samples older than this become 1-min averages
    webhook_timeout_seconds: float = Field(10.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1)
    webhook_backoff_seconds: float = Field(1.0, gt=0)  # first retry delay; doubles per attempt, capped at 5 min

    # Warm pools: "template=count,template=count".
    pool: str = ""

    # --- Security settings, one block per area (keep each block's fields together). ---
    # [limits] per-sandbox maxima and host admission (core/admission.py).
    # A build or create asking more than these per sandbox is a 400 naming the field; 0 derives each from the
    # host: all its cores, half its memory, a quarter of the data directory's filesystem.
    max_sandbox_vcpu: float = Field(0, ge=0)
    max_sandbox_memory_mb: int = Field(0, ge=0)
    max_sandbox_disk_mb: int = Field(0, ge=0)
    # A create is admitted while the memory limits of the sandboxes holding memory add up to at most
    # memory_overcommit x the host's memory and the disk sizes of all live sandboxes to disk_overcommit x the
    # data directory's filesystem, and while the host has min_free_* free (0: 5% of it, at most 1 GiB of memory
    # and 2 GiB of disk); else a 503. Limits are ceilings, not reservations: a sandbox at rest uses ~15 MiB.
    memory_overcommit: float = Field(32.0, gt=0)
    disk_overcommit: float = Field(4.0, gt=0)
    min_free_memory_mb: int = Field(0, ge=0)
    min_free_disk_mb: int = Field(0, ge=0)
    # [host view] what a sandbox reads of its machine.
    # Where lxcfs serves sandboxes their own /proc/meminfo, cpuinfo, stat, uptime... (runtime/lxcfs.py); the
    # host set-up starts it there when it is not running. Empty: off (sandboxes see the host's files).
    lxcfs_dir: Path | None = Path("/var/lib/lxcfs")

    # Which CRIU pauses sandboxes to disk (runtime/criutools.py, docs/snapshots.md): "auto" (the host's when it
    # is 4.0 or newer, else the private tools root `sandboxd setup` makes), "off", or a path to a criu binary.
    criu: str = "auto"
    # Host tools the platform keeps for itself (the private CRIU root): shared by every data dir on the host.
    tools_dir: Path = Path("/var/lib/sandboxd/tools")
    # Where pause puts a sandbox (docs/snapshots.md): "disk" (its processes and memory to disk with CRIU; RAM
    # is freed, it survives restarts and reboots) or "memory" (frozen in RAM). "disk" falls back to "memory"
    # when CRIU is unavailable or cannot take the sandbox.
    pause_to: str = Field("disk", pattern="^(disk|memory)$")
    # More sandboxes than RAM (core/eviction.py): below this much MemAvailable, idle sandboxes (no gateway request
    # for evict_idle_seconds) go to disk, least recently used first, and come back on their next request. 0: off.
    evict_below_free_mb: int = Field(0, ge=0)
    evict_idle_seconds: float = Field(60.0, gt=0)
    # The cgroup2 hierarchy's favordynmods (runtime/hostsetup.py): moving a process between cgroups no longer
    # waits for an RCU grace period (~15-20 ms here, paid by every create and twice by every restore), for a
    # little more work in every fork and exit.
    cgroup_favordynmods: bool = True

    @field_validator("lxcfs_dir", mode="before")
    @classmethod
    def _lxcfs_off(cls, v: object) -> object:
        return None if v in ("", None) else v
    # [builds] what template builds may read from the host.
    # The one host directory a build's FROM may name an OCI archive or layout in (paths resolve inside it);
    # None: builds read no host path at all.
    import_dir: Path | None = None
    # Container registries builds may pull FROM (templates/registry.py): none unless named here. A short name
    # (ubuntu:22.04) resolves in default_registry; insecure_registries are spoken to without TLS verification.
    registries: str = ""
    default_registry: str = ""
    insecure_registries: str = ""
    registry_auth_file: Path | None = None
    # FROM names the operator maps onto local templates ("ubuntu=base,python=base,node=code-interpreter"): a
    # repository name (any tag) is then built from that template instead of pulled. None unless set: an image
    # that is neither a template, an import nor in a configured registry is a 404, never a stand-in.
    image_aliases: str = ""
    # [edges] client connection limits of the API and the gateway.
    # The gateway (gateway/limits.py): a request head must arrive whole within gateway_head_timeout_seconds; an
    # idle keep-alive connection closes after gateway_keep_alive_seconds; connections over the caps get a 503;
    # a request body over gateway_max_body_bytes gets a 413 (file uploads stream through the gateway: the cap
    # is larger than the API's max_body_bytes).
    gateway_head_timeout_seconds: float = Field(10.0, gt=0)
    gateway_keep_alive_seconds: float = Field(15.0, gt=0)
    gateway_max_connections: int = Field(1000, ge=1)
    gateway_max_connections_per_ip: int = Field(200, ge=1)
    gateway_max_body_bytes: int = Field(1024 * 1024 * 1024, ge=1024)
    # The control-plane API (api/listener.py): a request head must arrive whole within api_head_timeout_seconds;
    # an idle keep-alive connection closes after api_keep_alive_seconds; connections over the caps get a 503.
    api_head_timeout_seconds: float = Field(10.0, gt=0)
    api_keep_alive_seconds: float = Field(5.0, gt=0)
    api_max_connections: int = Field(1000, ge=1)
    api_max_connections_per_ip: int = Field(200, ge=1)
    # [egress] the operator's network floor under every sandbox.
    # Sandboxes with internet access reach the public internet only: every range in
    # runtime/network.py CLOSED_RANGES (private, shared, loopback, link-local, reserved, ...) is refused
    # unless it falls in one of these comma-separated IPv4 CIDRs the operator opens ("10.1.2.0/24,192.168.5.7/32").
    egress_allow_cidrs: str = ""

    @field_validator("egress_allow_cidrs")
    @classmethod
    def _egress_cidrs(cls, v: str) -> str:
        return ",".join(str(n) for n in parse_cidrs(v))
    # The resolvers the egress proxy's resolver forwards a sandbox's DNS to when its policy names hosts
    # (docs/network.md): comma-separated "ip[:port]". Empty: the ones sandboxes are given (the host's).
    egress_resolvers: str = ""

    @field_validator("egress_resolvers")
    @classmethod
    def _egress_resolvers(cls, v: str) -> str:
        for item in filter(None, (w.strip() for w in v.split(","))):
            host, _, port = item.partition(":")
            ipaddress.IPv4Address(host)  # a ValueError names the entry
            if port and not 0 < int(port) < 65536:
                raise ValueError(f"{item!r}: port out of range")
        return v
    # [tokens] sandbox token lifetimes.
    # After /token/refresh the sandbox's previous HopX token still works this long (requests in flight), then never.
    token_refresh_grace_seconds: float = Field(60.0, ge=0, le=3600)
    # E2B's envdAccessToken is one per sandbox (the SDK keeps it): it expires this long after the sandbox's creation.
    envd_token_ttl_seconds: int = Field(30 * 24 * 3600, ge=3600)

    @field_validator("image_aliases")
    @classmethod
    def _aliases(cls, v: str) -> str:
        parse_aliases(v)  # a bad entry stops the start, naming it
        return v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def effective_gateway_port(self) -> int:
        return self.gateway_port or self.port + 1

    @property
    def effective_public_host(self) -> str:
        if self.public_host:
            return self.public_host.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.effective_gateway_port}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'sandboxd.db'}"

    @property
    def templates_dir(self) -> Path:
        return self.templates_path or self.data_dir / "templates"

    @property
    def sandboxes_dir(self) -> Path:
        return self.data_dir / "sandboxes"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def parse_aliases(raw: str) -> dict[str, str]:
    """SANDBOXD_IMAGE_ALIASES: `repository=template` pairs, comma-separated."""
    out: dict[str, str] = {}
    for entry in (e.strip() for e in (raw or "").split(",")):
        if not entry:
            continue
        repo, eq, template = (x.strip() for x in entry.partition("="))
        if not eq or not repo or not template or ":" in repo or "@" in repo:
            raise ValueError(f"image_aliases entry {entry!r}: write repository=template (no tag), e.g. ubuntu=base")
        out[repo.lower().removeprefix("docker.io/").removeprefix("library/")] = template
    return out

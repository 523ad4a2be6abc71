"""Typed results returned by the SDK. Each keeps the server's JSON in `raw` so nothing is lost when
the server adds fields the SDK does not know yet."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any


def parse_time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class SandboxInfo:
    id: str
    status: str
    template_id: str | None = None
    template_name: str | None = None
    public_host: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    timeout_seconds: int | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "SandboxInfo":
        return cls(id=str(d.get("id") or d.get("sandbox_id") or d.get("sandboxID")), status=str(d.get("status", "")),
                   template_id=d.get("template_id"), template_name=d.get("template_name"),
                   public_host=d.get("public_host") or d.get("direct_url"),
                   created_at=parse_time(d.get("created_at")), expires_at=parse_time(d.get("expires_at")),
                   timeout_seconds=d.get("timeout_seconds"), resources=d.get("resources") or {},
                   metadata=d.get("metadata") or {}, raw=d)


@dataclass
class Result:
    """One rich output of a code cell (an `execute_result` or a `display_data`), by MIME type."""

    data: dict[str, Any]
    is_main_result: bool = False

    @property
    def text(self) -> str | None:
        return self.data.get("text/plain")

    @property
    def png(self) -> str | None:
        """Base64 PNG, as sent; see `png_bytes`."""
        return self.data.get("image/png")

    @property
    def png_bytes(self) -> bytes | None:
        return base64.b64decode(self.png) if self.png else None

    @property
    def jpeg(self) -> str | None:
        return self.data.get("image/jpeg")

    @property
    def svg(self) -> str | None:
        return self.data.get("image/svg+xml")

    @property
    def html(self) -> str | None:
        return self.data.get("text/html")

    @property
    def markdown(self) -> str | None:
        return self.data.get("text/markdown")

    @property
    def json(self) -> Any:
        return self.data.get("application/json")

    @property
    def dataframe(self) -> Any:
        return self.data.get("application/vnd.dataframe+json")

    def formats(self) -> list[str]:
        return list(self.data)


_TOP_LEVEL_RICH = {"png": "image/png", "jpeg": "image/jpeg", "svg": "image/svg+xml", "html": "text/html",
                   "markdown": "text/markdown", "json": "application/json",
                   "dataframe": "application/vnd.dataframe+json"}


@dataclass
class CellFailure:
    name: str
    value: str
    traceback: str = ""


@dataclass
class Execution:
    """The outcome of `run_code`. A failing cell is a result with `error` set, not an exception."""

    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    success: bool = True
    execution_time: float = 0.0
    results: list[Result] = field(default_factory=list)
    error: CellFailure | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str | None:
        """The cell's value as text (the last expression), like a notebook's Out[]."""
        for r in self.results:
            if r.is_main_result:
                return r.text
        return None

    @property
    def pngs(self) -> list[bytes]:
        return [png for r in self.results if (png := r.png_bytes) is not None]

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Execution":
        results: list[Result] = []
        outputs = d.get("outputs") or d.get("results")
        if isinstance(outputs, list) and outputs:
            for o in outputs:
                data = o.get("data") if isinstance(o, dict) else None
                if isinstance(data, dict):
                    results.append(Result(data, o.get("type") == "execute_result" or bool(o.get("is_main_result"))))
        else:
            data = {mime: d[key] for key, mime in _TOP_LEVEL_RICH.items() if d.get(key) not in (None, "")}
            if data:
                results.append(Result(data))
            if d.get("result") not in (None, ""):
                results.append(Result({"text/plain": d["result"]}, True))
        success = d.get("success")
        exit_code = int(d.get("exit_code") or 0)
        if success is None:
            success = exit_code == 0
        error = None
        err = d.get("error")
        if isinstance(err, dict):
            error = CellFailure(str(err.get("name", "")), str(err.get("value", "")), str(err.get("traceback", "")))
        elif isinstance(err, str) and err:
            name, _, value = err.partition(": ")
            error = CellFailure(name, value, d.get("stderr", "") or "")
        elif not success:
            lines = (d.get("stderr") or "").strip().splitlines()
            error = CellFailure("Error", lines[-1] if lines else "execution failed", d.get("stderr") or "")
        return cls(stdout=d.get("stdout") or "", stderr=d.get("stderr") or "", exit_code=exit_code,
                   success=bool(success), execution_time=float(d.get("execution_time") or 0.0), results=results,
                   error=error, raw=d)


@dataclass
class CommandResult:
    stdout: str
    stderr: str
    exit_code: int
    execution_time: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "CommandResult":
        return cls(stdout=d.get("stdout") or "", stderr=d.get("stderr") or "", exit_code=int(d.get("exit_code") or 0),
                   execution_time=float(d.get("execution_time") or 0.0), raw=d)


@dataclass
class ProcessInfo:
    process_id: str
    status: str
    pid: int | None = None
    exit_code: int | None = None
    name: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def running(self) -> bool:
        return self.status in ("running", "queued", "starting")

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ProcessInfo":
        return cls(process_id=str(d.get("process_id") or d.get("id") or ""), status=str(d.get("status", "")),
                   pid=d.get("pid"), exit_code=d.get("exit_code"), name=d.get("name") or d.get("command"), raw=d)


@dataclass
class FileEntry:
    name: str
    path: str
    size: int = 0
    is_dir: bool = False
    modified: datetime | None = None
    permissions: str | None = None

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "FileEntry":
        return cls(name=d.get("name", ""), path=d.get("path", ""), size=int(d.get("size") or 0),
                   is_dir=bool(d.get("is_dir", d.get("is_directory", False))),
                   modified=parse_time(d.get("modified_time") or d.get("modified")),
                   permissions=d.get("permissions") or d.get("mode"))


@dataclass
class FileEvent:
    type: str  # created | modified | deleted | renamed
    path: str
    timestamp: datetime | None = None

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "FileEvent":
        return cls(type=str(d.get("event") or d.get("type")), path=str(d.get("path", "")),
                   timestamp=parse_time(d.get("timestamp")))


@dataclass
class Metric:
    """One sample of a sandbox's resource use (the monitor's history, every sample interval)."""

    timestamp: datetime | None
    cpu_count: int
    cpu_used_pct: float
    mem_used: int
    mem_total: int
    mem_cache: int
    disk_used: int
    disk_total: int

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Metric":
        ts = d.get("timestampUnix")
        return cls(timestamp=parse_time(ts if ts is not None else d.get("timestamp")),
                   cpu_count=int(d.get("cpuCount") or 0), cpu_used_pct=float(d.get("cpuUsedPct") or 0.0),
                   mem_used=int(d.get("memUsed") or 0), mem_total=int(d.get("memTotal") or 0),
                   mem_cache=int(d.get("memCache") or 0), disk_used=int(d.get("diskUsed") or 0),
                   disk_total=int(d.get("diskTotal") or 0))


@dataclass
class SandboxEvent:
    id: str
    type: str
    timestamp: datetime | None
    sandbox_id: str | None
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "SandboxEvent":
        return cls(id=str(d.get("id", "")), type=str(d.get("type", "")), timestamp=parse_time(d.get("timestamp")),
                   sandbox_id=d.get("sandboxId") or d.get("sandbox_id"),
                   data=d.get("eventData") or d.get("data") or {})


@dataclass
class ApiKey:
    id: str
    name: str
    admin: bool = False
    created_at: datetime | None = None
    revoked: bool = False
    key: str | None = None  # the secret: only present in the answer to `create`
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    team_id: str | None = None
    role: str | None = None  # admin | member

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ApiKey":
        return cls(id=str(d.get("id", "")), name=str(d.get("name", "")), admin=bool(d.get("admin", d.get("is_admin"))),
                   created_at=parse_time(d.get("created_at")),
                   revoked=bool(d.get("revoked") or d.get("revoked_at")), key=d.get("key"), raw=d,
                   team_id=d.get("team_id"), role=d.get("role"))


@dataclass
class TeamInfo:
    """A team; `quotas` maps each quota to the limit that holds (None: no limit): the lower of
    `operator_quotas` and the team admin's own `team_quotas`; `usage_now` is only in `get_team`."""

    id: str
    name: str
    created_at: datetime | None = None
    quotas: dict[str, int | None] = field(default_factory=dict)
    usage_now: dict[str, int | float] = field(default_factory=dict)
    operator_quotas: dict[str, int | None] = field(default_factory=dict)
    team_quotas: dict[str, int | None] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "TeamInfo":
        return cls(id=str(d.get("id", "")), name=str(d.get("name", "")), created_at=parse_time(d.get("created_at")),
                   quotas=d.get("quotas") or {}, usage_now=d.get("usage_now") or {},
                   operator_quotas=d.get("operator_quotas") or {}, team_quotas=d.get("team_quotas") or {}, raw=d)


@dataclass
class TemplateInfo:
    id: str
    name: str
    status: str | None = None
    display_name: str | None = None
    description: str | None = None
    created_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "TemplateInfo":
        return cls(id=str(d.get("id", "")), name=str(d.get("name", "")), status=d.get("status"),
                   display_name=d.get("display_name"), description=d.get("description"),
                   created_at=parse_time(d.get("created_at")), raw=d)


@dataclass
class SandboxUsage:
    """One sandbox's running time in a usage window (paused and stopped time are not counted)."""

    sandbox_id: str
    template_id: str | None
    sandbox_seconds: float
    vcpu_seconds: float
    gib_seconds: float

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "SandboxUsage":
        return cls(sandbox_id=str(d.get("sandbox_id", "")), template_id=d.get("template_id"),
                   **_amounts(d))


@dataclass
class TeamUsage:
    team_id: str | None
    team_name: str | None
    sandbox_seconds: float
    vcpu_seconds: float
    gib_seconds: float
    sandboxes: list[SandboxUsage] = field(default_factory=list)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "TeamUsage":
        return cls(team_id=d.get("team_id"), team_name=d.get("team_name"), **_amounts(d),
                   sandboxes=[SandboxUsage.from_wire(s) for s in d.get("sandboxes") or []])


@dataclass
class Usage:
    """`Client.usage`: running time per team and sandbox in the window [start, end)."""

    start: datetime | None
    end: datetime | None
    teams: list[TeamUsage] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Usage":
        return cls(start=parse_time(d.get("from")), end=parse_time(d.get("to")),
                   teams=[TeamUsage.from_wire(t) for t in d.get("teams") or []], raw=d)


def _amounts(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(d.get(k) or 0.0) for k in ("sandbox_seconds", "vcpu_seconds", "gib_seconds")}


@dataclass
class Refusal:
    """One connection (or DNS question) the egress policy refused by name, and why: `ip_denied`, `name_denied`,
    `name_not_resolved`, `tls_interception_off`, `dns_refused`, `floor` or `connect_failed`."""

    time: datetime | None
    destination: str
    address: str | None
    port: int | None
    reason: str

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Refusal":
        return cls(time=parse_time(d.get("time")), destination=str(d.get("destination") or ""),
                   address=d.get("address"), port=d.get("port"), reason=str(d.get("reason") or ""))


@dataclass
class EgressDenied:
    """What a sandbox's egress policy refused: packets and bytes its address rules refused since it last
    started, the addresses refused in the last hour, and the latest connections refused by name."""

    packets: int = 0
    bytes: int = 0
    destinations: list[str] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "EgressDenied":
        return cls(packets=int(d.get("packets") or 0), bytes=int(d.get("bytes") or 0),
                   destinations=list(d.get("destinations") or []),
                   refusals=[Refusal.from_wire(r) for r in d.get("refusals") or []])


@dataclass
class DestinationUsage:
    """Traffic to one destination in the last hour: a host name admitted through the egress proxy, or an
    address reached directly (then `bytes_received` is None: direct traffic is counted one way)."""

    destination: str
    connections: int = 0
    bytes_sent: int = 0
    bytes_received: int | None = None
    denied: int = 0

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "DestinationUsage":
        received = d.get("bytes_received")
        return cls(destination=str(d.get("destination") or ""), connections=int(d.get("connections") or 0),
                   bytes_sent=int(d.get("bytes_sent") or 0), bytes_received=None if received is None else int(received),
                   denied=int(d.get("denied") or 0))


@dataclass
class NetworkInfo:
    """A sandbox's egress policy (docs/network.md) with what it refused and what went out. `dns_servers` is None
    when none were set; `rules` maps a host to E2B's `[{"transform": {"headers": {...}}}]`; `egress_proxy` is the
    SOCKS5 proxy its TCP goes out through (address, username, tls; never the password), None without one."""

    id: str
    allow_out: list[str] = field(default_factory=list)
    deny_out: list[str] = field(default_factory=list)
    dns_servers: list[str] | None = None
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    egress_proxy: dict[str, Any] | None = None
    denied: EgressDenied = field(default_factory=EgressDenied)
    usage: list[DestinationUsage] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "NetworkInfo":
        dns = d.get("dns_servers")
        return cls(id=str(d.get("id", "")), allow_out=list(d.get("allow_out") or []),
                   deny_out=list(d.get("deny_out") or []), dns_servers=None if dns is None else list(dns),
                   rules=d.get("rules") or {}, egress_proxy=d.get("egress_proxy"),
                   denied=EgressDenied.from_wire(d.get("denied") or {}),
                   usage=[DestinationUsage.from_wire(u) for u in d.get("usage") or []], raw=d)

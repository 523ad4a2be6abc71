"""Domain records -> E2B's JSON shapes (docs/clients/e2b.md §1.2). Required keys always present: the SDK's
generated parsers `pop()` them and fail on a missing one."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from sandboxd.agent.envd.version import ENVD_VERSION
from sandboxd.core.egress import EgressPolicy, e2b_wire
from sandboxd.core.models import ON_TIMEOUT_KILL, PAUSED, RUNNING, STOPPED, Sandbox, Template, iso

CLIENT_ID = "sandboxd"


def state(sb: Sandbox) -> str:
    # E2B knows running and paused only; a stopped sandbox is resumable like a paused one.
    return "paused" if sb.status in (PAUSED, STOPPED) else "running"


def listing_filter(states: set[str], metadata: dict[str, str], started_after: datetime | None
                   ) -> Callable[[Sandbox], bool]:
    """What E2B's list filters keep: the wanted states, every metadata pair equal, started at or after."""
    def keep(sb: Sandbox) -> bool:
        return (state(sb) in states and sb.status in (RUNNING, PAUSED, STOPPED)
                and all(str((sb.metadata or {}).get(k)) == v for k, v in metadata.items())
                and (started_after is None or (sb.started_at or sb.created_at) >= started_after))
    return keep


def template_ref(sb: Sandbox) -> str:
    return sb.template_name or sb.template_id or ""


def created(sb: Sandbox, token: str, domain: str | None = None) -> dict[str, Any]:
    """`Sandbox` (create / connect / resume). `domain`: where the SDK builds the sandbox's hosts."""
    return {
        "templateID": template_ref(sb), "sandboxID": sb.id, "alias": sb.template_name, "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION, "envdAccessToken": token,
        # The code interpreter's context calls carry only this token: the gateway accepts it like the access token.
        "trafficAccessToken": token, "domain": domain,
    }


def _times(sb: Sandbox) -> tuple[str | None, str | None]:
    started = sb.started_at or sb.created_at
    end = sb.expires_at or sb.ended_at or started
    return iso(started), iso(end)


def listed(sb: Sandbox) -> dict[str, Any]:
    """`ListedSandbox`."""
    started, end = _times(sb)
    return {
        "templateID": template_ref(sb), "alias": sb.template_name, "sandboxID": sb.id, "clientID": CLIENT_ID,
        "startedAt": started, "endAt": end, "cpuCount": max(1, round(sb.vcpu)), "memoryMB": sb.memory_mb,
        "diskSizeMB": sb.disk_mb, "metadata": {str(k): str(v) for k, v in (sb.metadata or {}).items()},
        "state": state(sb), "envdVersion": ENVD_VERSION,
        "volumeMounts": [{"name": m["name"], "path": m["path"]} for m in sb.volume_mounts],
    }


def detail(sb: Sandbox, token: str | None = None, domain: str | None = None) -> dict[str, Any]:
    """`SandboxDetail`."""
    out = listed(sb)
    out.update({"allowInternetAccess": sb.internet_access, "domain": domain,
                "lifecycle": {"autoResume": sb.auto_resume,
                              "onTimeout": "kill" if sb.on_timeout == ON_TIMEOUT_KILL else "pause"},
                "network": e2b_wire(EgressPolicy.from_dict(sb.egress), sb.public_traffic)})
    if token:
        out["envdAccessToken"] = token
    return out


def template(t: Template) -> dict[str, Any]:
    """`Template` (GET /templates)."""
    status = {"active": "ready", "building": "building", "failed": "error"}.get(t.status, "waiting")
    return {
        "templateID": t.id, "buildID": t.build_id or t.id, "cpuCount": t.vcpu, "memoryMB": t.memory_mb,
        "diskSizeMB": t.disk_gb * 1024, "public": t.is_public or t.published, "aliases": [t.name], "names": [t.name],
        "createdAt": iso(t.created_at), "updatedAt": iso(t.updated_at), "createdBy": None, "lastSpawnedAt": None,
        "spawnCount": 0, "buildCount": 1, "envdVersion": ENVD_VERSION, "buildStatus": status,
    }


def now() -> datetime:
    return datetime.now(timezone.utc)

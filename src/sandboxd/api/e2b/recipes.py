"""E2B's template build request (`POST /v2/templates/{id}/builds/{buildID}`, as the `e2b` SDK's `Template`
sends it) turned into our build request: its steps in the recipe dialect templates/steps.py parses.

E2B instructions map one to one onto our steps, so the step numbers E2B's SDK reads back from a failed
build (to show the failing line of the user's code) are ours, less the steps this module puts first:
a build FROM an image runs as `user` in /home/user, as E2B's do (its SDK asks for `user="root"` where it
needs root); a build FROM a template starts with that template's user and directory.
"""
from __future__ import annotations

from typing import Any

from sandboxd.core.builds import BuildRequest
from sandboxd.errors import Invalid

E2B_BASE_IMAGES = ("e2bdev/base", "e2bdev/base:latest")
DEFAULT_USER, DEFAULT_WORKDIR = "user", "/home/user"
DISK_GB = 10  # unless the caller asks for free space: the size HopX's builder asks by default
IMAGE_ALLOWANCE_MB = 4096
NAMES = {"vcpu": "cpuCount", "memory": "memoryMB", "disk": "minFreeDiskMb"}


def disk_gb(min_free_mb: int | None) -> int:
    """The disk of the template's sandboxes: 10 GB, or room for the free space the caller wants on top of
    what a built image holds (a few GB at most for the builtin bases)."""
    if not min_free_mb:
        return DISK_GB
    return max(DISK_GB, -(-(min_free_mb + IMAGE_ALLOWANCE_MB) // 1024))


def split_name(name: str) -> tuple[str, str | None]:
    """'name:tag' -> (name, tag); a bare name has no tag."""
    base, sep, tag = name.partition(":")
    return base, (tag if sep else None)


def prelude(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The steps put before the caller's: none FROM a template, E2B's user and directory FROM an image."""
    if body.get("fromTemplate"):
        return []
    return [{"type": "USER", "args": [DEFAULT_USER]}, {"type": "WORKDIR", "args": [DEFAULT_WORKDIR]}]


def to_build_request(name: str, body: dict[str, Any], *, cpu: int, memory_mb: int) -> BuildRequest:
    if body.get("fromImageRegistry"):
        raise Invalid("fromImageRegistry: this server pulls from no registry; build FROM a template, a built-in "
                      "image name or an uploaded OCI archive", code="registry_not_configured")
    source = body.get("fromTemplate") or body.get("fromImage")
    if not isinstance(source, str) or not source:
        raise Invalid("fromImage or fromTemplate is required", code="missing_from_image")
    if source in E2B_BASE_IMAGES:
        source = "base"
    raw = body.get("steps") or []
    if not isinstance(raw, list):
        raise Invalid("steps must be a list", code="invalid_step")
    first = prelude(body)
    ready = body.get("readyCmd")
    return BuildRequest(
        name=name, from_image=source, steps=first + [step(s, i) for i, s in enumerate(raw, 1)],
        start_cmd=body.get("startCmd") or None,
        ready_cmd={"type": "command", "command": ready} if isinstance(ready, str) and ready else None,
        cpu=cpu, memory_mb=memory_mb, disk_gb=DISK_GB, skip_cache=bool(body.get("force")), update=True,
        hidden_steps=len(first))


def step(raw: Any, index: int) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Invalid(f"steps[{index}]: must be an object", code="invalid_step")
    kind = str(raw.get("type", "")).upper()
    args = raw.get("args") or []
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise Invalid(f"steps[{index}] ({kind}): args must be a list of strings", code="invalid_step")
    out: dict[str, Any] = {"type": kind, "skipCache": bool(raw.get("force"))}
    if kind == "COPY":  # [src, dest, user, mode]
        if len(args) < 2:
            raise Invalid(f"steps[{index}] (COPY): needs a source and a destination", code="invalid_step")
        out.update(args=args[:2], filesHash=raw.get("filesHash"))
        if len(args) > 2 and args[2]:
            out["owner"] = args[2]
        if len(args) > 3 and args[3]:
            out["permissions"] = args[3]
    elif kind == "RUN":  # [command, user?]
        if not args or len(args) > 2:
            raise Invalid(f"steps[{index}] (RUN): expects a command and an optional user", code="invalid_step")
        out["args"] = args[:1]
        if len(args) == 2 and args[1]:
            out["user"] = args[1]
    else:
        out["args"] = args
    return out

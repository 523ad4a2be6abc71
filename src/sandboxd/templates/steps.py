"""The build recipe: steps of the HopX builder's model, and the parser of its JSON wire form.

Accepts both clients' shapes (docs/clients/hopx.md §4): Python sends {"type": "ENV", "args": [k, v]},
JS sends {"type": "env", "key", "value"} / {"type": "workdir", "path"}; readyCmd uses `processName`
(Python) or `name` (JS); timeouts are milliseconds on the wire.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandboxd.errors import Invalid
from sandboxd.runtime.base import ReadyCheck, Resources

KINDS = ("RUN", "COPY", "ENV", "WORKDIR", "USER", "FROM")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise Invalid(f"invalid template name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    return name


@dataclass(frozen=True)
class Step:
    kind: str  # one of KINDS
    args: tuple[str, ...]
    files_hash: str | None = None  # COPY: which uploaded context holds the files
    owner: str | None = None  # COPY: "user", "1000", "1000:1000"
    permissions: str | None = None  # COPY: octal mode for copied files, e.g. "755"
    skip_cache: bool = False
    user: str | None = None  # RUN: run as this user instead of the image's current one
    exec: bool = False  # RUN: args is an argv run without a shell
    from_stage: int | None = None  # COPY: from an earlier stage's image; FROM: begin a stage on it
    from_image: str | None = None  # COPY: from a template's image
    extract: bool = False  # COPY: a tar archive (plain or compressed) is unpacked at dest, as ADD does
    expand: bool = False  # ENV: ${NAME} in values is replaced by the image env's value, \$ by $
    line: int | None = None  # the Dockerfile line the step comes from, named in its errors

    def describe(self) -> str:
        text = f"{self.kind} {json.dumps(list(self.args)) if self.exec else ' '.join(self.args)}"
        if self.from_stage is not None:
            text += f" (from stage {self.from_stage})"
        elif self.from_image:
            text += f" (from {self.from_image})"
        return text + (f" (Dockerfile line {self.line})" if self.line else "")

    def key(self) -> dict[str, Any]:
        """What identifies the step for the layer cache (the uploaded content is hashed separately)."""
        key: dict[str, Any] = {"kind": self.kind, "args": list(self.args), "owner": self.owner,
                               "permissions": self.permissions}
        # Each only when set: the keys of earlier builds' layers stay what they were.
        for name in ("user", "exec", "from_image", "extract", "expand"):
            if getattr(self, name):
                key[name] = getattr(self, name)
        if self.from_stage is not None:
            key["from_stage"] = self.from_stage
        return key


@dataclass
class BuildRecipe:
    name: str
    from_image: str
    steps: list[Step]
    start_cmd: str | None = None
    ready_check: ReadyCheck | None = None
    resources: Resources = field(default_factory=lambda: Resources(vcpu=2, memory_mb=2048, disk_mb=10 * 1024))
    skip_cache: bool = False
    # COPY sources: an uploaded tar(.gz) per files_hash, and/or one context (dir or tarball) for all steps.
    contexts: dict[str, Path] = field(default_factory=dict)
    context: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra image env, applied before the steps

    def context_for(self, step: Step) -> Path:
        if step.files_hash and step.files_hash in self.contexts:
            return self.contexts[step.files_hash]
        if self.context is not None:
            return self.context
        raise Invalid(f"COPY step has no uploaded files (files_hash {step.files_hash!r})", code="files_not_uploaded")


def expand_env(value: str, env: dict[str, str]) -> str:
    """An ENV value with `expand`: ${NAME} is the image env's value (empty when unset), \\$ a plain $."""
    return re.sub(r"\\\$|\$\{(\w+)\}", lambda m: env.get(m.group(1), "") if m.group(1) else "$", value)


def _str_args(raw: Any, what: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(a, (str, int, float)) for a in raw):
        raise Invalid(f"{what}: args must be a list of strings")
    return tuple(str(a) for a in raw)


def parse_step(raw: dict[str, Any], index: int) -> Step:
    if not isinstance(raw, dict):
        raise Invalid(f"step {index}: must be an object")
    kind = str(raw.get("type", "")).upper()
    where = f"step {index} ({kind or '?'})"
    if kind not in KINDS:
        raise Invalid(f"{where}: unknown step type {raw.get('type')!r}; expected one of {', '.join(KINDS)}")
    skip = bool(raw.get("skipCache") or raw.get("skip_cache"))
    if "args" in raw:
        args = _str_args(raw["args"], where)
    elif kind == "ENV":
        args = (str(raw.get("key", "")), str(raw.get("value", "")))
    elif kind == "WORKDIR":
        args = (str(raw.get("path", "")),)
    elif kind == "USER":
        args = (str(raw.get("user") or raw.get("name") or ""),)
    elif kind == "RUN":
        args = (str(raw.get("command") or raw.get("cmd") or ""),)
    elif kind == "COPY":
        src = raw.get("src") or raw.get("source") or ""
        args = (",".join(src) if isinstance(src, list) else str(src), str(raw.get("dest") or raw.get("destination") or ""))
    else:
        args = ()
    exec_form = kind == "RUN" and raw.get("exec") is True
    stage = _stage_ref(raw, index, where) if kind in ("COPY", "FROM") else None
    wants = {"RUN": 1, "COPY": 2, "ENV": 2, "WORKDIR": 1, "USER": 1, "FROM": 0 if stage is not None else 1}[kind]
    if exec_form and len(args) >= 1:
        wants = len(args)
    elif kind == "RUN" and len(args) > 1:
        args = (shlex.join(args),)  # several args without `exec`: one shell command, as before
    if kind == "ENV" and len(args) > 2 and len(args) % 2 == 0:
        wants = len(args)  # several name, value pairs in one step
    if len(args) != wants or any(a == "" for a in (args[::2] if kind == "ENV" else args)):
        raise Invalid(f"{where}: expects {wants} argument(s), got {list(args)!r}")
    if kind == "ENV" and not all(name.replace("_", "a").isalnum() for name in args[::2]):
        raise Invalid(f"{where}: invalid variable name in {list(args[::2])!r}")
    user = raw.get("user") if kind == "RUN" else None
    if user is not None and (not isinstance(user, str) or not user or "\x00" in user or ":" in user):
        raise Invalid(f"{where}: invalid user {user!r}")
    if kind == "WORKDIR" and "\x00" in args[0]:
        raise Invalid(f"{where}: invalid path")
    files_hash = raw.get("filesHash") or raw.get("files_hash")
    perms = raw.get("permissions") or raw.get("mode")
    if perms is not None:
        try:
            int(str(perms), 8)
        except ValueError:
            raise Invalid(f"{where}: permissions must be octal, got {perms!r}") from None
    from_image = raw.get("fromImage") if kind == "COPY" else None
    if from_image is not None and (not isinstance(from_image, str) or not from_image or stage is not None):
        raise Invalid(f"{where}: fromImage must be a template or image name, and not given with fromStage")
    line = raw.get("line")
    if line is not None and (not isinstance(line, int) or isinstance(line, bool) or line < 1):
        raise Invalid(f"{where}: line must be a positive integer")
    return Step(kind=kind, args=args, files_hash=str(files_hash) if files_hash else None,
                owner=str(raw["owner"]) if raw.get("owner") else None,
                permissions=str(perms) if perms is not None else None, skip_cache=skip, user=user or None,
                exec=exec_form, from_stage=stage, from_image=from_image, extract=kind == "COPY" and raw.get("extract") is True,
                expand=kind == "ENV" and raw.get("expand") is True, line=line)


def _stage_ref(raw: dict[str, Any], index: int, where: str) -> int | None:
    """fromStage of a COPY or FROM step: the number of an earlier stage (0 is the one from_image begins)."""
    stage = raw.get("fromStage")
    if stage is None:
        return None
    if not isinstance(stage, int) or isinstance(stage, bool) or stage < 0:
        raise Invalid(f"{where}: fromStage must be the number of an earlier stage")
    return stage


def check_stages(steps: list[Step]) -> None:
    """Every fromStage names a stage begun before the step (stage 0 is from_image's, each FROM step begins
    the next)."""
    current = 0
    for i, step in enumerate(steps):
        if step.from_stage is not None and step.from_stage >= current + (step.kind == "FROM"):
            raise Invalid(f"step {i} ({step.kind}): fromStage {step.from_stage} is not an earlier stage")
        current += step.kind == "FROM"


def parse_ready(raw: dict[str, Any] | None) -> ReadyCheck | None:
    """readyCmd → ReadyCheck. A `url` check becomes a command check (curl), the rest map one to one."""
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise Invalid("readyCmd must be an object")
    kind = str(raw.get("type", "")).lower()
    timeout = float(raw.get("timeout") or 30000) / 1000.0
    if kind == "port":
        port = raw.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise Invalid(f"readyCmd port must be an integer 1-65535, got {port!r}")
        return ReadyCheck("port", str(port), timeout)
    if kind == "url":
        url = str(raw.get("url") or "")
        if not url:
            raise Invalid("readyCmd url is required")
        return ReadyCheck("command", f"curl -fsS -o /dev/null {shlex.quote(url)}", timeout)
    if kind == "file":
        value = str(raw.get("path") or raw.get("file") or "")
    elif kind == "process":
        value = str(raw.get("processName") or raw.get("name") or raw.get("process") or "")
    elif kind == "command":
        value = str(raw.get("command") or "")
    else:
        raise Invalid(f"readyCmd type must be port, url, file, process or command, got {raw.get('type')!r}")
    if not value:
        raise Invalid(f"readyCmd of type {kind} needs a value")
    return ReadyCheck(kind, value, timeout)


def parse_build_request(doc: dict[str, Any]) -> BuildRecipe:
    """The body of POST /v1/templates/build (either client's dialect) → BuildRecipe (no contexts yet)."""
    if not isinstance(doc, dict):
        raise Invalid("build request must be a JSON object")
    name = doc.get("name") or doc.get("alias")
    from_image = doc.get("from_image") or doc.get("fromImage") or doc.get("from_template") or doc.get("fromTemplate")
    if not name or not isinstance(name, str):
        raise Invalid("name is required")
    if not from_image or not isinstance(from_image, str):
        raise Invalid("from_image is required")
    raw_steps = doc.get("steps") or []
    if not isinstance(raw_steps, list):
        raise Invalid("steps must be a list")
    steps = [parse_step(s, i) for i, s in enumerate(raw_steps)]
    check_stages(steps)
    start = doc.get("startCmd") or doc.get("start_cmd")
    ready = parse_ready(doc.get("readyCmd") or doc.get("ready_cmd"))
    cpu = doc.get("cpu") or 2
    memory = doc.get("memory") or doc.get("memoryMB") or 2048
    disk = doc.get("diskGB") or doc.get("disk_gb") or 10
    try:
        resources = Resources(vcpu=float(cpu), memory_mb=int(memory), disk_mb=int(float(disk) * 1024))
    except (TypeError, ValueError):
        raise Invalid("cpu, memory and diskGB must be numbers") from None
    return BuildRecipe(name=name, from_image=from_image, steps=steps, start_cmd=str(start) if start else None,
                       ready_check=ready, resources=resources, skip_cache=bool(doc.get("skipCache")))

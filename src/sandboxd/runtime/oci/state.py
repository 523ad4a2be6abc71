"""The on-disk record of one sandbox (`<sandbox dir>/state.json`): what recover() needs after a restart.

Written atomically (rename) at every state change, so a SIGKILLed daemon leaves either the old or the
new record, never half of one. `status == "creating"` marks a sandbox whose create never finished,
"destroying" one that was killed and whose files are still being released.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sandboxd.runtime.base import Egress, ReadyCheck, Resources, SandboxSpec, TemplateImage


def spec_to_dict(spec: SandboxSpec) -> dict[str, Any]:
    image = spec.image
    return {
        "id": spec.id,
        "image": {
            "name": image.name, "layers": [str(p) for p in image.layers], "content_hash": image.content_hash,
            "env": image.env, "workdir": image.workdir, "user": image.user, "start_cmd": image.start_cmd,
            "ready_check": asdict(image.ready_check) if image.ready_check else None,
            "agent_runtime": str(image.agent_runtime) if image.agent_runtime else None,
        },
        "resources": asdict(spec.resources),
        "env": spec.env,
        "internet_access": spec.internet_access,
        "hostname": spec.hostname,
        "binds": [[str(h), t] for h, t in spec.binds],
        "volumes": [[str(h), t] for h, t in spec.volumes],
        "egress": asdict(spec.egress) if spec.egress is not None else None,
    }


def spec_from_dict(d: dict[str, Any]) -> SandboxSpec:
    im = d["image"]
    image = TemplateImage(
        name=im["name"], layers=tuple(Path(p) for p in im["layers"]), content_hash=im["content_hash"],
        env=im.get("env") or {}, workdir=im.get("workdir") or "/workspace", user=im.get("user") or "root",
        start_cmd=im.get("start_cmd"),
        ready_check=ReadyCheck(**im["ready_check"]) if im.get("ready_check") else None,
        agent_runtime=Path(im["agent_runtime"]) if im.get("agent_runtime") else None,
    )
    return SandboxSpec(
        id=d["id"], image=image, resources=Resources(**d["resources"]), env=d.get("env") or {},
        internet_access=bool(d.get("internet_access")), hostname=d.get("hostname"),
        binds=tuple((Path(h), t) for h, t in d.get("binds") or ()),
        volumes=tuple((Path(h), t) for h, t in d.get("volumes") or ()),
        egress=Egress.from_dict(d["egress"]) if d.get("egress") else None,
    )


@dataclass
class Record:
    id: str
    runtime: str
    status: str  # creating | running | paused | stopped
    spec: dict[str, Any]
    net: dict[str, Any] | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sandbox_spec(self) -> SandboxSpec:
        return spec_from_dict(self.spec)

    def save(self, sandbox_dir: Path) -> None:
        tmp = sandbox_dir / ".state.json.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, sandbox_dir / "state.json")

    @classmethod
    def load(cls, sandbox_dir: Path) -> "Record | None":
        try:
            return cls(**json.loads((sandbox_dir / "state.json").read_text()))
        except (OSError, ValueError, TypeError):
            return None

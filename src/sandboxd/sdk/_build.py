"""Template builds from a directory holding a Dockerfile (translated by sdk/_dockerfile.py), over the HopX
build API (docs/clients/hopx.md §4): upload the COPY sources once per content
hash, trigger the build, follow its log and status until it ends."""
from __future__ import annotations

import hashlib
import io
import tarfile
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from ._dockerfile import Recipe, parse_dockerfile
from ._errors import InvalidRequestError, NetworkError, TemplateBuildError

RECIPE_NAMES = ("sandboxd.Dockerfile", "Dockerfile")
TERMINAL = {"active", "success", "failed", "error", "completed", "cancelled"}


def parse_recipe(text: str, build_args: dict[str, str] | None = None) -> Recipe:
    """A Dockerfile → the build request's steps (sdk/_dockerfile.py); unsupported input names its line."""
    return parse_dockerfile(text, build_args)


def copy_archive(context: Path, sources: list[str]) -> tuple[bytes, str]:
    """A tar.gz of the COPY sources (context-relative member names, sorted, fixed mtimes so the same
    content always gives the same archive) and its sha256, the content key the server caches on."""
    files: list[Path] = []
    for src in sources:
        p = (context / src).resolve()
        if not p.is_relative_to(context.resolve()):
            raise InvalidRequestError(f"COPY source {src} is outside the build directory")
        if not p.exists():
            matches = sorted(context.glob(src))
            if not matches:
                raise InvalidRequestError(f"COPY source {src} does not exist in {context}")
            files += [m for m in matches]
        else:
            files.append(p)
    members: list[Path] = []
    for f in files:
        members += sorted(x for x in f.rglob("*") if x.is_file()) if f.is_dir() else [f]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for m in sorted(set(members)):
            info = tar.gettarinfo(str(m), arcname=str(m.resolve().relative_to(context.resolve())))
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            with open(m, "rb") as fh:
                tar.addfile(info, fh)
    data = buf.getvalue()
    digest = hashlib.sha256()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for entry in tar.getmembers():
            digest.update(entry.name.encode() + b"\0" + str(entry.mode).encode() + b"\0")
            content = tar.extractfile(entry)
            if content:
                digest.update(content.read())
    return data, digest.hexdigest()


def find_recipe(directory: Path) -> Path:
    for name in RECIPE_NAMES:
        if (directory / name).is_file():
            return directory / name
    raise InvalidRequestError(f"no {' or '.join(RECIPE_NAMES)} in {directory}")


def build_template(client: Any, directory: str | Path, name: str, *, cpu: int = 2, memory_mb: int = 2048,
                   disk_gb: int = 10, update: bool = False, skip_cache: bool = False,
                   build_args: dict[str, str] | None = None, on_log: Callable[[str], None] | None = None,
                   on_progress: Callable[[int, str | None], None] | None = None,
                   poll: float = 1.0, timeout: float = 3600) -> dict[str, Any]:
    """Build template `name` from `directory`; `build_args` are the Dockerfile's ARG values (as
    `--build-arg`). Returns the final build status; raises TemplateBuildError if the build fails."""
    context = Path(directory)
    recipe = parse_recipe(find_recipe(context).read_text(), build_args)
    http = client.http
    for copy in recipe.copies:
        data, files_hash = copy_archive(context, copy.sources)
        copy.step["filesHash"] = files_hash
        link = http.json("POST", "/v1/templates/files/upload-link",
                         json={"files_hash": files_hash, "content_length": len(data)})
        if not link.get("present") and link.get("upload_url"):
            try:
                r = httpx.put(link["upload_url"], content=data, trust_env=False, timeout=300,
                              headers={"Content-Type": "application/gzip"})
            except httpx.HTTPError as e:
                raise NetworkError(f"upload of COPY sources failed: {e}") from None
            if r.status_code >= 300:
                raise TemplateBuildError(f"upload of COPY sources failed: HTTP {r.status_code}",
                                         status_code=r.status_code)
    if skip_cache:
        for s in recipe.steps:
            s["skipCache"] = True
    body = {"name": name, "from_image": recipe.from_image, "steps": recipe.steps, "startCmd": recipe.start_cmd,
            "readyCmd": recipe.ready_cmd, "cpu": cpu, "memory": memory_mb, "diskGB": disk_gb, "skipCache": skip_cache,
            "update": update}
    build = http.json("POST", "/v1/templates/build", json=body)
    build_id, template_id = str(build["build_id"]), str(build["template_id"])
    offset: Any = 0
    deadline = time.monotonic() + timeout
    while True:
        if on_log:
            logs = http.json("GET", f"/v1/templates/build/{template_id}/logs", params={"offset": offset})
            text = logs.get("logs") or ""
            for line in text.splitlines():
                on_log(line)
            offset = logs.get("offset", offset)
        status = http.json("GET", f"/v1/templates/build/{build_id}/status")
        if on_progress:
            on_progress(int(status.get("progress") or 0), status.get("current_step"))
        if status.get("status") in TERMINAL:
            if on_log:  # the tail written between the last log read and the end
                logs = http.json("GET", f"/v1/templates/build/{template_id}/logs", params={"offset": offset})
                for line in (logs.get("logs") or "").splitlines():
                    on_log(line)
            break
        if time.monotonic() > deadline:
            raise TemplateBuildError(f"build {build_id} did not finish within {timeout}s", code="build_timeout")
        time.sleep(poll)
    if status.get("status") not in ("active", "success", "completed"):
        raise TemplateBuildError(status.get("error_message") or f"build {build_id} {status.get('status')}",
                                 code="build_failed", details={"build_id": build_id, "template_id": template_id})
    return {**status, "template_id": template_id, "build_id": build_id}

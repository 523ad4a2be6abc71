"""FROM an image in a container registry the operator named: skopeo copies it into an OCI layout, and the OCI
import (oci_import.py) unpacks it like an uploaded archive.

The platform contacts no registry nobody configured: `SANDBOXD_REGISTRIES` lists the registries builds may
pull from (`host[:port]`, comma-separated), `SANDBOXD_DEFAULT_REGISTRY` (one of them) is where a short name
such as `ubuntu:22.04` resolves (as `library/ubuntu:22.04`, Docker Hub's convention), and
`SANDBOXD_INSECURE_REGISTRIES` those spoken to over plain HTTP or without TLS verification (a registry on
loopback). Credentials come from `SANDBOXD_REGISTRY_AUTH_FILE` (containers-auth.json, as `skopeo login`
writes it). A reference to any other registry is not a registry pull (it falls through to the built-in
aliases, or is unknown).
"""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

from sandboxd.errors import BuildFailed

PULL_TIMEOUT = 1800.0
PASSED_ENV = {"PATH", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
              "SSL_CERT_FILE", "SSL_CERT_DIR"}
# reference = [registry "/"] path [":" tag] ["@" digest]; the registry part is recognised the way Docker does:
# it has a "." or a ":" or is "localhost".
REF_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")


def _hosts(text: str) -> list[str]:
    return [h.strip().lower() for h in (text or "").split(",") if h.strip()]


def source(settings, ref: str) -> str | None:
    """The `docker://` source to pull for ref, or None when ref names no registry the operator allows."""
    ref = ref.strip()
    if not REF_RE.match(ref) or ".." in ref or "//" in ref:
        return None
    allowed = _hosts(settings.registries)
    first, slash, rest = ref.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{ref}" if first.lower() in allowed else None
    default = (settings.default_registry or "").strip().lower()
    if not default or default not in allowed:
        return None
    path = ref if slash else f"library/{ref}"
    return f"docker://{default}/{path}"


def alias(settings, ref: str) -> str | None:
    """The local template the operator's SANDBOXD_IMAGE_ALIASES builds ref from (any tag or digest of its
    repository), or None."""
    from sandboxd.config import parse_aliases

    name = ref.strip().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repo = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return parse_aliases(settings.image_aliases).get(repo.lower().removeprefix("docker.io/").removeprefix("library/"))


def tag_of(src: str) -> str:
    """The tag under which the pulled image is stored in the layout ("latest" when the reference has none)."""
    name = src.removeprefix("docker://").split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else "latest"


async def pull(settings, src: str, layout: Path, log) -> str:
    """Copy src into the OCI layout directory `layout`; returns the tag it is stored under."""
    if shutil.which("skopeo") is None:
        raise BuildFailed("skopeo is not installed (scripts/install.sh installs it)")
    host = src.removeprefix("docker://").split("/", 1)[0].lower()
    tag = tag_of(src)
    argv = ["skopeo", "copy", "--quiet", "--retry-times", "2"]
    if host in _hosts(settings.insecure_registries):
        argv.append("--src-tls-verify=false")
    if settings.registry_auth_file:
        argv += ["--src-authfile", str(settings.registry_auth_file)]
    argv += [src, f"oci:{layout}:{tag}"]
    log(f"FROM {src.removeprefix('docker://')}: pulling with skopeo")
    # The operator's proxy and CA settings pass; no user's registry configuration or credentials do.
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env.setdefault("PATH", "/usr/bin:/bin")
    env["HOME"] = "/nonexistent"
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), PULL_TIMEOUT)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildFailed(f"pulling {src.removeprefix('docker://')} took longer than {PULL_TIMEOUT:.0f}s") from None
    if proc.returncode != 0:
        text = out.decode(errors="replace").replace(str(layout), "<layout>").strip()[-800:]
        raise BuildFailed(f"pulling {src.removeprefix('docker://')} failed: {text}")
    return tag

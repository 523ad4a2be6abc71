"""COPY --from: files of another image (an earlier build stage, or a template) as a build context.

An earlier stage's layers were written by the build's own code, so the host never walks them. A build
sandbox of that image packs the named paths into a tar at its root (its own `tar`, inside the sandbox's
isolation and limits); the host takes that one file out of the frozen sandbox's upper dir (opened without
following symlinks, a regular file, size capped) and unpacks it with the same filtered extraction as an
uploaded context (context.materialize): no absolute paths, `..`, device files or links out of the tree.
"""
from __future__ import annotations

import glob
import asyncio
import os
import stat
import tarfile
import uuid
from pathlib import Path

from sandboxd.errors import BuildFailed, Invalid, SandboxdError
from sandboxd.runtime import inroot
from sandboxd.runtime.base import Resources, SandboxSpec, TemplateImage

MAX_BYTES = 2 * 1024 * 1024 * 1024  # as an uploaded context
EXPORT_TIMEOUT = 600.0


def roots(sources: str) -> list[str]:
    """The paths to pack for a COPY's comma-joined sources: each source up to its first glob component
    (the glob itself is matched on the unpacked copy, as for an uploaded context)."""
    out: list[str] = []
    for src in [s.strip() for s in sources.split(",") if s.strip()]:
        parts = [p for p in src.split("/") if p and p != "."]
        fixed: list[str] = []
        for part in parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        if not fixed or ".." in fixed:
            raise Invalid(f"COPY --from source {src!r} must name a path below / (a glob only after a directory)")
        out.append("/".join(fixed))
    return out


def _take(upper: Path, name: str, dest: Path) -> None:
    """Copy the sandbox-made file upper/name to dest: a regular file reached without any symlink, capped."""
    try:
        fd = inroot.open_in(upper, name, resolve=inroot.RESOLVE_BENEATH | inroot.RESOLVE_NO_SYMLINKS)
    except OSError:
        raise BuildFailed("COPY --from: the source image's tar did not produce its archive") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            raise BuildFailed(f"COPY --from: the files to copy are not a regular archive under {MAX_BYTES} bytes")
        with os.fdopen(os.dup(fd), "rb") as src, open(dest, "wb") as out:
            copied = 0
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > MAX_BYTES:
                    raise BuildFailed(f"COPY --from: the files to copy exceed {MAX_BYTES} bytes")
                out.write(chunk)
    finally:
        os.close(fd)


async def export(backend, image: TemplateImage, sources: str, dest: Path, resources: Resources | None,
                 log) -> None:
    """Write to dest (a host file) a tar of the paths `sources` names inside image, made in a build sandbox."""
    paths = roots(sources)
    sid = f"build-{uuid.uuid4().hex[:12]}"
    name = f".sandboxd-from-{uuid.uuid4().hex[:8]}.tar"
    spec = SandboxSpec(id=sid, image=image, env=dict(image.env), resources=resources or Resources())
    try:
        sandbox = await backend.create(spec)
        result = await backend.exec(sid, ["/bin/sh", "-c", 'cd / && exec tar -cf "/$0" -- "$@"', name, *paths],
                                    user="root", timeout=EXPORT_TIMEOUT)
        if result.timed_out or result.exit_code != 0:
            text = (result.stdout + result.stderr).decode(errors="replace")[-2000:]
            raise BuildFailed(f"COPY --from: packing {', '.join(paths)} in the source image failed: {text.strip()}")
        try:
            await backend.pause(sid)  # nothing may swap the archive while the host reads it
        except SandboxdError as exc:
            raise BuildFailed(f"could not freeze the build sandbox to copy its files: {exc.message}") from None
        if sandbox.upper_dir is None:
            raise BuildFailed(f"backend {backend.capabilities.name!r} does not expose a sandbox's changes")
        await asyncio.to_thread(_take, sandbox.upper_dir, name, dest)
    finally:
        try:
            await backend.destroy(sid)
        except SandboxdError as exc:
            log(f"warning: could not destroy build sandbox {sid}: {exc}")


def unpack_archives(entries: list[Path], scratch: Path) -> list[Path]:
    """ADD's rule: a local tar archive (plain, gzip, bzip2 or xz) is unpacked at the destination, anything
    else copied as it is. Unpacked with the uploaded context's filtered extraction."""
    from sandboxd.templates import context

    out: list[Path] = []
    for entry in entries:
        if entry.is_file() and not entry.is_symlink() and tarfile.is_tarfile(entry):
            out.append(context.materialize(entry, scratch / f"add-{uuid.uuid4().hex[:8]}"))
        else:
            out.append(entry)
    return out

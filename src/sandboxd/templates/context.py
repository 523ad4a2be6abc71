"""COPY steps: the uploaded build context (a directory or a tar/tar.gz), its content hash, and the copy.

The client's own files_hash depends on mtimes (docs/clients/hopx.md §4), so the layer cache keys COPY steps
by a hash of what is actually copied: relative paths, modes and bytes.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import tarfile
from pathlib import Path

from sandboxd.errors import Invalid


def materialize(context: Path, scratch: Path) -> Path:
    """A directory holding the context: the directory itself, or a tarball safely extracted into scratch."""
    if context.is_dir():
        return context
    if not context.is_file():
        raise Invalid("the build context was not uploaded", code="files_not_uploaded")
    dest = scratch / "context"
    if dest.is_dir():
        return dest
    dest.mkdir(parents=True)
    outward: list[tuple[str, str]] = []

    def keep_outward_symlinks(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        # The "data" filter refuses absolute paths, '..', links out of the tree and device files. A symlink
        # pointing out of the context is still a file a COPY copies as it is (Docker's and E2B's COPY keep
        # symlinks): it is made last, when no other member can be written through it.
        try:
            return tarfile.data_filter(member, path)
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            if not member.issym():
                raise
            outward.append((member.name, member.linkname))
            return None

    try:
        with tarfile.open(context) as tar:
            tar.extractall(dest, filter=keep_outward_symlinks)
        for name, target in outward:
            _symlink_inside(dest, name, target)
    except tarfile.FilterError as exc:
        raise Invalid(f"build context member {exc.tarinfo.name!r} cannot be unpacked safely",
                      code="invalid_context") from None
    except (tarfile.TarError, OSError) as exc:  # the message of an OSError would name the host's scratch dir
        raise Invalid(f"build context is not a readable tar archive ({type(exc).__name__})",
                      code="invalid_context") from None
    return dest


def _symlink_inside(dest: Path, name: str, target: str) -> None:
    """Make dest/name a symlink to target (never followed here), refusing a name whose parent leaves dest."""
    link = dest / name.lstrip("/")
    root = os.path.realpath(dest)
    parent = os.path.realpath(link.parent)
    if (parent != root and not parent.startswith(root + os.sep)) or os.path.lexists(link):
        raise Invalid(f"build context member {name!r} cannot be unpacked safely", code="invalid_context")
    os.makedirs(parent, exist_ok=True)
    os.symlink(target, os.path.join(parent, link.name))


def matches(ctx: Path, sources: str) -> list[Path]:
    """The context entries named by a COPY step's comma-joined sources (globs relative to the context)."""
    out: list[Path] = []
    root = ctx.resolve()
    for src in [s.strip() for s in sources.split(",") if s.strip()]:
        rel = src.lstrip("/")
        found = sorted(glob.glob(rel or ".", root_dir=root)) if glob.has_magic(rel) else (
            [rel or "."] if os.path.lexists(root / rel) else [])
        if not found:
            raise Invalid(f"COPY source {src!r} is not in the build context", code="copy_source_missing")
        for f in found:
            path = (root / f).resolve() if not (root / f).is_symlink() else root / f
            if root != path and root not in path.parents:
                raise Invalid(f"COPY source {src!r} leaves the build context")
            out.append(root / f)
    return out


def content_hash(entries: list[Path], ctx: Path) -> str:
    h = hashlib.sha256()
    for entry in entries:
        walk = [entry] if not entry.is_dir() or entry.is_symlink() else [entry, *sorted(entry.rglob("*"))]
        for p in walk:
            st = os.lstat(p)
            h.update(f"{p.relative_to(ctx)}\0{stat.S_IMODE(st.st_mode)}\0{stat.S_IFMT(st.st_mode)}\0".encode())
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
            elif stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(p).encode())
        h.update(b"\1")
    return h.hexdigest()


def copy_into(entries: list[Path], dest_dir: Path, dest_is_dir: bool, owner: tuple[int, int],
              mode: int | None) -> None:
    """Copy entries to dest_dir (a host path inside the new layer): directories by their contents, files by
    name (or as dest itself when dest is a file path). Owner and mode are host values."""
    def fix(p: Path) -> None:
        os.lchown(p, *owner)
        if mode is not None and not p.is_symlink() and p.is_file():
            os.chmod(p, mode)

    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            dest_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(entry, dest_dir, symlinks=True, dirs_exist_ok=True)
            for p in [*dest_dir.rglob("*")]:
                fix(p)
        else:
            target = dest_dir / entry.name if dest_is_dir else dest_dir
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir() and not target.is_symlink():
                target = target / entry.name
            shutil.copy2(entry, target, follow_symlinks=False)
            fix(target)

"""Volumes (docs/e2b.md#volumes): a team's persistent directories that its sandboxes mount read-write.

A volume's files live under `<data_dir>/volumes/<id>/`, never a path a user names. They keep the template
store's id convention (host uid_base + n for a sandbox's uid n, runtime/rootfs.py), so a file one sandbox
wrote shows the same owner in the next sandbox that mounts the volume, whichever host uid range each runs in.
Another team's volume is a 404, like one that does not exist. The content API's token is an HMAC of the
volume's id: it opens that volume only, and it is the same on every GET, as E2B's is.
"""
from __future__ import annotations

import builtins
import hashlib
import hmac
import os
import posixpath
import re
import secrets
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sandboxd.core.models import KILLED
from sandboxd.core.store.db import Store
from sandboxd.core.store.tables import SandboxRow, VolumeRow
from sandboxd.core.volumefs import Ids, VolumeFiles
from sandboxd.errors import Conflict, Invalid, NotFound, Unauthorized

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ID_RE = re.compile(r"^vol[0-9a-f]{18}$")
OWNER_UID = 1000  # the built-in templates' `user` (templates/bases.py): a volume's root is theirs to write
MAX_MOUNTS = 16
MAX_PATH = 1024
# Where a volume must not go: the system's own dirs (a volume there would shadow what the sandbox runs on),
# the agent's (/opt/sandboxd), and any dir above one of them.
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
               "/boot", "/run", "/var/run", "/var/lib/dpkg", "/opt/sandboxd")


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    team_id: str
    created_at: datetime


@dataclass(frozen=True)
class Mount:
    """A volume at a path in a sandbox, as stored on the sandbox's row."""

    volume_id: str
    name: str
    path: str

    def to_dict(self) -> dict[str, str]:
        return {"volume_id": self.volume_id, "name": self.name, "path": self.path}


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid("volume name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
                      code="invalid_volume_name")
    return name


def check_mount_path(path: Any) -> str:
    """An absolute, normalised path that is neither / nor a system dir, nor inside or above one."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\0" in path:
        raise Invalid("volume mount path must be a non-empty path", code="invalid_mount_path")
    if not path.startswith("/") or posixpath.normpath(path) != path or path.startswith("//"):
        raise Invalid(f"volume mount path {path!r} must be absolute and normalised (no '.', '..', '//' or "
                      "trailing '/')", code="invalid_mount_path")
    if path == "/":
        raise Invalid("a volume cannot be mounted at /", code="invalid_mount_path")
    for d in SYSTEM_DIRS:
        if _within(path, d) or _within(d, path):
            raise Invalid(f"a volume cannot be mounted at {path}: it would cover {d}", code="invalid_mount_path")
    return path


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + "/")


def volume_dir(data_dir: Path, volume_id: str) -> Path:
    if not ID_RE.match(volume_id):
        raise NotFound(f"volume {volume_id} not found", code="volume_not_found")
    return Path(data_dir) / "volumes" / volume_id


def require_volumes(s: Session, mounts: Iterable[Mount]) -> None:
    """In the transaction that stores a sandbox: its volumes still exist. Delete checks for users and removes
    the row in one transaction too, with no await in either, so the two never interleave in one process."""
    ids = {m.volume_id for m in mounts}
    if ids:
        found = set(s.scalars(select(VolumeRow.id).where(VolumeRow.id.in_(ids))))
        for m in mounts:
            if m.volume_id not in found:
                raise Invalid(f"volume {m.name!r} does not exist", code="volume_not_found")


def _model(r: VolumeRow) -> Volume:
    return Volume(id=r.id, name=r.name, team_id=r.team_id, created_at=r.created_at)


class VolumeService:
    def __init__(self, store: Store, data_dir: Path, secret: bytes, uid_base: int, uid_count: int):
        self.store = store
        self.data_dir = Path(data_dir)
        self._secret = secret
        self.uid_base, self.uid_count = uid_base, uid_count

    def dir(self, volume_id: str) -> Path:
        return volume_dir(self.data_dir, volume_id)

    def token(self, volume_id: str) -> str:
        return "vt_" + hmac.new(self._secret, b"volume:" + volume_id.encode(), hashlib.sha256).hexdigest()

    def check_token(self, volume_id: str, token: str | None) -> Volume:
        """The volume this token opens: only the one it was made for (401 otherwise, 404 if it is gone)."""
        if not token or not hmac.compare_digest(self.token(volume_id).encode(), token.encode("utf-8", "replace")):
            raise Unauthorized("this token does not open this volume", code="invalid_volume_token")
        return self.get(volume_id)

    def files(self, volume_id: str, token: str | None) -> VolumeFiles:
        """The content of the volume this token opens (check_token), to work on off the event loop."""
        vol = self.check_token(volume_id, token)
        return VolumeFiles(self.dir(vol.id), Ids(self.uid_base, self.uid_count), OWNER_UID)

    def create(self, team: str, name: Any) -> Volume:
        check_name(name)
        vid = "vol" + secrets.token_hex(9)
        d = self.dir(vid)
        d.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(d.parent, 0o700)  # only host root walks into volumes: sandboxes' files keep their ids here
        d.mkdir(mode=0o755)
        try:
            os.chown(d, self.uid_base + OWNER_UID, self.uid_base + OWNER_UID)
        except PermissionError:
            pass  # not root: only the fake backend runs here, its sandboxes as this very user
        try:
            with self.store.tx() as s:
                if s.scalar(select(VolumeRow.id).where(VolumeRow.team_id == team, VolumeRow.name == name)):
                    raise Conflict(f"a volume named {name!r} already exists", code="volume_exists")
                row = VolumeRow(id=vid, team_id=team, name=name, created_at=datetime.now(timezone.utc))
                s.add(row)
                vol = _model(row)
        except IntegrityError:  # the same name created at once by another request
            d.rmdir()
            raise Conflict(f"a volume named {name!r} already exists", code="volume_exists") from None
        except BaseException:
            d.rmdir()
            raise
        return vol

    def list(self, team: str | None) -> list[Volume]:
        q = select(VolumeRow).order_by(VolumeRow.created_at, VolumeRow.id)
        if team is not None:
            q = q.where(VolumeRow.team_id == team)
        with self.store.tx() as s:
            return [_model(r) for r in s.scalars(q)]

    def get(self, volume_id: str, team: str | None = None) -> Volume:
        """`team`: the caller's (None: the operator, every team's); another team's volume is a 404."""
        with self.store.tx() as s:
            row = s.get(VolumeRow, volume_id)
            if row is None or team not in (None, row.team_id):
                raise NotFound(f"volume {volume_id} not found", code="volume_not_found")
            return _model(row)

    def by_name(self, name: str, team: str) -> Volume:
        with self.store.tx() as s:
            row = s.scalar(select(VolumeRow).where(VolumeRow.team_id == team, VolumeRow.name == name))
            if row is None:
                raise Invalid(f"volume {name!r} does not exist", code="volume_not_found")
            return _model(row)

    def delete(self, volume_id: str, team: str | None = None) -> None:
        self.remove_files(self.forget(volume_id, team).id)

    def forget(self, volume_id: str, team: str | None = None) -> Volume:
        """Delete the volume's row, refused while a sandbox that is not killed mounts it (E2B's paused ones
        too: they resume with it); its files go with remove_files()."""
        vol = self.get(volume_id, team)
        with self.store.tx() as s:
            users = [sid for sid, mounts in s.execute(
                select(SandboxRow.id, SandboxRow.volume_mounts).where(
                    SandboxRow.status != KILLED, SandboxRow.volume_mounts.is_not(None)))
                if any(m.get("volume_id") == vol.id for m in mounts or ())]
            if users:
                raise Conflict(f"volume {vol.name} is mounted by sandbox(es) {', '.join(sorted(users))}",
                               code="volume_in_use", details={"sandboxes": sorted(users)})
            row = s.get(VolumeRow, vol.id)
            if row is not None:
                s.delete(row)
        return vol

    def remove_files(self, volume_id: str) -> None:
        shutil.rmtree(self.dir(volume_id), ignore_errors=True)

    def resolve(self, team: str, mounts: builtins.list[tuple[Any, Any]]) -> builtins.list[Mount]:
        """(name, path) pairs of a create -> the team's volumes at checked, non-overlapping paths."""
        if len(mounts) > MAX_MOUNTS:
            raise Invalid(f"at most {MAX_MOUNTS} volume mounts", code="invalid_mount_path")
        out: builtins.list[Mount] = []
        for name, path in mounts:
            path = check_mount_path(path)
            for m in out:
                if _within(path, m.path) or _within(m.path, path):
                    raise Invalid(f"volume mount paths {m.path} and {path} overlap", code="invalid_mount_path")
            vol = self.by_name(check_name(name), team)
            out.append(Mount(vol.id, vol.name, path))
        return out

    def count(self, team: str) -> int:
        with self.store.tx() as s:
            return s.scalar(select(func.count()).select_from(VolumeRow).where(VolumeRow.team_id == team)) or 0

"""envd's filesystem.Filesystem service: stat, list, mkdir, move, remove, and directory watchers
(streamed for the async SDK, polled through CreateWatcher/GetWatcherEvents for the sync SDK).

Watching reuses the agent's inotify watcher (agent/watch.py); events are reported with the path
relative to the watched directory, as envd does.
"""
from __future__ import annotations

import asyncio
import errno
import grp
import os
import pwd
import shutil
import stat
import uuid
from datetime import datetime, timezone
from typing import AsyncIterator

from sandboxd.errors import Conflict, Forbidden, Invalid, NotFound, SandboxdError

from ..watch import Watcher
from . import users

EVENT_TYPES = {"created": "EVENT_TYPE_CREATE", "modified": "EVENT_TYPE_WRITE", "deleted": "EVENT_TYPE_REMOVE",
               "renamed": "EVENT_TYPE_RENAME", "chmod": "EVENT_TYPE_CHMOD"}
MAX_PENDING = 10000
MAX_LIST = 100000


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def entry_info(path: str, st: os.stat_result | None = None) -> dict:
    st = st or os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        ftype = "FILE_TYPE_SYMLINK"
    elif stat.S_ISDIR(st.st_mode):
        ftype = "FILE_TYPE_DIRECTORY"
    else:
        ftype = "FILE_TYPE_FILE"
    info = {
        "name": os.path.basename(path) or "/", "type": ftype, "path": path, "size": str(st.st_size),
        "mode": stat.S_IMODE(st.st_mode) | (0o20000000000 if stat.S_ISDIR(st.st_mode) else 0),
        "permissions": stat.filemode(st.st_mode), "owner": _owner(st.st_uid), "group": _group(st.st_gid),
        "modifiedTime": datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z"),
    }
    if ftype == "FILE_TYPE_SYMLINK":
        info["isSymlink"] = True
        try:
            target = os.path.realpath(path)
            info["symlinkTarget"] = target
            tst = os.stat(path)
            # envd reports a symlink by what it points to, flagged as a symlink.
            info["type"] = "FILE_TYPE_DIRECTORY" if stat.S_ISDIR(tst.st_mode) else "FILE_TYPE_FILE"
        except OSError:
            pass
    return info


def _os_error(e: OSError, path: str) -> SandboxdError:
    if isinstance(e, FileNotFoundError):
        return NotFound(f"path '{path}' does not exist")
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:  # a read-only mount refuses like a permission
        return Forbidden(f"{'read-only file system' if e.errno == errno.EROFS else 'permission denied'}: '{path}'")
    if isinstance(e, FileExistsError):
        return Conflict(f"path '{path}' already exists")
    if isinstance(e, NotADirectoryError):
        return Invalid(f"path '{path}' is not a directory")
    return SandboxdError(f"{path}: {e.strerror or e}")


class WatchHandle:
    def __init__(self, root: str, recursive: bool):
        self.root, self.recursive = root, recursive
        self.watcher = Watcher(root, recursive)
        self.events: list[dict] = []

    def events_for(self, kind: str, path: str, include_entry: bool) -> list[dict]:
        """The event, plus CREATE for whatever already sits inside a new directory: files made right
        after their directory land before its inotify watch exists, and would otherwise be missed."""
        out = [self.event(kind, path, include_entry)]
        if kind == "created" and self.recursive and os.path.isdir(path) and not os.path.islink(path):
            for dirpath, dirnames, filenames in os.walk(path):
                for n in dirnames + filenames:
                    out.append(self.event("created", os.path.join(dirpath, n), include_entry))
                    if len(out) > 1000:
                        return out
        return out

    def event(self, kind: str, path: str, include_entry: bool) -> dict:
        name = os.path.relpath(path, self.root)
        ev: dict = {"name": name, "type": EVENT_TYPES.get(kind, "EVENT_TYPE_WRITE")}
        if include_entry and kind != "deleted":
            try:
                ev["entry"] = entry_info(path)
            except OSError:
                pass
        return ev

    def close(self) -> None:
        self.watcher.close()


class FilesystemService:
    def __init__(self) -> None:
        self.watchers: dict[str, WatchHandle] = {}
        self._drains: dict[str, asyncio.Task] = {}

    def stat(self, path: str) -> dict:
        try:
            return entry_info(path)
        except OSError as e:
            raise _os_error(e, path) from None

    def list_dir(self, path: str, depth: int) -> list[dict]:
        depth = max(1, depth or 1)
        try:
            st = os.stat(path)
        except OSError as e:
            raise _os_error(e, path) from None
        if not stat.S_ISDIR(st.st_mode):
            raise Invalid(f"path '{path}' is not a directory")
        out: list[dict] = []

        def walk(d: str, level: int) -> None:
            try:
                items = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                if d == path:
                    raise _os_error(e, d) from None
                return
            for item in items:
                if len(out) >= MAX_LIST:
                    return
                try:
                    out.append(entry_info(item.path, item.stat(follow_symlinks=False)))
                except OSError:
                    continue
                if level < depth and item.is_dir(follow_symlinks=False):
                    walk(item.path, level + 1)

        walk(path, 1)
        return out

    def make_dir(self, path: str, user: users.User) -> dict:
        if os.path.lexists(path):
            if os.path.isdir(path):
                raise Conflict(f"directory '{path}' already exists")
            raise Invalid(f"path '{path}' already exists and is not a directory")
        try:
            users.makedirs(path, user)
        except OSError as e:
            raise _os_error(e, path) from None
        return entry_info(path)

    def move(self, source: str, destination: str, user: users.User) -> dict:
        if not os.path.lexists(source):
            raise NotFound(f"path '{source}' does not exist")
        try:
            users.makedirs(os.path.dirname(destination), user)
            os.rename(source, destination)
        except OSError as e:
            if getattr(e, "errno", None) == 18:  # EXDEV: another filesystem
                shutil.move(source, destination)
            else:
                raise _os_error(e, destination) from None
        return entry_info(destination)

    def remove(self, path: str) -> None:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError as e:
            raise _os_error(e, path) from None

    # ---- watching ---------------------------------------------------------------------------------

    def _open(self, path: str, recursive: bool) -> WatchHandle:
        try:
            st = os.stat(path)
        except OSError as e:
            raise _os_error(e, path) from None
        if not stat.S_ISDIR(st.st_mode):
            raise Invalid(f"path '{path}' is not a directory")
        try:
            return WatchHandle(path, recursive)
        except OSError as e:
            raise SandboxdError(f"cannot watch '{path}': {e}") from None

    async def watch(self, path: str, recursive: bool, include_entry: bool, keepalive: float
                    ) -> AsyncIterator[dict]:
        h = self._open(path, recursive)
        try:
            yield {"start": {}}
            while True:
                try:
                    kind, p = await asyncio.wait_for(h.watcher.next(), keepalive)
                except asyncio.TimeoutError:
                    yield {"keepalive": {}}
                    continue
                for ev in h.events_for(kind, p, include_entry):
                    yield {"filesystem": ev}
        finally:
            h.close()

    def create_watcher(self, path: str, recursive: bool, include_entry: bool) -> str:
        h = self._open(path, recursive)
        wid = uuid.uuid4().hex
        self.watchers[wid] = h
        self._drains[wid] = asyncio.get_running_loop().create_task(self._drain(h, include_entry))
        return wid

    async def _drain(self, h: WatchHandle, include_entry: bool) -> None:
        while True:
            kind, p = await h.watcher.next()
            if len(h.events) < MAX_PENDING:
                h.events.extend(h.events_for(kind, p, include_entry))

    def watcher_events(self, wid: str) -> list[dict]:
        h = self.watchers.get(wid)
        if h is None:
            raise NotFound(f"watcher with id {wid} not found")
        events, h.events = h.events, []
        return events

    def remove_watcher(self, wid: str) -> None:
        h = self.watchers.pop(wid, None)
        if h is None:
            raise NotFound(f"watcher with id {wid} not found")
        task = self._drains.pop(wid, None)
        if task:
            task.cancel()
        h.close()

"""File operations on the sandbox's own filesystem (no HTTP here; routes/files.py translates).

Relative paths are taken from the workspace directory. Pseudo-filesystems (/proc, /sys, /dev) are
read-only to the API: writes there are PATH_NOT_ALLOWED.
"""
from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from datetime import datetime, timezone
from typing import AsyncIterator, Iterator

from .errors import (AgentError, DirectoryNotFound, FileExists, FileNotFound, InvalidPath, InvalidRequest,
                     MissingParameter, PathNotAllowed, PermissionDenied)

READ_TEXT_LIMIT = 64 * 1024 * 1024
CHUNK = 1024 * 1024
PROTECTED = ("/proc", "/sys", "/dev")


class Files:
    def __init__(self, workspace: str = "/workspace"):
        self.workspace = workspace

    def resolve(self, path: str | None, *, writing: bool = False) -> str:
        if path is None or path == "":
            raise MissingParameter("missing parameter: path", path=path or "")
        if "\x00" in path:
            raise InvalidPath("path contains a NUL byte", path=path)
        full = os.path.normpath(path if path.startswith("/") else os.path.join(self.workspace, path))
        if full.startswith("//"):
            full = full[1:]
        if writing and (full == "/" or any(full == p or full.startswith(p + "/") for p in PROTECTED)):
            raise PathNotAllowed(f"path not allowed: {full}", path=full)
        return full

    # ---- reading
    def read_text(self, path: str) -> dict:
        full = self.resolve(path)
        st = self._stat_file(full)
        if st.st_size > READ_TEXT_LIMIT:
            raise InvalidRequest(f"file too large for /files/read ({st.st_size} bytes); use /files/download",
                                 path=full)
        with _open(full, "rb") as f:
            raw = f.read()
        try:
            return {"content": raw.decode("utf-8"), "path": full, "size": len(raw), "encoding": "utf-8"}
        except UnicodeDecodeError:
            return {"content": base64.b64encode(raw).decode(), "path": full, "size": len(raw),
                    "encoding": "base64"}

    def open_download(self, path: str) -> tuple[str, int, Iterator[bytes]]:
        full = self.resolve(path)
        st = self._stat_file(full)
        f = _open(full, "rb")

        def chunks() -> Iterator[bytes]:
            with f:
                while True:
                    data = f.read(CHUNK)
                    if not data:
                        return
                    yield data

        return full, st.st_size, chunks()

    def _stat_file(self, full: str) -> os.stat_result:
        try:
            st = os.stat(full)
        except FileNotFoundError:
            raise FileNotFound(f"file not found: {full}", path=full) from None
        except NotADirectoryError:
            raise FileNotFound(f"file not found: {full}", path=full) from None
        except PermissionError:
            raise PermissionDenied(f"permission denied: {full}", path=full) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidPath(f"is a directory: {full}", path=full)
        return st

    # ---- writing
    def write(self, path: str, content: str | bytes, *, encoding: str | None = None, mode: str | int | None = None,
              overwrite: bool = True) -> dict:
        full = self.resolve(path, writing=True)
        if isinstance(content, str):
            if (encoding or "").lower() == "base64":
                try:
                    data = base64.b64decode(content, validate=False)
                except (binascii.Error, ValueError) as e:
                    raise InvalidRequest(f"content is not valid base64: {e}", path=full) from None
            else:
                data = content.encode("utf-8")
        else:
            data = content
        if not overwrite and os.path.exists(full):
            raise FileExists(f"file already exists: {full}", path=full)
        self._parents(full)
        perm = parse_mode(mode)
        with _open(full, "wb") as f:
            try:
                f.write(data)
            except OSError as e:
                raise os_error(e, full) from None
        if perm is not None:
            _chmod(full, perm)
        return {"success": True, "path": full, "size": len(data), "message": "file written"}

    def open_upload(self, path: str, mode: str | int | None = None):
        """A writable binary file at `path` (parents created) for streamed uploads."""
        full = self.resolve(path, writing=True)
        self._parents(full)
        f = _open(full, "wb")
        perm = parse_mode(mode)
        if perm is not None:
            _chmod(full, perm)
        return full, f

    def _parents(self, full: str) -> None:
        parent = os.path.dirname(full)
        try:
            os.makedirs(parent, exist_ok=True)
        except FileExistsError:
            raise InvalidPath(f"parent is not a directory: {parent}", path=full) from None
        except OSError as e:
            raise os_error(e, parent) from None

    def mkdir(self, path: str, mode: str | int | None = None) -> dict:
        full = self.resolve(path, writing=True)
        try:
            os.makedirs(full, mode=parse_mode(mode) or 0o755, exist_ok=True)
        except FileExistsError:
            raise FileExists(f"a file exists at {full}", path=full) from None
        except OSError as e:
            raise os_error(e, full) from None
        return {"success": True, "path": full, "message": "directory created"}

    def remove(self, path: str, recursive: bool = True) -> dict:
        full = self.resolve(path, writing=True)
        try:
            if os.path.isdir(full) and not os.path.islink(full):
                if recursive:
                    import shutil

                    shutil.rmtree(full)
                else:
                    os.rmdir(full)
            else:
                os.unlink(full)
        except FileNotFoundError:
            raise FileNotFound(f"file not found: {full}", path=full) from None
        except OSError as e:
            if e.errno in _REFUSED:
                raise os_error(e, full) from None
            raise InvalidRequest(f"cannot remove {full}: {e.strerror}", path=full) from None
        return {"success": True, "path": full, "message": "removed"}

    # ---- metadata
    def exists(self, path: str) -> dict:
        full = self.resolve(path)
        ok = os.path.lexists(full)
        return {"exists": ok, "path": full, "is_directory": ok and os.path.isdir(full)}

    def list(self, path: str | None) -> dict:
        full = self.resolve(path or self.workspace)
        try:
            entries = list(os.scandir(full))
        except FileNotFoundError:
            raise DirectoryNotFound(f"directory not found: {full}", path=full) from None
        except NotADirectoryError:
            raise DirectoryNotFound(f"not a directory: {full}", path=full) from None
        except PermissionError:
            raise PermissionDenied(f"permission denied: {full}", path=full) from None
        files = []
        for e in sorted(entries, key=lambda e: e.name):
            try:
                files.append(file_info(e.path, e.stat(follow_symlinks=False)))
            except OSError:
                continue  # vanished while listing
        return {"files": files, "path": full, "count": len(files)}


def file_info(path: str, st: os.stat_result) -> dict:
    is_dir = stat.S_ISDIR(st.st_mode)
    modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    perms = stat.filemode(st.st_mode)
    return {
        "name": os.path.basename(path), "path": path, "size": st.st_size,
        "is_directory": is_dir, "is_dir": is_dir, "is_file": stat.S_ISREG(st.st_mode),
        "is_symlink": stat.S_ISLNK(st.st_mode),
        "permissions": perms, "mode": oct(stat.S_IMODE(st.st_mode)),
        "modified_time": modified, "modified": modified,
    }


def parse_mode(mode: str | int | None) -> int | None:
    if mode in (None, ""):
        return None
    if isinstance(mode, int):
        return mode & 0o7777
    try:
        value = int(str(mode), 8)
    except ValueError:
        raise InvalidRequest(f"mode must be an octal string like '0644', got {mode!r}") from None
    if not 0 <= value <= 0o7777:
        raise InvalidRequest(f"mode out of range: {mode!r}")
    return value


# Refusals by the filesystem rather than by file permissions: a read-only mount (EROFS), an immutable
# file (EPERM comes as PermissionError). They are the caller's to fix, like a permission, so a 403.
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ETXTBSY)


def os_error(e: OSError, full: str) -> AgentError:
    """The agent error for an OSError met at `full` (the one place that maps errno for file calls)."""
    if isinstance(e, FileNotFoundError):
        return FileNotFound(f"file not found: {full}", path=full)
    if isinstance(e, IsADirectoryError):
        return InvalidPath(f"is a directory: {full}", path=full)
    if isinstance(e, NotADirectoryError):
        return DirectoryNotFound(f"a parent of {full} is not a directory", path=full)
    if isinstance(e, FileExistsError):
        return FileExists(f"file already exists: {full}", path=full)
    if e.errno in _REFUSED:
        what = "read-only file system" if e.errno == errno.EROFS else "permission denied"
        return PermissionDenied(f"{what}: {full}", path=full)
    return AgentError(f"{full}: {e.strerror or e}", path=full)


def _open(full: str, how: str):
    try:
        return open(full, how)
    except OSError as e:
        raise os_error(e, full) from None


def _chmod(full: str, perm: int) -> None:
    try:
        os.chmod(full, perm)
    except OSError as e:
        raise os_error(e, full) from None


async def aiter_sync(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Feed a blocking chunk iterator to the event loop without stalling other requests."""
    import asyncio

    loop = asyncio.get_running_loop()
    while True:
        chunk: bytes | None = await loop.run_in_executor(None, next, it, None)
        if chunk is None:
            return
        yield chunk

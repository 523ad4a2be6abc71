"""envd's plain HTTP endpoints: `GET /files` (download), `POST /files` (multipart or octet-stream
upload, optionally gzip), `GET /health`. Errors use envd's body `{"code": <status>, "message"}`,
which the SDK maps by status (404 -> FileNotFoundException, 400 -> InvalidArgument, 507 -> disk full);
the status comes from envd's table (`envd/errors.py` HTTP_STATUSES).
"""
from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import zlib

from sandboxd.errors import Invalid, NotFound, SandboxdError

from ..errors import BodyTooLarge, PermissionDenied
from ..server import Request, Response, StreamResponse
from . import users
from .errors import DiskFull, http_status

CHUNK = 1024 * 1024
MAX_MULTIPART = 1024 * 1024 * 1024  # multipart bodies are parsed from a spooled temp file


def error(exc: SandboxdError) -> Response:
    status = http_status(exc)
    return Response(status, json.dumps({"code": status, "message": exc.message}).encode())


async def health(req: Request) -> Response:
    return Response(204, b"", content_type="text/plain")


async def download(req: Request):
    try:
        return _download(req)
    except SandboxdError as e:
        return error(e)


def _download(req: Request) -> StreamResponse:
    path = users.expand(req.query.get("path"), users.for_request(req))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"path '{path}' does not exist") from None
    except PermissionError:
        raise PermissionDenied(f"permission denied: '{path}'") from None
    if stat.S_ISDIR(st.st_mode):
        raise Invalid(f"path '{path}' is a directory")
    try:
        f = open(path, "rb")
    except PermissionError:
        raise PermissionDenied(f"permission denied: '{path}'") from None
    except OSError as e:
        raise SandboxdError(f"cannot open '{path}': {e.strerror}") from None

    async def chunks():
        with f:
            while True:
                data = f.read(CHUNK)
                if not data:
                    return
                yield data

    name = os.path.basename(path).replace('"', "")
    return StreamResponse(chunks(), content_type="application/octet-stream", length=st.st_size,
                          headers=[("content-disposition", f'inline; filename="{name}"')])


def _write_error(e: OSError, what: str) -> SandboxdError:
    """The one errno table for writes: a refusal (permissions, a read-only mount) is envd's permission
    answer, a full disk its 507; anything else is the agent's 500."""
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        return PermissionDenied(f"{what}: {e.strerror}")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: {e.strerror}")
    return SandboxdError(f"{what}: {e.strerror}")


def _open_target(path: str, user: users.User):
    if os.path.isdir(path):
        raise Invalid(f"path '{path}' is a directory")
    try:
        users.makedirs(os.path.dirname(path), user)
        existed = os.path.exists(path)
        f = open(path, "wb")
    except NotADirectoryError:
        raise Invalid(f"a parent of '{path}' is not a directory") from None
    except OSError as e:
        raise _write_error(e, f"cannot write '{path}'") from None
    if not existed:
        users.chown(path, user)
    return f


def _written(path: str) -> dict:
    return {"path": path, "name": os.path.basename(path), "type": "file"}


async def upload(req: Request) -> Response:
    try:
        user = users.for_request(req)
        ctype = req.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return Response(200, json.dumps(await _multipart(req, ctype, user)).encode())
        path = users.expand(req.query.get("path"), user)
        gzip = req.headers.get("content-encoding", "").lower() == "gzip"
        with _open_target(path, user) as f:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
            try:
                async for chunk in req.stream():
                    f.write(inflate.decompress(chunk) if inflate else chunk)
                if inflate:
                    f.write(inflate.flush())
            except zlib.error as e:
                raise Invalid(f"invalid gzip body: {e}") from None
            except OSError as e:
                raise _write_error(e, "write failed") from None
        return Response(200, json.dumps([_written(path)]).encode())
    except SandboxdError as e:
        return error(e)


async def _multipart(req: Request, ctype: str, user: users.User) -> list[dict]:
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise Invalid("multipart body without a boundary")
    boundary = b"--" + m.group(1).encode()
    # Spool to disk: uploads can be large, and the agent should not hold them in memory.
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for chunk in req.stream():
            size += len(chunk)
            if size > MAX_MULTIPART:
                raise BodyTooLarge("multipart upload too large; use application/octet-stream")
            spool.write(chunk)
        spool.seek(0)
        body = spool.read()
    parts = body.split(boundary)
    written = []
    query_path = req.query.get("path")
    files = []
    for part in parts[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        headers = head.decode("utf-8", "replace")
        name = re.search(r'name="([^"]*)"', headers)
        fname = re.search(r'filename="([^"]*)"', headers)
        if name and name.group(1) != "file":
            continue
        files.append((fname.group(1) if fname else None, data))
    if not files:
        raise Invalid("no file part in the multipart body")
    if query_path and len(files) > 1:  # a path (as a signed upload URL binds) names one file, not the parts' names
        raise Invalid("a path parameter names one file: send one file part, or no path")
    for filename, data in files:
        target = query_path or filename
        path = users.expand(target, user)
        with _open_target(path, user) as f:
            try:
                f.write(data)
            except OSError as e:
                raise _write_error(e, "write failed") from None
        written.append(_written(path))
    return written


# Paths under envd's prefix.
ROUTES = [("GET", "/health", health), ("GET", "/files", download), ("POST", "/files", upload)]

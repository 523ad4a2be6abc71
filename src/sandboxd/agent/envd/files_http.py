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
import tempfile
import zlib

from sandboxd.errors import Invalid, SandboxdError

from ..errors import BodyTooLarge, PermissionDenied
from ..files import Files, aiter_sync, check_metadata, write_metadata
from ..server import Request, Response, StreamResponse
from . import users
from .errors import DiskFull, http_status, message

METADATA_HEADER = "x-metadata-"
MAX_MULTIPART = 1024 * 1024 * 1024  # multipart bodies are parsed from a spooled temp file


def error(exc: SandboxdError) -> Response:
    status = http_status(exc)
    return Response(status, json.dumps({"code": status, "message": message(exc)}).encode())


async def health(req: Request) -> Response:
    return Response(204, b"", content_type="text/plain")


async def download(req: Request):
    try:
        path = users.expand(req.query.get("path"), users.for_request(req))
        full, size, chunks = req.app.services.files.open_download(path)
    except SandboxdError as e:
        return error(e)
    name = os.path.basename(full).replace('"', "")
    return StreamResponse(aiter_sync(chunks), content_type="application/octet-stream", length=size,
                          headers=[("content-disposition", f'inline; filename="{name}"')])


def _write_error(e: OSError, what: str) -> SandboxdError:
    """The errno table for writes: a refusal (permissions, a read-only mount) is envd's permission
    answer, a full disk its 507; anything else is the agent's 500."""
    if isinstance(e, PermissionError) or e.errno == errno.EROFS:
        return PermissionDenied(f"{what}: {e.strerror}")
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"{what}: {e.strerror}")
    return SandboxdError(f"{what}: {e.strerror}")


def _metadata(req: Request) -> dict[str, str]:
    """The upload's `X-Metadata-<key>: <value>` headers, checked before anything is written."""
    n = len(METADATA_HEADER)
    return check_metadata({k[n:]: v for k, v in req.headers.items() if k.lower().startswith(METADATA_HEADER)})


def _written(path: str, metadata: dict[str, str]) -> dict:
    out: dict = {"path": path, "name": os.path.basename(path), "type": "file"}
    if metadata:
        out["metadata"] = metadata
    return out


class _Target:
    """One uploaded file: opened through the files service, given its metadata once written."""

    def __init__(self, files: Files, path: str, user: users.User, metadata: dict[str, str]):
        self.files, self.metadata = files, metadata
        self.path, self.f = files.open_upload(path, owner=user.owner)

    def write(self, data: bytes) -> None:
        try:
            self.f.write(data)
        except OSError as e:
            raise _write_error(e, "write failed") from None

    def __enter__(self) -> _Target:
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()

    def finish(self) -> dict:
        self.f.close()
        write_metadata(self.path, self.metadata)  # also clears what an earlier upload left
        return _written(self.path, self.metadata)


async def upload(req: Request) -> Response:
    try:
        user = users.for_request(req)
        metadata = _metadata(req)
        ctype = req.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            return Response(200, json.dumps(await _multipart(req, ctype, user, metadata)).encode())
        path = users.expand(req.query.get("path"), user)
        gzip = req.headers.get("content-encoding", "").lower() == "gzip"
        with _Target(req.app.services.files, path, user, metadata) as target:
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
            try:
                async for chunk in req.stream():
                    target.write(inflate.decompress(chunk) if inflate else chunk)
                if inflate:
                    target.write(inflate.flush())
            except zlib.error as e:
                raise Invalid(f"invalid gzip body: {e}") from None
            written = target.finish()
        return Response(200, json.dumps([written]).encode())
    except SandboxdError as e:
        return error(e)


async def _multipart(req: Request, ctype: str, user: users.User, metadata: dict[str, str]) -> list[dict]:
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
        target = _Target(req.app.services.files, users.expand(query_path or filename, user), user, metadata)
        with target:
            target.write(data)
            written.append(target.finish())
    return written


# Paths under envd's prefix.
ROUTES = [("GET", "/health", health), ("GET", "/files", download), ("POST", "/files", upload)]

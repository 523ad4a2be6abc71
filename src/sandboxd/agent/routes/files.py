"""Files: read, download (raw, streamed), write, upload (multipart or raw, streamed), list, exists,
remove, mkdir, and the `/files/watch` WebSocket."""
from __future__ import annotations

import asyncio
import base64
import os
import stat
from datetime import datetime, timezone

from ..app import WEBSOCKET
from ..errors import DirectoryNotFound, InvalidRequest, MissingParameter
from ..files import Entry, aiter_sync, os_error
from ..server import STREAM_GAP, StreamResponse, WebSocketClosed, now_iso


def _qpath(req) -> str:
    path = req.query.get("path") or req.query.get("file")
    if not path:
        raise MissingParameter("missing query parameter: path")
    return path


def file_info(e: Entry) -> dict:
    st = e.st
    is_dir = stat.S_ISDIR(st.st_mode)
    modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return {
        "name": os.path.basename(e.path), "path": e.path, "size": st.st_size,
        "is_directory": is_dir, "is_dir": is_dir, "is_file": stat.S_ISREG(st.st_mode),
        "is_symlink": stat.S_ISLNK(st.st_mode),
        "permissions": stat.filemode(st.st_mode), "mode": oct(stat.S_IMODE(st.st_mode)),
        "modified_time": modified, "modified": modified,
    }


async def read(req):
    try:
        full, raw = req.app.services.files.read_small(_qpath(req))
    except InvalidRequest as e:
        if "size" not in e.details:
            raise
        raise InvalidRequest(f"file too large for /files/read ({e.details['size']} bytes); use /files/download",
                             path=e.details["path"]) from None
    try:
        return {"content": raw.decode("utf-8"), "path": full, "size": len(raw), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"content": base64.b64encode(raw).decode(), "path": full, "size": len(raw), "encoding": "base64"}


async def download(req):
    import mimetypes

    full, size, chunks = req.app.services.files.open_download(_qpath(req))
    ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
    name = os.path.basename(full).replace('"', "")
    return StreamResponse(aiter_sync(chunks), content_type=ctype, length=size,
                          headers=[("content-disposition", f'attachment; filename="{name}"')])


async def write(req):
    files = req.app.services.files
    body = await req.json()
    path, content = body.get("path"), body.get("content")
    if not path:
        raise MissingParameter("missing field: path")
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise InvalidRequest("content must be a string (use encoding=base64 for binary)", path=path)
    full, size = files.write(path, content, encoding=body.get("encoding"), mode=body.get("mode"),
                             overwrite=body.get("overwrite", True) is not False)
    return {"success": True, "path": full, "size": size, "message": "file written", "timestamp": now_iso()}


async def upload(req):
    files = req.app.services.files
    ctype = req.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        from ..upload import receive_multipart

        saved = await receive_multipart(files, ctype, req.stream(), req.query.get("path"), req.query.get("mode"))
        first = saved[0]
        return {"success": True, "path": first["path"], "size": first["size"], "files": saved,
                "message": "uploaded", "timestamp": now_iso()}
    # A raw body (e.g. curl --data-binary) streamed to ?path=
    full, out = files.open_upload(_qpath(req), req.query.get("mode"))
    size = 0
    with out:
        async for chunk in req.stream():
            try:
                out.write(chunk)
            except OSError as e:
                raise os_error(e, full) from None
            size += len(chunk)
    return {"success": True, "path": full, "size": size, "message": "uploaded", "timestamp": now_iso()}


async def list_dir(req):
    full, entries = req.app.services.files.list(req.query.get("path") or None)
    return {"files": [file_info(e) for e in entries], "path": full, "count": len(entries)}


async def exists(req):
    full, there, is_dir = req.app.services.files.exists(_qpath(req))
    return {"exists": there, "path": full, "is_directory": is_dir}


async def remove(req):
    files = req.app.services.files
    path = req.query.get("path")
    if not path and req.method == "POST":
        path = (await req.json()).get("path")
    if not path:
        raise MissingParameter("missing parameter: path")
    recursive = req.query.get("recursive", "true").lower() not in ("0", "false", "no")
    return {"success": True, "path": files.remove(path, recursive), "message": "removed"}


async def mkdir(req):
    files = req.app.services.files
    body = await req.json()
    path = body.get("path") or req.query.get("path")
    if not path:
        raise MissingParameter("missing field: path")
    return {"success": True, "path": files.mkdir(path, body.get("mode")), "message": "directory created"}


async def watch(ws):
    from ..watch import Watcher

    files = ws.request.app.services.files
    ws.min_gap = STREAM_GAP
    msg = await ws.receive_json()
    if msg is None:
        return
    path = files.resolve(msg.get("path") or ws.request.query.get("path") or files.workspace)
    if not os.path.isdir(path):
        raise DirectoryNotFound(f"directory not found: {path}", path=path)
    watcher = Watcher(path, recursive=msg.get("recursive", True) is not False)
    # No "watching" acknowledgement: clients iterate every frame as a change event (hopx files.watch).
    closed = asyncio.create_task(ws.until_closed())
    try:
        while True:
            nxt = asyncio.create_task(watcher.next())
            done, _ = await asyncio.wait({nxt, closed}, return_when=asyncio.FIRST_COMPLETED)
            if nxt not in done:
                nxt.cancel()
                return
            event, changed = nxt.result()
            await ws.send_json({"type": "change", "path": changed, "event": event, "timestamp": now_iso()})
    except WebSocketClosed:
        return
    finally:
        closed.cancel()
        watcher.close()


ROUTES = [
    ("GET", "/files/read", read),
    ("GET", "/files/download", download),
    ("POST,PUT", "/files/write", write),
    ("POST,PUT", "/files/upload", upload),
    ("GET", "/files/list", list_dir),
    ("GET", "/files/exists", exists),
    ("DELETE,POST", "/files/remove", remove),
    ("POST", "/files/mkdir", mkdir),
    (WEBSOCKET, "/files/watch", watch),
]


def register(app) -> None:
    app.add_routes(ROUTES)

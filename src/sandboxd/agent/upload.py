"""Streaming multipart/form-data upload: parts are written to disk as they arrive, never held whole.

Form field `path` names the destination (the HopX client sends it before the file part; if the file
part comes first it is spooled to a temporary file and copied into place when `path` arrives). Every
destination is opened by the files service (`Files.open_upload`: parents, mode, refusals).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import AsyncIterator

from .errors import InvalidRequest, MissingParameter
from .files import CHUNK, Files


async def receive_multipart(files: Files, content_type: str, body: AsyncIterator[bytes],
                            default_path: str | None, mode: str | None) -> list[dict]:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, opts = parse_options_header(content_type)
    boundary = opts.get(b"boundary")
    if not boundary:
        raise InvalidRequest("multipart body without boundary")
    fields: dict[str, str] = {}
    saved: list[dict] = []
    spooled: list[dict] = []  # files that arrived before the `path` field
    st: dict = {"headers": {}, "field": b"", "value": b"", "name": None, "filename": None, "out": None,
                "target": None, "size": 0, "buf": bytearray(), "spool": None}

    def on_header_field(data, start, end):
        st["field"] += data[start:end]

    def on_header_value(data, start, end):
        st["value"] += data[start:end]

    def on_header_end():
        st["headers"][st["field"].decode("latin-1").lower()] = st["value"].decode("utf-8", "replace")
        st["field"], st["value"] = b"", b""

    def on_headers_finished():
        _, params = parse_options_header(st["headers"].get("content-disposition", ""))
        st["name"] = params.get(b"name", b"").decode()
        fn = params.get(b"filename")
        st["filename"] = fn.decode("utf-8", "replace") if fn is not None else None
        st["size"] = 0
        if st["filename"] is not None:
            dest = fields.get("path") or default_path
            if dest:
                if dest.endswith("/"):
                    dest += os.path.basename(st["filename"])
                st["target"], st["out"] = files.open_upload(dest, mode)
            else:
                fd, tmp = tempfile.mkstemp(prefix="sandboxd-upload-")
                st["target"], st["out"] = tmp, os.fdopen(fd, "wb")
                st["spool"] = {"tmp": tmp, "filename": st["filename"], "size": 0}
                spooled.append(st["spool"])

    def on_part_data(data, start, end):
        if st["out"] is not None:
            st["out"].write(data[start:end])
            st["size"] += end - start
        else:
            st["buf"] += data[start:end]
            if len(st["buf"]) > 1 << 20:
                raise InvalidRequest("form field too large")

    def on_part_end():
        if st["out"] is not None:
            st["out"].close()
            if st["spool"] is not None:
                st["spool"]["size"] = st["size"]
            else:
                saved.append({"path": st["target"], "size": st["size"], "filename": st["filename"]})
        elif st["name"]:
            fields[st["name"]] = st["buf"].decode("utf-8", "replace")
        st.update(headers={}, out=None, target=None, buf=bytearray(), name=None, filename=None, spool=None)

    parser = MultipartParser(boundary, {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in body:
            parser.write(chunk)
        parser.finalize()
    finally:
        if st["out"] is not None:
            st["out"].close()
    for item in spooled:
        tmp, filename, size = item["tmp"], item["filename"], item["size"]
        dest = fields.get("path") or default_path
        if not dest:
            os.unlink(tmp)
            raise MissingParameter("missing form field: path")
        if dest.endswith("/"):
            dest += os.path.basename(filename)
        # Copied into the file the files service opens, not moved over it: a move would put the spool
        # file's own mode and owner in place of those the upload asks for.
        try:
            full, out = files.open_upload(dest, mode)
            with out, open(tmp, "rb") as spool:
                shutil.copyfileobj(spool, out, CHUNK)
        finally:
            os.unlink(tmp)
        saved.append({"path": full, "size": size, "filename": filename})
    if not saved:
        raise InvalidRequest("multipart body has no file part")
    return saved

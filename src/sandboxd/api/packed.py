"""Static files the server ships (the /docs viewer, the dashboard), gzipped once and sent packed to clients
that accept gzip: the biggest of them (Swagger UI, xterm.js) shrink to a fifth or less."""
from __future__ import annotations

import gzip

from fastapi import Request, Response


def pack(raw: bytes) -> tuple[bytes, bytes]:
    """(raw, gzipped); mtime 0 so that the same file always packs to the same bytes."""
    return raw, gzip.compress(raw, 6, mtime=0)


def answer(request: Request, raw: bytes, packed: bytes, media: str, headers: dict[str, str]) -> Response:
    headers = {**headers, "vary": "accept-encoding"}
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type=media, headers={**headers, "content-encoding": "gzip"})
    return Response(raw, media_type=media, headers=headers)

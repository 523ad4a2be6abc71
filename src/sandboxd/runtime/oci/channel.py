"""The host end of the agent channel: a listening unix socket handed to the sandbox as fd 3, and the
readiness probe (`GET /health` → {"status": "healthy"}) over it."""
from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path


def listen(path: Path) -> socket.socket:
    """A listening socket at path (replacing a stale one). The caller passes it to the runtime, then closes it."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        sock.listen(512)
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    return sock


async def health(path: Path, timeout: float = 5.0) -> dict | None:
    """The agent's /health document, or None when it does not answer properly within timeout."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        return None
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _unchunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, rest = out + rest[:size], rest[size + 2:]
    return out

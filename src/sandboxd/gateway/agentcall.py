"""Small direct calls from the host to an agent's unix socket (metrics snapshots for SSE, health checks,
the template start command)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


async def call_json(sock: Path, method: str, path: str, body: Any = None, timeout: float = 3.0) -> Any:
    """`method path` on the agent over HTTP/1.1 (Connection: close); the decoded JSON answer (200 only)."""

    async def _call() -> Any:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            extra = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n" if body is not None else ""
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: agent\r\nAccept: application/json\r\n{extra}"
                         f"Connection: close\r\n\r\n".encode() + payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            headers = {}
            for line in lines:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                data = bytearray()
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    data += await reader.readexactly(size)
                    await reader.readexactly(2)
            elif "content-length" in headers:
                data = await reader.readexactly(int(headers["content-length"]))
            else:
                data = await reader.read()
            if status != 200:
                raise OSError(f"agent answered {status} for {method} {path}: {bytes(data)[:300]!r}")
            return json.loads(data)
        finally:
            writer.close()

    return await asyncio.wait_for(_call(), timeout)


async def get_json(sock: Path, path: str, timeout: float = 3.0) -> Any:
    """GET `path` from the agent and decode the JSON body."""
    return await call_json(sock, "GET", path, timeout=timeout)


async def post_json(sock: Path, path: str, body: Any, timeout: float = 3.0) -> Any:
    return await call_json(sock, "POST", path, body, timeout=timeout)

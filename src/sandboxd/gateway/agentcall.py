"""Small direct calls from the host to an agent's unix socket (metrics snapshots for SSE, health checks)."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any


async def get_json(sock: Path, path: str, timeout: float = 3.0) -> Any:
    """GET `path` from the agent over HTTP/1.1 (Connection: close) and decode the JSON body."""

    async def _call() -> Any:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: agent\r\nAccept: application/json\r\n"
                         f"Connection: close\r\n\r\n".encode())
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
                body = bytearray()
                while True:
                    size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        break
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()
            if status != 200:
                raise OSError(f"agent answered {status} for {path}")
            return json.loads(body)
        finally:
            writer.close()

    return await asyncio.wait_for(_call(), timeout)

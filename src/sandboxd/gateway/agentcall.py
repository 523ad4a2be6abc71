"""Older import path of two JSON calls to an agent; sandboxd.runtime.agentclient is the one client."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sandboxd.runtime import agentclient


async def get_json(sock: Path, path: str, timeout: float = 3.0) -> Any:
    return await agentclient.call_json(sock, "GET", path, timeout=timeout, only_200=True)


async def post_json(sock: Path, path: str, body: Any, timeout: float = 3.0) -> Any:
    return await agentclient.call_json(sock, "POST", path, body, timeout, only_200=True)

"""The route label a gateway request is counted under (monitor/http_metrics.py): the agent's route family, or
`port` for a sandbox's own server, never a raw path (paths carry ids, file names, anything a client likes)."""
from __future__ import annotations

from typing import Callable

# The first path segment of every route of the in-sandbox agent (agent/routes, agent/app.py's mounts).
AGENT_FAMILIES = frozenset({"health", "info", "system", "metrics", "processes", "jupyter", "cache", "checkpoint", "execute",
                            "commands", "files", "env", "terminal", "desktop", "e2b"})
E2B_PORTS = frozenset({"49983", "49999"})  # envd and the code interpreter, under the agent's /e2b prefix
OTHER = "other"
PORT = "port"

Observe = Callable[[str, str, int, float], None]  # route, method, status, seconds


def route_label(path: str, port: int | None) -> str:
    if port is not None:
        return PORT
    parts = path.partition("?")[0].split("/", 3)  # "", family, second, rest
    family = parts[1] if len(parts) > 1 else ""
    if family not in AGENT_FAMILIES:
        return OTHER
    if family == "e2b":
        return f"/e2b/{parts[2]}" if len(parts) > 2 and parts[2] in E2B_PORTS else OTHER
    return "/" + family

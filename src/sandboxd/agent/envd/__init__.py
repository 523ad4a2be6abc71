"""E2B's in-sandbox protocols (envd Connect-RPC + /files, the code interpreter's NDJSON /execute),
registered on the agent by `register(app)` under the /e2b/49983 and /e2b/49999 prefixes."""
from __future__ import annotations


def register(app) -> None:
    from .routes import register as _register

    _register(app)

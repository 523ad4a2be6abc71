"""Environment variables seen by new executions, commands and terminals.

Precedence: request env > `/env` vars > template env (the agent's own environment at start, minus the
agent's private SANDBOXD_AGENT_* variables).
"""
from __future__ import annotations

import os

PRIVATE_PREFIX = "SANDBOXD_AGENT_"
AGENT_VENV = "/opt/sandboxd/venv"


class EnvStore:
    def __init__(self, template: dict[str, str] | None = None):
        base = dict(os.environ) if template is None else dict(template)
        self.template = {k: v for k, v in base.items() if not k.startswith(PRIVATE_PREFIX)}
        self.custom: dict[str, str] = {}

    def effective(self) -> dict[str, str]:
        return {**self.template, **self.custom}

    def replace(self, values: dict[str, str]) -> dict[str, str]:
        self.custom = _strs(values)
        return self.effective()

    def merge(self, values: dict[str, str]) -> dict[str, str]:
        self.custom.update(_strs(values))
        return self.effective()

    def clear(self) -> dict[str, str]:
        self.custom = {}
        return self.effective()

    def for_run(self, request_env: dict | None = None) -> dict[str, str]:
        env = self.effective()
        if request_env:
            env.update(_strs(request_env))
        return env


def _strs(values: dict) -> dict[str, str]:
    if not isinstance(values, dict):
        from .errors import InvalidRequest

        raise InvalidRequest("env vars must be an object of strings")
    return {str(k): "" if v is None else str(v) for k, v in values.items()}


def find_user_python(env: dict[str, str]) -> str | None:
    """The user's python on PATH (never the agent's own venv), for kernels and /info."""
    explicit = os.environ.get("SANDBOXD_AGENT_USER_PYTHON")
    if explicit:
        return explicit
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        if d.startswith(AGENT_VENV):
            continue  # the agent's own venv is never the user's python
        for name in ("python3", "python"):
            p = os.path.join(d, name)
            if os.access(p, os.X_OK) and not os.path.isdir(p):
                return p
    return None

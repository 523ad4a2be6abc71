"""`/env`: GET (effective vars), PUT (replace custom vars), PATCH (merge), DELETE (clear custom vars)."""
from __future__ import annotations

from ..errors import InvalidRequest
from ..server import now_iso


def _reply(env: dict) -> dict:
    return {"env_vars": env, "count": len(env), "timestamp": now_iso()}


async def _values(req) -> dict:
    body = await req.json()
    if "env_vars" in body:
        vals = body["env_vars"]
    elif isinstance(body.get("env"), dict):
        vals = body["env"]
    else:  # a bare {"KEY": "value"} object
        vals = {k: v for k, v in body.items() if k != "merge"}
    if not isinstance(vals, dict):
        raise InvalidRequest("env_vars must be an object of strings")
    return vals


async def get_env(req):
    return _reply(req.app.services.env.effective())


async def put_env(req):
    return _reply(req.app.services.env.replace(await _values(req)))


async def patch_env(req):
    return _reply(req.app.services.env.merge(await _values(req)))


async def delete_env(req):
    return {**_reply(req.app.services.env.clear()), "success": True,
            "message": "custom environment variables cleared"}


ROUTES = [
    ("GET", "/env", get_env),
    ("PUT", "/env", put_env),
    ("PATCH,POST", "/env", patch_env),
    ("DELETE", "/env", delete_env),
]


def register(app) -> None:
    app.add_routes(ROUTES)

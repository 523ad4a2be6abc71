"""`/env`: GET (effective vars), PUT (replace custom vars), PATCH (merge), DELETE (clear custom vars)."""
from __future__ import annotations

from ..errors import InvalidRequest
from ..server import now_iso


def register(app) -> None:
    store = app.services.env

    def reply(env: dict) -> dict:
        return {"env_vars": env, "count": len(env), "timestamp": now_iso()}

    async def values(req) -> dict:
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

    @app.route("GET", "/env")
    async def get_env(req):
        return reply(store.effective())

    @app.route("PUT", "/env")
    async def put_env(req):
        return reply(store.replace(await values(req)))

    @app.route("PATCH,POST", "/env")
    async def patch_env(req):
        return reply(store.merge(await values(req)))

    @app.route("DELETE", "/env")
    async def delete_env(req):
        return {**reply(store.clear()), "success": True, "message": "custom environment variables cleared"}

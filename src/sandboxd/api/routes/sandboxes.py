"""HopX sandbox lifecycle: /v1/sandboxes (contract §2.1). Thin: HTTP in, service call, HopX types out."""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

from sandboxd.api.auth import owned, require_key
from sandboxd.api.deps import rid, services
from sandboxd.core import egress
from sandboxd.core.apikeys import ApiKey
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.core.models import check_env, iso

router = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"])
Key = Annotated[ApiKey, Depends(require_key)]
# Per-sandbox limits a create may ask for (docs/teams.md#resources-at-create); the operator's maxima cap them.
Vcpu = Annotated[float, Field(strict=True, ge=0.01, le=1024, allow_inf_nan=False)]
MemoryMb = Annotated[StrictInt, Field(ge=128, le=2**31 - 1)]
DiskMb = Annotated[StrictInt, Field(ge=128, le=2**31 - 1)]
LIMITS = ("vcpu", "memory_mb", "disk_mb")


class ResourcesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vcpu: Vcpu | None = None
    memory_mb: MemoryMb | None = None
    disk_mb: DiskMb | None = None


class NetworkBody(BaseModel):
    """A sandbox's whole egress policy (docs/network.md), E2B's `network` in snake_case; omitted is cleared."""
    model_config = ConfigDict(extra="forbid")
    allow_out: list[str] | None = None
    deny_out: list[str] | None = None
    dns_servers: list[str] | None = None
    allow_internet_access: StrictBool | None = None  # false: deny 0.0.0.0/0
    rules: dict[str, Any] | None = None  # per-host header rules (core/egress.py checks them)
    egress_proxy: dict[str, Any] | None = None  # a SOCKS5 proxy to go out through (core/tunnel.py)


class CreateBody(BaseModel):
    # Unknown keys are ignored: the JS SDK and docs send extra hints (alias) we do not take.
    model_config = ConfigDict(extra="ignore")

    template_id: str | None = Field(None, min_length=1, max_length=128)
    template_name: str | None = Field(None, min_length=1, max_length=128)
    region: str | None = Field(None, max_length=64)
    timeout_seconds: StrictInt | None = Field(None, ge=1, le=30 * 24 * 3600)
    internet_access: StrictBool | None = None
    env_vars: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    vcpu: Vcpu | None = None
    memory_mb: MemoryMb | None = None
    disk_mb: DiskMb | None = None
    resources: ResourcesBody | None = None  # the same three, nested
    network: NetworkBody | None = None  # its egress policy from its first packet (docs/network.md)

    @field_validator("env_vars")
    @classmethod
    def _env(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_env(v)

    @model_validator(mode="after")
    def _one_value_each(self) -> "CreateBody":
        for name in LIMITS:
            top, nested = getattr(self, name), getattr(self.resources, name, None)
            if top is not None and nested is not None and top != nested:
                raise ValueError(f"{name} is {top} at the top level but {nested} in resources")
        return self

    def limits(self) -> dict[str, Any]:
        return {name: getattr(self, name) if getattr(self, name) is not None else getattr(self.resources, name, None)
                for name in LIMITS}


class TimeoutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeout_seconds: StrictInt = Field(..., ge=1, le=30 * 24 * 3600)


def _wire(request: Request, sb) -> dict[str, Any]:
    svc = services(request)
    return {**sb.to_wire(svc.public_host), "request_id": rid(request)}


@router.post("", status_code=201)
async def create_sandbox(body: CreateBody, request: Request, key: Key) -> dict:
    svc = services(request)
    req = CreateRequest(template_id=body.template_id, template_name=body.template_name, region=body.region,
                        timeout_seconds=body.timeout_seconds, internet_access=body.internet_access,
                        env_vars=body.env_vars or {}, metadata=body.metadata or {}, **body.limits(),
                        egress=_policy(body.network) if body.network is not None else None)
    sb, token, token_exp = await svc.lifecycle.create(req, api_key_id=key.id, team_id=key.team_id)
    return {**_wire(request, sb), "auth_token": token, "token_expires_at": iso(token_exp)}


@router.get("")
async def list_sandboxes(
    request: Request,
    key: Key,
    status: str | None = None,
    region: str | None = None,
    template: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = None,
) -> dict:
    items, nxt = services(request).lifecycle.list(status=status, region=region, template=template, limit=limit,
                                                 cursor=cursor, team=key.scope)
    host = services(request).public_host
    return {"object": "list", "data": [sb.to_wire(host) for sb in items], "has_more": nxt is not None,
            "next_cursor": nxt, "request_id": rid(request)}


@router.get("/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    return _wire(request, services(request).lifecycle.get(sandbox_id, key.scope))


@router.delete("/{sandbox_id}")
async def delete_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    await services(request).lifecycle.kill(sandbox_id, team=key.scope)
    return {"id": sandbox_id, "object": "sandbox", "deleted": True, "status": "killed", "request_id": rid(request)}


@router.post("/{sandbox_id}/start")
async def start_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    return _wire(request, await services(request).lifecycle.start_sandbox(sandbox_id, team=key.scope))


@router.post("/{sandbox_id}/stop")
async def stop_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    return _wire(request, await services(request).lifecycle.stop(sandbox_id, team=key.scope))


@router.post("/{sandbox_id}/pause")
async def pause_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    # Idempotent in the HopX dialect: the hopx CLI connects (which resumes) and then resumes again.
    return _wire(request, await services(request).lifecycle.pause(sandbox_id, idempotent=True, team=key.scope))


@router.post("/{sandbox_id}/resume")
async def resume_sandbox(sandbox_id: str, request: Request, key: Key) -> dict:
    return _wire(request, await services(request).lifecycle.resume(sandbox_id, idempotent=True,
                                                                          team=key.scope))


@router.put("/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, body: TimeoutBody, request: Request, key: Key) -> dict:
    return _wire(request, await services(request).lifecycle.set_timeout(
        sandbox_id, body.timeout_seconds, team=key.scope))


@router.post("/{sandbox_id}/token")
async def another_token(sandbox_id: str, request: Request, key: Key) -> dict:
    token, exp = owned(request, sandbox_id, key).another_token(sandbox_id)
    return {"id": sandbox_id, "auth_token": token, "token_expires_at": iso(exp), "request_id": rid(request)}


@router.post("/{sandbox_id}/token/refresh")
async def refresh_token(sandbox_id: str, request: Request, key: Key) -> dict:
    token, exp = owned(request, sandbox_id, key).refresh_token(sandbox_id)
    return {"id": sandbox_id, "auth_token": token, "token_expires_at": iso(exp), "request_id": rid(request)}


async def _network(request: Request, sb, key: ApiKey) -> dict:
    denied = await services(request).lifecycle.egress_denied(sb.id, key.scope)
    policy = egress.EgressPolicy.from_dict(sb.egress)
    return {"id": sb.id, "object": "sandbox.network", **policy.shown(),
            "denied": {"packets": denied.packets, "bytes": denied.bytes, "destinations": list(denied.destinations),
                       "refusals": [vars(r) for r in denied.refusals]},
            "usage": [vars(u) for u in denied.usage], "request_id": rid(request)}


@router.get("/{sandbox_id}/network")
async def get_network(sandbox_id: str, request: Request, key: Key) -> dict:
    return await _network(request, services(request).lifecycle.get(sandbox_id, key.scope), key)


@router.put("/{sandbox_id}/network")
async def set_network(sandbox_id: str, body: NetworkBody, request: Request, key: Key) -> dict:
    lifecycle = services(request).lifecycle
    return await _network(request, await lifecycle.set_egress(sandbox_id, _policy(body), key.scope), key)


def _policy(body: NetworkBody) -> egress.EgressPolicy:
    return egress.parse(body.model_dump(exclude_none=True), camel=False)

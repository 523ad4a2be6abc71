"""E2B control-plane routes (docs/clients/e2b.md §1.2): thin translations onto the lifecycle service.

Auth is the API key the middleware already looked up (`X-API-KEY` is `X-API-Key`). Metrics, events and
webhooks routes are api/routes/{metrics,events,webhooks}.py.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator

from sandboxd.api.auth import owned, require_key
from sandboxd.api.deps import services
from sandboxd.core import egress
from sandboxd.core.apikeys import ApiKey
from sandboxd.errors import Conflict, Invalid, NotFound
from sandboxd.core.lifecycle import CreateRequest
from sandboxd.core.models import (
    ON_TIMEOUT_KILL, ON_TIMEOUT_PAUSE, ON_TIMEOUT_PAUSE_FS, PAUSED, RUNNING, STOPPED, check_env,
)

from . import shapes
from .errors import E2BRoute
from .idempotency import IdempotencyCache

router = APIRouter(route_class=E2BRoute, tags=["e2b"])
Key = Annotated[ApiKey, Depends(require_key)]
DEFAULT_TIMEOUT = 300  # E2B's default sandbox lifetime, seconds
MAX_TIMEOUT = 30 * 24 * 3600
# E2B's public template names -> ours.
TEMPLATE_ALIASES = {"code-interpreter-v1": "code-interpreter", "code-interpreter-beta": "code-interpreter",
                    "e2b/code-interpreter": "code-interpreter", "e2b/base": "base"}


class Network(BaseModel):
    model_config = ConfigDict(extra="ignore")

    allowPublicTraffic: StrictBool | None = None  # the sandbox's own ports without its token (gateway/e2b.py)
    # The egress policy (core/egress.py checks each entry and names a bad one).
    allowOut: Any = None
    denyOut: Any = None
    dnsServers: Any = None
    rules: Any = None
    egressProxy: Any = None

    def policy(self) -> egress.EgressPolicy | None:
        given = self.model_dump(exclude={"allowPublicTraffic"}, exclude_none=True)
        return egress.parse(given, camel=True) if given else None


class AutoResume(BaseModel):
    model_config = ConfigDict(extra="ignore")

    enabled: StrictBool = False


class VolumeMount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    path: str


class NewSandbox(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    templateID: str = Field(..., min_length=1, max_length=256)
    timeout: StrictInt | None = Field(None, ge=0, le=MAX_TIMEOUT)
    metadata: dict[str, str] | None = None
    envVars: dict[str, str] | None = None
    allow_internet_access: StrictBool | None = None
    autoPause: StrictBool | None = None  # at the timeout: pause instead of kill
    autoPauseMemory: StrictBool | None = None  # false: that pause keeps the files only
    autoResume: AutoResume | None = None
    network: Network | None = None
    volumeMounts: list[VolumeMount] | None = None  # the team's volumes (core/volumes.py checks them)

    @field_validator("envVars")
    @classmethod
    def _env(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        return check_env(v)


class TimeoutBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: StrictInt = Field(..., ge=0, le=MAX_TIMEOUT)


class RefreshBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    duration: StrictInt | None = Field(None, ge=0, le=3600)


class ConnectBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    timeout: StrictInt | None = Field(None, ge=0, le=MAX_TIMEOUT)


def _template(svc, ref: str, team: str) -> str:
    try:
        svc.catalog.get(ref, team)
        return ref  # as given: a `name:tag` names one build
    except NotFound:
        alias = TEMPLATE_ALIASES.get(ref)
        if alias is None:
            raise
        return svc.catalog.get(alias, team).name


async def _create(request: Request, body: NewSandbox, key: ApiKey, idem: str | None) -> Response:
    svc = services(request)
    template = _template(svc, body.templateID, key.team_id)
    req = CreateRequest(template_name=template, timeout_seconds=body.timeout or DEFAULT_TIMEOUT,
                        internet_access=body.allow_internet_access, env_vars=body.envVars or {},
                        metadata=body.metadata or {},
                        public_traffic=body.network is None or body.network.allowPublicTraffic is not False,
                        on_timeout=_on_timeout(body),
                        auto_resume=body.autoResume is not None and body.autoResume.enabled,
                        egress=body.network.policy() if body.network is not None else None,
                        volume_mounts=svc.volumes.resolve(key.team_id, [(m.name, m.path) for m in body.volumeMounts or ()]))

    async def create() -> tuple[str, dict[str, Any]]:
        sb, _, _ = await svc.lifecycle.create(req, api_key_id=key.id, team_id=key.team_id)
        return sb.id, _created(svc, sb)

    async def replay(sandbox_id: str) -> dict[str, Any]:
        return _created(svc, svc.lifecycle.get(sandbox_id))  # 404 if it was killed since

    cache = getattr(request.app.state, "e2b_idempotency", None)
    if cache is None:  # one per app, over the app's store
        cache = request.app.state.e2b_idempotency = IdempotencyCache(svc.store)
    result = await cache.run(key.id, idem, body.model_dump(), create, replay)
    return _json(result, 201)


def _on_timeout(body: NewSandbox) -> str:
    if not body.autoPause:
        return ON_TIMEOUT_KILL
    return ON_TIMEOUT_PAUSE_FS if body.autoPauseMemory is False else ON_TIMEOUT_PAUSE


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    from fastapi.responses import JSONResponse

    return JSONResponse(data, status_code=status, headers=headers)


@router.post("/v2/sandboxes")
async def create_v2(request: Request, body: NewSandbox, key: Key,
                    idempotency_key: Annotated[str | None, Header()] = None) -> Response:
    return await _create(request, body, key, idempotency_key)


@router.post("/sandboxes")
async def create_v1(request: Request, body: NewSandbox, key: Key,
                    idempotency_key: Annotated[str | None, Header()] = None) -> Response:
    return await _create(request, body, key, idempotency_key)


def _metadata_filter(raw: str | None) -> dict[str, str]:
    # The SDK quotes each key and value, then urlencodes the pairs into one parameter.
    return {unquote(k): unquote(v) for k, v in parse_qsl(raw or "", keep_blank_values=True)}


async def _list(request: Request, key: ApiKey, metadata: str | None, state: str | None, template: str | None,
                limit: int, next_token: str | None, order: str | None, started_after: datetime | None = None
                ) -> Response:
    svc = services(request)
    if started_after is not None and started_after.tzinfo is None:
        started_after = started_after.replace(tzinfo=timezone.utc)  # E2B's times are UTC
    want_states = {s.strip() for s in (state or "running,paused").split(",") if s.strip()}
    bad = want_states - {"running", "paused"}
    if bad:
        raise Invalid(f"unknown state(s): {', '.join(sorted(bad))}; use running and/or paused", code="invalid_state")
    wanted = shapes.listing_filter(want_states, _metadata_filter(metadata), started_after)
    items, nxt = svc.lifecycle.list(template=template, limit=limit, cursor=next_token, team=key.scope, where=wanted)
    out = [shapes.listed(sb) for sb in items]
    if order == "asc":
        out.reverse()  # the service pages newest first; within a page this is the best we can do
    headers = {"X-Total-Running": str(sum(1 for s in out if s["state"] == "running"))}
    if nxt:
        headers["X-Next-Token"] = nxt
    return _json(out, 200, headers)


@router.get("/v2/sandboxes")
async def list_v2(request: Request, key: Key, metadata: str | None = None, state: str | None = None,
                  template: str | None = None, order: str | None = None,
                  limit: int = Query(100, ge=1, le=100), nextToken: str | None = None,
                  startedAfter: datetime | None = None) -> Response:
    return await _list(request, key, metadata, state, template, limit, nextToken, order, startedAfter)


@router.get("/sandboxes")
async def list_v1(request: Request, key: Key, metadata: str | None = None) -> Response:
    return await _list(request, key, metadata, None, None, 100, None, None)


@router.get("/sandboxes/{sandbox_id}")
async def get_sandbox(sandbox_id: str, request: Request, key: Key) -> Response:
    sb = services(request).lifecycle.get(sandbox_id, key.scope)
    return _json(shapes.detail(sb, domain=services(request).settings.public_domain))


@router.delete("/sandboxes/{sandbox_id}")
async def kill_sandbox(sandbox_id: str, request: Request, key: Key) -> Response:
    await services(request).lifecycle.kill(sandbox_id, team=key.scope)
    return Response(status_code=204)


@router.put("/sandboxes/{sandbox_id}/network")
async def set_network(sandbox_id: str, body: dict[str, Any], request: Request, key: Key) -> Response:
    # Replaces the whole policy, as E2B's does: what the body leaves out is cleared.
    await services(request).lifecycle.set_egress(sandbox_id, egress.parse(body, camel=True), key.scope)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, body: TimeoutBody, request: Request, key: Key) -> Response:
    # E2B resets the lifetime to now + timeout; 0 means "end now", which we model as the 1 s minimum.
    await services(request).lifecycle.set_timeout(sandbox_id, max(1, body.timeout), team=key.scope)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/refreshes")
async def refresh(sandbox_id: str, request: Request, key: Key, body: RefreshBody | None = None) -> Response:
    owned(request, sandbox_id, key)
    await _extend(request, sandbox_id, (body.duration if body and body.duration else DEFAULT_TIMEOUT))
    return Response(status_code=204)


async def _extend(request: Request, sandbox_id: str, seconds: int) -> None:
    """Only ever lengthen the lifetime (connect and refresh semantics)."""
    lifecycle = services(request).lifecycle
    sb = lifecycle.get(sandbox_id)
    wanted = shapes.now() + timedelta(seconds=seconds)
    if sb.expires_at is None or sb.expires_at < wanted:
        await lifecycle.set_timeout(sandbox_id, max(1, seconds))


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    memory: StrictBool | None = None  # false: filesystem only, the processes end and resume boots afresh


@router.post("/sandboxes/{sandbox_id}/pause")
async def pause(sandbox_id: str, request: Request, key: Key, body: PauseBody | None = None) -> Response:
    lifecycle = services(request).lifecycle
    sb = lifecycle.get(sandbox_id, key.scope)
    if sb.status != RUNNING:
        raise Conflict(f"sandbox {sandbox_id} is already {shapes.state(sb)}", code="sandbox_not_running")
    if body is not None and body.memory is False:
        await lifecycle.stop(sandbox_id)  # kept: its files; connect starts it again (a new boot id)
    else:
        await lifecycle.pause(sandbox_id)  # frozen: memory and processes kept
    return Response(status_code=204)


async def _wake(request: Request, key: ApiKey, sandbox_id: str, timeout: int | None) -> tuple[Any, bool]:
    lifecycle = services(request).lifecycle
    lifecycle.get(sandbox_id, key.scope)  # another team's is a 404 before anything waits
    await lifecycle.settle(sandbox_id)  # a pause under way (at its timeout) ends paused: connect resumes it
    sb = lifecycle.get(sandbox_id, key.scope)
    resumed = False
    if sb.status == PAUSED:
        sb = await lifecycle.resume(sandbox_id)
        resumed = True
    elif sb.status == STOPPED:
        sb = await lifecycle.start_sandbox(sandbox_id)
        resumed = True
    if resumed:
        await lifecycle.set_timeout(sandbox_id, max(1, timeout or DEFAULT_TIMEOUT))
    elif timeout:
        await _extend(request, sandbox_id, timeout)
    return lifecycle.get(sandbox_id), resumed


def _created(svc, sb) -> dict[str, Any]:
    """The `Sandbox` answer of create, replay and connect: the sandbox's one envd token, the public domain."""
    return shapes.created(sb, svc.lifecycle.envd_token(sb), svc.settings.public_domain)


async def _connect(request: Request, key: ApiKey, sandbox_id: str, timeout: int | None) -> Response:
    sb, resumed = await _wake(request, key, sandbox_id, timeout)
    return _json(_created(services(request), sb), 201 if resumed else 200)


@router.post("/v2/sandboxes/{sandbox_id}/connect")
async def connect_v2(sandbox_id: str, request: Request, key: Key, body: ConnectBody | None = None) -> Response:
    return await _connect(request, key, sandbox_id, body.timeout if body else None)


@router.post("/sandboxes/{sandbox_id}/connect")
async def connect_v1(sandbox_id: str, request: Request, key: Key, body: ConnectBody | None = None) -> Response:
    return await _connect(request, key, sandbox_id, body.timeout if body else None)


@router.post("/sandboxes/{sandbox_id}/resume")
async def resume(sandbox_id: str, request: Request, key: Key, body: ConnectBody | None = None) -> Response:
    lifecycle = services(request).lifecycle
    lifecycle.get(sandbox_id, key.scope)
    await lifecycle.settle(sandbox_id)
    if lifecycle.get(sandbox_id, key.scope).status == RUNNING:
        raise Conflict(f"sandbox {sandbox_id} is already running", code="sandbox_already_running")
    return await _connect(request, key, sandbox_id, body.timeout if body else None)


@router.get("/templates")
async def list_templates(request: Request, key: Key) -> Response:
    return _json([shapes.template(t) for t in services(request).catalog.list(team=key.scope)])

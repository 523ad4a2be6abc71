"""Control-plane clients (sync and async): sandboxes by id, API keys, teams and templates. `Sandbox` and
`AsyncSandbox` are built on these; the CLI uses them directly for commands that take an id."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterator
from urllib.parse import quote

from ._http import AsyncHttpClient, HttpClient, api_headers, resolve_key, resolve_url
from ._models import ApiKey, Metric, NetworkInfo, SandboxEvent, SandboxInfo, TeamInfo, TemplateInfo, Usage
from ._sse import sse_frames

DEFAULT_TEMPLATE = "code-interpreter"


def create_body(template: str, *, timeout: int | None, env_vars: dict[str, str] | None,
                metadata: dict[str, str] | None, internet_access: bool | None, vcpu: float | None = None,
                memory_mb: int | None = None, disk_mb: int | None = None,
                network: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"template_name": template}
    if template.startswith("tpl_"):
        body = {"template_id": template}
    for k, v in (("timeout_seconds", timeout), ("env_vars", env_vars), ("metadata", metadata),
                 ("internet_access", internet_access), ("vcpu", vcpu), ("memory_mb", memory_mb),
                 ("disk_mb", disk_mb), ("network", network)):
        if v is not None:
            body[k] = v
    return body


def network_body(allow_out: list[str] | None, deny_out: list[str] | None,
                 rules: dict[str, list[dict[str, Any]]] | None, dns_servers: list[str] | None,
                 allow_internet_access: bool | None, egress_proxy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fields given, and only those: the server replaces the whole policy, so one left out is cleared."""
    given = (("allow_out", allow_out), ("deny_out", deny_out), ("rules", rules), ("dns_servers", dns_servers),
             ("allow_internet_access", allow_internet_access), ("egress_proxy", egress_proxy))
    return {k: v for k, v in given if v is not None}


def httpx_stream_timeout() -> Any:
    """No read timeout on an event stream (it may be idle between heartbeats), but a bounded connect."""
    import httpx

    return httpx.Timeout(None, connect=30.0)


def _sid(sandbox_id: str) -> str:
    return quote(sandbox_id, safe="")


def _time_params(start: Any, end: Any) -> dict[str, int]:
    params = {}
    for name, value in (("start", start), ("end", end)):
        if value is not None:
            params[name] = int(value.timestamp()) if hasattr(value, "timestamp") else int(value)
    return params


def _event_params(limit: int, offset: int, oldest_first: bool) -> dict[str, Any]:
    return {"limit": limit, "offset": offset, "orderAsc": str(oldest_first).lower()}


def _usage_params(from_: Any, to: Any, team: str | None, sandbox_id: str | None) -> dict[str, str]:
    """Times as ISO 8601 (a datetime, or a string passed on as it is; the server takes naive times as UTC)."""
    params = {"from": from_, "to": to, "team": team, "sandbox_id": sandbox_id}
    return {k: v.isoformat() if hasattr(v, "isoformat") else str(v) for k, v in params.items() if v is not None}


class Client:
    """Synchronous control-plane client. Reads SANDBOXD_URL and SANDBOXD_API_KEY when not given."""

    def __init__(self, api_key: str | None = None, api_url: str | None = None, *, timeout: float = 60.0,
                 transport: Any = None):
        """`transport` (an httpx transport) is for custom networking and tests; it also carries the
        requests of sandboxes created through this client."""
        self.api_url = resolve_url(api_url)
        self.api_key = resolve_key(api_key)
        key = self.api_key
        self.http = HttpClient(self.api_url, auth=lambda: api_headers(key), timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- service ---------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self.http.json("GET", "/health")

    # -- sandboxes by id -------------------------------------------------------------------------------------
    def create_sandbox(self, template: str = DEFAULT_TEMPLATE, *, timeout: int | None = None,
                       env_vars: dict[str, str] | None = None, metadata: dict[str, str] | None = None,
                       internet_access: bool | None = None, vcpu: float | None = None,
                       memory_mb: int | None = None, disk_mb: int | None = None,
                       network: dict[str, Any] | None = None) -> dict[str, Any]:
        """The raw create answer (it carries the sandbox token); `Sandbox.create` wraps it. vcpu, memory_mb and
        disk_mb default to the template's; `network` is the egress policy from its first packet, the body of
        `update_network` (docs/network.md)."""
        body = create_body(template, timeout=timeout, env_vars=env_vars, metadata=metadata,
                           internet_access=internet_access, vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb,
                           network=network)
        return self.http.json("POST", "/v1/sandboxes", json=body)

    def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(self.http.json("GET", f"/v1/sandboxes/{_sid(sandbox_id)}"))

    def iter_sandboxes(self, *, status: str | None = None, template: str | None = None,
                       page_size: int = 100) -> Iterator[SandboxInfo]:
        cursor = None
        while True:
            params = {k: v for k, v in (("status", status), ("template", template), ("limit", page_size),
                                        ("cursor", cursor)) if v is not None}
            page = self.http.json("GET", "/v1/sandboxes", params=params)
            for item in page.get("data") or []:
                yield SandboxInfo.from_wire(item)
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    def list_sandboxes(self, **kw: Any) -> list[SandboxInfo]:
        return list(self.iter_sandboxes(**kw))

    def kill_sandbox(self, sandbox_id: str) -> None:
        self.http.json("DELETE", f"/v1/sandboxes/{_sid(sandbox_id)}")

    def pause_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/pause"))

    def resume_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/resume"))

    def set_timeout(self, sandbox_id: str, seconds: int) -> SandboxInfo:
        return SandboxInfo.from_wire(self.http.json("PUT", f"/v1/sandboxes/{_sid(sandbox_id)}/timeout",
                                                    json={"timeout_seconds": int(seconds)}))

    def refresh_token(self, sandbox_id: str) -> dict[str, Any]:
        return self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/token/refresh", retry=True)

    def update_network(self, sandbox_id: str, *, allow_out: list[str] | None = None,
                       deny_out: list[str] | None = None, rules: dict[str, list[dict[str, Any]]] | None = None,
                       dns_servers: list[str] | None = None, allow_internet_access: bool | None = None,
                       egress_proxy: dict[str, Any] | None = None) -> NetworkInfo:
        """Replace the sandbox's whole egress policy (docs/network.md): what is not given is cleared. Entries
        are IPv4 addresses, CIDRs and host names (`example.com`, `*.example.com`); `deny_out=["0.0.0.0/0"]`
        denies all but `allow_out`. `egress_proxy={"address": "host:port", "username"?, "password"?, "tls"?}`:
        a SOCKS5 proxy its TCP goes out through. A bad entry is an InvalidRequestError naming it; a backend that
        cannot enforce a policy answers a ServerError with code `egress_not_supported`."""
        body = network_body(allow_out, deny_out, rules, dns_servers, allow_internet_access, egress_proxy)
        return NetworkInfo.from_wire(self.http.json("PUT", f"/v1/sandboxes/{_sid(sandbox_id)}/network", json=body))

    def get_network(self, sandbox_id: str) -> NetworkInfo:
        """The sandbox's egress policy, what it refused, and its traffic per destination in the last hour."""
        return NetworkInfo.from_wire(self.http.json("GET", f"/v1/sandboxes/{_sid(sandbox_id)}/network"))

    def get_metrics(self, sandbox_id: str, start: Any = None, end: Any = None) -> list[Metric]:
        rows = self.http.json("GET", f"/sandboxes/{_sid(sandbox_id)}/metrics", params=_time_params(start, end))
        return [Metric.from_wire(r) for r in rows or []]

    def events(self, sandbox_id: str | None = None, *, limit: int = 10, offset: int = 0,
               oldest_first: bool = False) -> list[SandboxEvent]:
        path = f"/events/sandboxes/{_sid(sandbox_id)}" if sandbox_id else "/events/sandboxes"
        rows = self.http.json("GET", path, params=_event_params(limit, offset, oldest_first))
        return [SandboxEvent.from_wire(r) for r in rows or []]

    def usage(self, from_: Any = None, to: Any = None, *, team: str | None = None,
              sandbox_id: str | None = None) -> Usage:
        """Running time per team and sandbox in [from_, to) (default: the last 30 days). A team's key sees its
        own team; the operator every team, or `team` (an id or name)."""
        return Usage.from_wire(self.http.json("GET", "/v1/usage", params=_usage_params(from_, to, team, sandbox_id)))

    # -- API keys (admin key needed) -------------------------------------------------------------------------
    def create_key(self, name: str, *, admin: bool = False, rate_limit_per_minute: int | None = None,
                   team: str | None = None, role: str | None = None) -> ApiKey:
        """`team` (id or name; default: the caller's) and `role` (admin or member) place the key in a team."""
        body: dict[str, Any] = {"name": name, "admin": admin}
        for k, v in (("rate_limit_per_minute", rate_limit_per_minute), ("team", team), ("role", role)):
            if v is not None:
                body[k] = v
        return ApiKey.from_wire(self.http.json("POST", "/v1/api-keys", json=body))

    def list_keys(self) -> list[ApiKey]:
        return [ApiKey.from_wire(k) for k in self.http.json("GET", "/v1/api-keys").get("data") or []]

    def revoke_key(self, key_id: str) -> ApiKey:
        return ApiKey.from_wire(self.http.json("DELETE", f"/v1/api-keys/{quote(key_id, safe='')}"))

    # -- teams (the operator's key; get_team() with no team: the caller's own) --------------------------------
    def list_teams(self) -> list[TeamInfo]:
        return [TeamInfo.from_wire(t) for t in self.http.json("GET", "/v1/teams").get("data") or []]

    def create_team(self, name: str) -> TeamInfo:
        return TeamInfo.from_wire(self.http.json("POST", "/v1/teams", json={"name": name}))

    def delete_team(self, team: str) -> TeamInfo:
        return TeamInfo.from_wire(self.http.json("DELETE", f"/v1/teams/{quote(team, safe='')}"))

    def get_team(self, team: str | None = None) -> TeamInfo:
        """A team (id or name) with its quotas and usage_now; None: the caller's own team, for any key."""
        path = f"/v1/teams/{quote(team, safe='')}" if team is not None else "/v1/team"
        return TeamInfo.from_wire(self.http.json("GET", path))

    def set_quotas(self, team: str | None, **quotas: int | None) -> TeamInfo:
        """Set the quotas given (max_sandboxes, max_vcpu, max_memory_mb, max_disk_mb, max_templates,
        max_creates_per_minute); None clears one, the others stay. team: the operator sets that team's quotas;
        None: a team admin sets its own team's limits, within the operator's."""
        path = f"/v1/teams/{quote(team, safe='')}" if team is not None else "/v1/team"
        return TeamInfo.from_wire(self.http.json("PATCH", path, json=quotas))

    # -- templates -------------------------------------------------------------------------------------------
    def list_templates(self) -> list[TemplateInfo]:
        return [TemplateInfo.from_wire(t) for t in self.http.json("GET", "/v1/templates").get("data") or []]

    def get_template(self, name_or_id: str) -> TemplateInfo:
        return TemplateInfo.from_wire(self.http.json("GET", f"/v1/templates/{quote(name_or_id, safe='')}"))

    def delete_template(self, name_or_id: str) -> None:
        self.http.json("DELETE", f"/v1/templates/{quote(name_or_id, safe='')}")

    def build_template(self, directory: Any, name: str, **kw: Any) -> dict[str, Any]:
        """Build a template from a directory with a Dockerfile; see `_build.build_template` for the options
        (cpu, memory_mb, disk_gb, update, skip_cache, build_args, on_log, on_progress)."""
        from ._build import build_template

        return build_template(self, directory, name, **kw)

    def build_logs(self, template_or_build_id: str, offset: int = 0) -> dict[str, Any]:
        """The newest build's log of a template (or one build's) from byte `offset`: `logs`, the next `offset`,
        `status` and `complete`."""
        path = f"/v1/templates/build/{quote(template_or_build_id, safe='')}/logs"
        return self.http.json("GET", path, params={"offset": offset})

    # -- start/stop, event stream ----------------------------------------------------------------------------
    def stop_sandbox(self, sandbox_id: str) -> SandboxInfo:
        """Stop a sandbox's processes; its filesystem is kept until it is started again or killed."""
        return SandboxInfo.from_wire(self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/stop"))

    def start_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/start"))

    @contextmanager
    def event_stream(self, *, templates: bool = False) -> Iterator[Iterator[SandboxEvent]]:
        """Lifecycle events as they happen (sandbox events, or template events with `templates`). The stream is
        live when the block is entered, so nothing recorded after that is missed."""
        path = "/v1/templates/stream" if templates else "/v1/sandboxes/stream"
        with self.http.stream("GET", path, timeout=httpx_stream_timeout()) as resp:
            lines = resp.iter_lines()
            for line in lines:  # the server subscribes before it says so
                if line == ": connected":
                    break
            yield (SandboxEvent.from_wire(data) for event, data in sse_frames(lines) if event == "message")

    # -- warm pools (admin key) ------------------------------------------------------------------------------
    def list_pools(self) -> list[dict[str, Any]]:
        """Per template: target size, ready and filling sandboxes, hits, misses, refill lag."""
        return list(self.http.json("GET", "/v1/pools").get("data") or [])

    def set_pool(self, template: str, size: int) -> dict[str, Any]:
        """Keep `size` sandboxes of a template ready (0 empties and turns off its pool)."""
        return self.http.json("PUT", f"/v1/pools/{quote(template, safe='')}", json={"size": int(size)})

    # -- lifecycle webhooks (team admin key) -----------------------------------------------------------------
    def create_webhook(self, name: str, url: str, events: list[str], secret: str, *,
                       enabled: bool = True) -> dict[str, Any]:
        body = {"name": name, "url": url, "enabled": enabled, "events": events, "signatureSecret": secret}
        return self.http.json("POST", "/events/webhooks", json=body)

    def list_webhooks(self) -> list[dict[str, Any]]:
        return list(self.http.json("GET", "/events/webhooks") or [])

    def update_webhook(self, webhook_id: str, **changes: Any) -> dict[str, Any]:
        """Change any of `name`, `url`, `enabled`, `events`, `signatureSecret`; others are kept."""
        return self.http.json("PATCH", f"/events/webhooks/{quote(webhook_id, safe='')}", json=changes)

    def delete_webhook(self, webhook_id: str) -> None:
        self.http.json("DELETE", f"/events/webhooks/{quote(webhook_id, safe='')}")

    def webhook_deliveries(self, webhook_id: str, *, limit: int = 100,
                           status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit, **({"deliveryStatus": status} if status else {})}
        return list(self.http.json("GET", f"/events/webhooks/{quote(webhook_id, safe='')}/deliveries",
                                   params=params) or [])


class AsyncClient:
    """The async twin of `Client`."""

    def __init__(self, api_key: str | None = None, api_url: str | None = None, *, timeout: float = 60.0,
                 transport: Any = None):
        """`transport` (an httpx transport) is for custom networking and tests; it also carries the
        requests of sandboxes created through this client."""
        self.api_url = resolve_url(api_url)
        self.api_key = resolve_key(api_key)
        key = self.api_key
        self.http = AsyncHttpClient(self.api_url, auth=lambda: api_headers(key), timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def health(self) -> dict[str, Any]:
        return await self.http.json("GET", "/health")

    async def create_sandbox(self, template: str = DEFAULT_TEMPLATE, *, timeout: int | None = None,
                             env_vars: dict[str, str] | None = None, metadata: dict[str, str] | None = None,
                             internet_access: bool | None = None, vcpu: float | None = None,
                             memory_mb: int | None = None, disk_mb: int | None = None,
                             network: dict[str, Any] | None = None) -> dict[str, Any]:
        body = create_body(template, timeout=timeout, env_vars=env_vars, metadata=metadata,
                           internet_access=internet_access, vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb,
                           network=network)
        return await self.http.json("POST", "/v1/sandboxes", json=body)

    async def get_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(await self.http.json("GET", f"/v1/sandboxes/{_sid(sandbox_id)}"))

    async def iter_sandboxes(self, *, status: str | None = None, template: str | None = None,
                             page_size: int = 100) -> AsyncIterator[SandboxInfo]:
        cursor = None
        while True:
            params = {k: v for k, v in (("status", status), ("template", template), ("limit", page_size),
                                        ("cursor", cursor)) if v is not None}
            page = await self.http.json("GET", "/v1/sandboxes", params=params)
            for item in page.get("data") or []:
                yield SandboxInfo.from_wire(item)
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return

    async def list_sandboxes(self, **kw: Any) -> list[SandboxInfo]:
        return [s async for s in self.iter_sandboxes(**kw)]

    async def kill_sandbox(self, sandbox_id: str) -> None:
        await self.http.json("DELETE", f"/v1/sandboxes/{_sid(sandbox_id)}")

    async def pause_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(await self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/pause"))

    async def resume_sandbox(self, sandbox_id: str) -> SandboxInfo:
        return SandboxInfo.from_wire(await self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/resume"))

    async def set_timeout(self, sandbox_id: str, seconds: int) -> SandboxInfo:
        return SandboxInfo.from_wire(await self.http.json("PUT", f"/v1/sandboxes/{_sid(sandbox_id)}/timeout",
                                                          json={"timeout_seconds": int(seconds)}))

    async def refresh_token(self, sandbox_id: str) -> dict[str, Any]:
        return await self.http.json("POST", f"/v1/sandboxes/{_sid(sandbox_id)}/token/refresh", retry=True)

    async def update_network(self, sandbox_id: str, *, allow_out: list[str] | None = None,
                             deny_out: list[str] | None = None, rules: dict[str, list[dict[str, Any]]] | None = None,
                             dns_servers: list[str] | None = None, allow_internet_access: bool | None = None,
                             egress_proxy: dict[str, Any] | None = None) -> NetworkInfo:
        body = network_body(allow_out, deny_out, rules, dns_servers, allow_internet_access, egress_proxy)
        path = f"/v1/sandboxes/{_sid(sandbox_id)}/network"
        return NetworkInfo.from_wire(await self.http.json("PUT", path, json=body))

    async def get_network(self, sandbox_id: str) -> NetworkInfo:
        return NetworkInfo.from_wire(await self.http.json("GET", f"/v1/sandboxes/{_sid(sandbox_id)}/network"))

    async def get_metrics(self, sandbox_id: str, start: Any = None, end: Any = None) -> list[Metric]:
        rows = await self.http.json("GET", f"/sandboxes/{_sid(sandbox_id)}/metrics", params=_time_params(start, end))
        return [Metric.from_wire(r) for r in rows or []]

    async def events(self, sandbox_id: str | None = None, *, limit: int = 10, offset: int = 0,
                     oldest_first: bool = False) -> list[SandboxEvent]:
        path = f"/events/sandboxes/{_sid(sandbox_id)}" if sandbox_id else "/events/sandboxes"
        rows = await self.http.json("GET", path, params=_event_params(limit, offset, oldest_first))
        return [SandboxEvent.from_wire(r) for r in rows or []]

    async def usage(self, from_: Any = None, to: Any = None, *, team: str | None = None,
                    sandbox_id: str | None = None) -> Usage:
        params = _usage_params(from_, to, team, sandbox_id)
        return Usage.from_wire(await self.http.json("GET", "/v1/usage", params=params))

    async def list_templates(self) -> list[TemplateInfo]:
        return [TemplateInfo.from_wire(t) for t in (await self.http.json("GET", "/v1/templates")).get("data") or []]

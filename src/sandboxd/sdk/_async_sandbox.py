"""`AsyncSandbox`: the asyncio twin of `Sandbox`, same names, awaitable."""
from __future__ import annotations

import asyncio
import builtins
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, AsyncIterator

from ._agent import OnText, StreamCollector, exec_body
from ._async_parts import AsyncCommands, AsyncEnv, AsyncFiles, AsyncTerminal, call_back
from ._client import DEFAULT_TEMPLATE, AsyncClient
from ._errors import SandboxError
from ._http import AsyncHttpClient, Token
from ._models import Execution, Metric, NetworkInfo, SandboxEvent, SandboxInfo
from ._ws import AsyncSocket, open_async, ws_url


class AsyncSandbox:
    def __init__(self, info: SandboxInfo, client: AsyncClient, token: Token):
        self.info = info
        self._client = client
        self._token = token
        self._refreshing = asyncio.Lock()
        self._agent_http: AsyncHttpClient | None = None
        self.commands = AsyncCommands(self)
        self.files = AsyncFiles(self)
        self.env = AsyncEnv(self)
        self.terminal = AsyncTerminal(self)

    @classmethod
    async def create(cls, template: str = DEFAULT_TEMPLATE, *, timeout: int | None = None,
                     env_vars: dict[str, str] | None = None, metadata: dict[str, str] | None = None,
                     internet_access: bool | None = None, api_key: str | None = None,
                     api_url: str | None = None, vcpu: float | None = None, memory_mb: int | None = None,
                     disk_mb: int | None = None, network: dict[str, Any] | None = None) -> "AsyncSandbox":
        client = AsyncClient(api_key, api_url)
        try:
            wire = await client.create_sandbox(template, timeout=timeout, env_vars=env_vars, metadata=metadata,
                                               internet_access=internet_access, vcpu=vcpu, memory_mb=memory_mb,
                                               disk_mb=disk_mb, network=network)
        except BaseException:
            await client.aclose()
            raise
        token = Token(None, None)
        if wire.get("auth_token"):
            token.update(wire)
        return cls(SandboxInfo.from_wire(wire), client, token)

    @classmethod
    async def connect(cls, sandbox_id: str, *, api_key: str | None = None,
                      api_url: str | None = None) -> "AsyncSandbox":
        client = AsyncClient(api_key, api_url)
        try:
            info = await client.get_sandbox(sandbox_id)
            if info.status == "paused":
                info = await client.resume_sandbox(sandbox_id)
            token = Token(None, None)
            token.update(await client.refresh_token(sandbox_id))
        except BaseException:
            await client.aclose()
            raise
        return cls(info, client, token)

    @staticmethod
    async def list(*, status: str | None = None, template: str | None = None, api_key: str | None = None,
                   api_url: str | None = None) -> list[SandboxInfo]:
        async with AsyncClient(api_key, api_url) as client:
            return await client.list_sandboxes(status=status, template=template)

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def sandbox_id(self) -> str:
        return self.info.id

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, status={self.info.status!r})"

    async def get_info(self) -> SandboxInfo:
        self.info = await self._client.get_sandbox(self.id)
        return self.info

    async def is_running(self) -> bool:
        return (await self.get_info()).status == "running"

    async def kill(self) -> None:
        await self._client.kill_sandbox(self.id)
        self.info.status = "killed"

    async def pause(self) -> None:
        self.info = await self._client.pause_sandbox(self.id)

    async def resume(self) -> None:
        self.info = await self._client.resume_sandbox(self.id)

    async def set_timeout(self, seconds: int) -> datetime | None:
        self.info = await self._client.set_timeout(self.id, seconds)
        return self.info.expires_at

    async def get_metrics(self, start: Any = None, end: Any = None) -> builtins.list[Metric]:
        return await self._client.get_metrics(self.id, start, end)

    async def events(self, *, limit: int = 10, offset: int = 0, oldest_first: bool = True) -> builtins.list[SandboxEvent]:
        return await self._client.events(self.id, limit=limit, offset=offset, oldest_first=oldest_first)

    async def update_network(self, *, allow_out: builtins.list[str] | None = None,
                             deny_out: builtins.list[str] | None = None,
                             rules: dict[str, builtins.list[dict[str, Any]]] | None = None,
                             dns_servers: builtins.list[str] | None = None,
                             allow_internet_access: bool | None = None,
                             egress_proxy: dict[str, Any] | None = None) -> NetworkInfo:
        return await self._client.update_network(self.id, allow_out=allow_out, deny_out=deny_out, rules=rules,
                                                 dns_servers=dns_servers,
                                                 allow_internet_access=allow_internet_access,
                                                 egress_proxy=egress_proxy)

    async def get_network(self) -> NetworkInfo:
        return await self._client.get_network(self.id)

    async def refresh_token(self) -> None:
        async with self._refreshing:
            self._token.update(await self._client.refresh_token(self.id))

    async def aclose(self) -> None:
        if self._agent_http is not None:
            await self._agent_http.aclose()
        await self._client.aclose()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.kill()
        except SandboxError:
            pass
        finally:
            await self.aclose()

    async def run_code(self, code: str, *, language: str = "python", timeout: float = 60,
                       env: dict[str, str] | None = None, workdir: str | None = None,
                       on_stdout: OnText = None, on_stderr: OnText = None) -> Execution:
        body = exec_body(code, language, timeout, env, workdir)
        if not (on_stdout or on_stderr):
            return Execution.from_wire(await self._agent.json("POST", "/execute", json=body, timeout=timeout + 30))
        col = StreamCollector(on_stdout, on_stderr)
        async with self._socket("/execute/stream") as ws:
            await ws.send({"type": "execute", **body})
            async for msg in ws:
                await call_back(col.feed(msg))
                if col.done:
                    break
        return col.execution()

    async def _bearer(self) -> dict[str, str]:
        if self._token.stale():
            await self.refresh_token()
        return {"Authorization": f"Bearer {self._token.value}"}

    @property
    def _agent(self) -> AsyncHttpClient:
        if self._agent_http is None:
            host = self.info.public_host
            if not host:
                raise SandboxError(f"sandbox {self.id} has no public_host", code="no_public_host")
            self._agent_http = AsyncHttpClient(host, auth=self._bearer, reauth=self.refresh_token,
                                               transport=self._client.http.transport)
        return self._agent_http

    @asynccontextmanager
    async def _socket(self, path: str) -> AsyncIterator[AsyncSocket]:
        async with open_async(ws_url(self._agent.base_url, path), await self._bearer()) as ws:
            yield ws

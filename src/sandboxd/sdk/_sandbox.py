"""The synchronous `Sandbox`: lifecycle through the control plane, everything else through the
gateway with the sandbox's own token (refreshed automatically before it expires and after a 401)."""
from __future__ import annotations

import builtins
import threading
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Iterator

from ._agent import OnText, StreamCollector, exec_body
from ._client import DEFAULT_TEMPLATE, Client
from ._errors import SandboxError
from ._http import HttpClient, Token
from ._models import Execution, Metric, NetworkInfo, SandboxEvent, SandboxInfo
from ._parts import Commands, Env, Files, Terminal
from ._ws import SyncSocket, open_sync, ws_url


class Sandbox:
    """A running sandbox. Make one with `Sandbox.create()` or `Sandbox.connect(id)`; used as a
    context manager it is killed on exit."""

    def __init__(self, info: SandboxInfo, client: Client, token: Token, *, owns_client: bool = True):
        self.info = info
        self._client, self._owns_client = client, owns_client
        self._token = token
        self._lock = threading.Lock()
        self._agent_http: HttpClient | None = None
        self.commands = Commands(self)
        self.files = Files(self)
        self.env = Env(self)
        self.terminal = Terminal(self)

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def create(cls, template: str = DEFAULT_TEMPLATE, *, timeout: int | None = None,
               env_vars: dict[str, str] | None = None, metadata: dict[str, str] | None = None,
               internet_access: bool | None = None, api_key: str | None = None,
               api_url: str | None = None, vcpu: float | None = None, memory_mb: int | None = None,
               disk_mb: int | None = None, network: dict[str, Any] | None = None) -> "Sandbox":
        """Create a sandbox from `template` (name or id). `timeout` is its lifetime in seconds; vcpu, memory_mb
        and disk_mb its limits (default: the template's); `network` its egress policy from the first packet,
        `update_network`'s fields as a dict (`{"allow_out": [...], "deny_out": ["0.0.0.0/0"]}`)."""
        client = Client(api_key, api_url)
        try:
            wire = client.create_sandbox(template, timeout=timeout, env_vars=env_vars, metadata=metadata,
                                         internet_access=internet_access, vcpu=vcpu, memory_mb=memory_mb,
                                         disk_mb=disk_mb, network=network)
        except BaseException:
            client.close()
            raise
        token = Token(None, None)
        if wire.get("auth_token"):
            token.update(wire)
        return cls(SandboxInfo.from_wire(wire), client, token)

    @classmethod
    def connect(cls, sandbox_id: str, *, api_key: str | None = None, api_url: str | None = None) -> "Sandbox":
        """Attach to an existing sandbox; a paused one is resumed."""
        client = Client(api_key, api_url)
        try:
            info = client.get_sandbox(sandbox_id)
            if info.status == "paused":
                info = client.resume_sandbox(sandbox_id)
            token = Token(None, None)
            token.update(client.refresh_token(sandbox_id))
        except BaseException:
            client.close()
            raise
        return cls(info, client, token)

    @staticmethod
    def list(*, status: str | None = None, template: str | None = None, api_key: str | None = None,
             api_url: str | None = None) -> list[SandboxInfo]:
        with Client(api_key, api_url) as client:
            return client.list_sandboxes(status=status, template=template)

    # -- identity --------------------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.info.id

    @property
    def sandbox_id(self) -> str:
        return self.info.id

    def __repr__(self) -> str:
        return f"Sandbox(id={self.id!r}, status={self.info.status!r})"

    # -- lifecycle -------------------------------------------------------------------------------------------
    def get_info(self) -> SandboxInfo:
        self.info = self._client.get_sandbox(self.id)
        return self.info

    def is_running(self) -> bool:
        return self.get_info().status == "running"

    def kill(self) -> None:
        self._client.kill_sandbox(self.id)
        self.info.status = "killed"

    def pause(self) -> None:
        self.info = self._client.pause_sandbox(self.id)

    def resume(self) -> None:
        self.info = self._client.resume_sandbox(self.id)

    def set_timeout(self, seconds: int) -> datetime | None:
        """Let the sandbox live `seconds` from now; returns the new expiry time."""
        self.info = self._client.set_timeout(self.id, seconds)
        return self.info.expires_at

    def get_metrics(self, start: Any = None, end: Any = None) -> builtins.list[Metric]:
        return self._client.get_metrics(self.id, start, end)

    def events(self, *, limit: int = 10, offset: int = 0, oldest_first: bool = True) -> builtins.list[SandboxEvent]:
        return self._client.events(self.id, limit=limit, offset=offset, oldest_first=oldest_first)

    def update_network(self, *, allow_out: builtins.list[str] | None = None,
                       deny_out: builtins.list[str] | None = None,
                       rules: dict[str, builtins.list[dict[str, Any]]] | None = None,
                       dns_servers: builtins.list[str] | None = None,
                       allow_internet_access: bool | None = None,
                       egress_proxy: dict[str, Any] | None = None) -> NetworkInfo:
        """Replace the sandbox's whole egress policy (what is not given is cleared); see `Client.update_network`.
        Its new connections meet the policy once this returns."""
        return self._client.update_network(self.id, allow_out=allow_out, deny_out=deny_out, rules=rules,
                                           dns_servers=dns_servers, allow_internet_access=allow_internet_access,
                                           egress_proxy=egress_proxy)

    def get_network(self) -> NetworkInfo:
        """The egress policy, what it refused, and the traffic per destination in the last hour."""
        return self._client.get_network(self.id)

    def refresh_token(self) -> None:
        with self._lock:
            self._token.update(self._client.refresh_token(self.id))

    def close(self) -> None:
        """Release HTTP connections (the sandbox keeps running)."""
        if self._agent_http is not None:
            self._agent_http.close()
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.kill()
        except SandboxError:
            pass  # already gone (expired or killed elsewhere): nothing left to clean up
        finally:
            self.close()

    # -- code ------------------------------------------------------------------------------------------------
    def run_code(self, code: str, *, language: str = "python", timeout: float = 60,
                 env: dict[str, str] | None = None, workdir: str | None = None,
                 on_stdout: OnText = None, on_stderr: OnText = None) -> Execution:
        """Run code in the sandbox's stateful kernel (variables persist between calls). A failing
        cell returns an Execution with `error` set; it does not raise."""
        body = exec_body(code, language, timeout, env, workdir)
        if not (on_stdout or on_stderr):
            return Execution.from_wire(self._agent.json("POST", "/execute", json=body, timeout=timeout + 30))
        col = StreamCollector(on_stdout, on_stderr)
        with self._socket("/execute/stream") as ws:
            ws.send({"type": "execute", **body})
            for msg in ws:
                for cb, data in col.feed(msg):
                    cb(data)
                if col.done:
                    break
        return col.execution()

    # -- plumbing --------------------------------------------------------------------------------------------
    def _bearer(self) -> dict[str, str]:
        if self._token.stale():
            self.refresh_token()
        return {"Authorization": f"Bearer {self._token.value}"}

    @property
    def _agent(self) -> HttpClient:
        if self._agent_http is None:
            host = self.info.public_host or self.get_info().public_host
            if not host:
                raise SandboxError(f"sandbox {self.id} has no public_host", code="no_public_host")
            self._agent_http = HttpClient(host, auth=self._bearer, reauth=self.refresh_token,
                                          transport=self._client.http.transport)
        return self._agent_http

    @contextmanager
    def _socket(self, path: str) -> Iterator[SyncSocket]:
        with open_sync(ws_url(self._agent.base_url, path), self._bearer()) as ws:
            yield ws

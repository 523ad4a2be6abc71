"""HTTP plumbing shared by every SDK object: configuration, error translation, retries and the
per-sandbox token. Sync and async clients mirror each other; the decisions live in plain functions."""
from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Iterator

import httpx

from ._errors import NetworkError, RateLimitError, RequestTimeoutError, SandboxError, error_from_response

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT = 60.0
RETRY_STATUS = {429, 502, 503, 504}
IDEMPOTENT = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}
ATTEMPTS = 3
# Refresh a sandbox token this long before it expires, so a call never races its expiry.
REFRESH_MARGIN = timedelta(minutes=10)


@functools.lru_cache(maxsize=1)
def _shared_tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def tls_for(url: str) -> ssl.SSLContext | bool:
    """Building an SSL context reads the whole CA bundle (~25 ms, twice per Sandbox.create): plain-http
    URLs (the local control plane and gateway) need none, https ones share one per process."""
    return _shared_tls() if url.lower().startswith("https:") else False


def resolve_url(api_url: str | None) -> str:
    return (api_url or os.environ.get("SANDBOXD_URL") or DEFAULT_URL).rstrip("/")


def resolve_key(api_key: str | None) -> str | None:
    return api_key or os.environ.get("SANDBOXD_API_KEY") or None


def _raise_for(resp: httpx.Response) -> None:
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
    except ValueError:
        body = None
    text = resp.text if body is None else ""
    raise error_from_response(resp.status_code, body, text, resp.headers.get("x-request-id"))


def _translate(exc: httpx.HTTPError, url: str) -> SandboxError:
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(f"request to {url} timed out")
    return NetworkError(f"cannot reach {url}: {exc or type(exc).__name__}")


def _retry_delay(attempt: int, resp: httpx.Response | None) -> float:
    if resp is not None and resp.status_code == 429:
        try:
            hint = error_from_response(429, resp.json(), "", None)
            if isinstance(hint, RateLimitError) and hint.retry_after:
                return min(hint.retry_after, 10.0)
        except ValueError:
            pass
    return 0.25 * (2 ** attempt)


def _should_retry(method: str, retry: bool | None, attempt: int, status: int | None) -> bool:
    if attempt + 1 >= ATTEMPTS:
        return False
    allowed = retry if retry is not None else method in IDEMPOTENT
    # Never replay a non-idempotent request (it may run user code twice) unless asked; 429 is safe:
    # the server refused it before doing anything.
    return status == 429 or (allowed and (status is None or status in RETRY_STATUS))


class Token:
    """A sandbox's gateway token and how to renew it."""

    def __init__(self, value: str | None, expires_at: datetime | None):
        self.value, self.expires_at = value, expires_at

    def stale(self) -> bool:
        if not self.value:
            return True
        return self.expires_at is not None and self.expires_at - REFRESH_MARGIN < datetime.now(timezone.utc)

    def update(self, body: dict[str, Any]) -> None:
        from ._models import parse_time

        self.value = body["auth_token"]
        self.expires_at = parse_time(body.get("token_expires_at"))


class HttpClient:
    """Sync client for one base URL. `auth()` gives the auth headers for each attempt; `reauth()`
    is called once after a 401 (token refresh) and the request is replayed."""

    def __init__(self, base_url: str, *, auth: Callable[[], dict[str, str]], timeout: float = DEFAULT_TIMEOUT,
                 reauth: Callable[[], None] | None = None, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._auth, self._reauth = auth, reauth
        self.transport = transport
        self._client = httpx.Client(base_url=self.base_url, timeout=timeout, trust_env=False, transport=transport,
                                    verify=tls_for(self.base_url))

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, *, retry: bool | None = None, **kw: Any) -> httpx.Response:
        reauthed = False
        attempt = 0
        while True:
            try:
                resp = self._client.request(method, path, headers=self._auth(), **kw)
            except httpx.HTTPError as e:
                if _should_retry(method, retry, attempt, None):
                    time.sleep(_retry_delay(attempt, None))
                    attempt += 1
                    continue
                raise _translate(e, self.base_url + path) from None
            if resp.status_code == 401 and self._reauth and not reauthed:
                reauthed = True
                self._reauth()
                continue
            if resp.status_code in RETRY_STATUS and _should_retry(method, retry, attempt, resp.status_code):
                time.sleep(_retry_delay(attempt, resp))
                attempt += 1
                continue
            _raise_for(resp)
            return resp

    def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.request(method, path, **kw)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise SandboxError(f"{method} {path}: the server did not answer JSON", status_code=resp.status_code) from None

    @contextmanager
    def stream(self, method: str, path: str, **kw: Any) -> Iterator[httpx.Response]:
        try:
            with self._client.stream(method, path, headers=self._auth(), **kw) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _raise_for(resp)
                yield resp
        except httpx.HTTPError as e:
            raise _translate(e, self.base_url + path) from None


class AsyncHttpClient:
    """The async twin of `HttpClient`."""

    def __init__(self, base_url: str, *, auth: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT,
                 reauth: Callable[[], Any] | None = None, transport: httpx.AsyncBaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._auth, self._reauth = auth, reauth
        self.transport = transport
        self._client = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, trust_env=False,
                                         transport=transport, verify=tls_for(self.base_url))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _headers(self) -> dict[str, str]:
        h = self._auth()
        return await h if asyncio.iscoroutine(h) else h

    async def request(self, method: str, path: str, *, retry: bool | None = None, **kw: Any) -> httpx.Response:
        reauthed = False
        attempt = 0
        while True:
            try:
                resp = await self._client.request(method, path, headers=await self._headers(), **kw)
            except httpx.HTTPError as e:
                if _should_retry(method, retry, attempt, None):
                    await asyncio.sleep(_retry_delay(attempt, None))
                    attempt += 1
                    continue
                raise _translate(e, self.base_url + path) from None
            if resp.status_code == 401 and self._reauth and not reauthed:
                reauthed = True
                await self._reauth()
                continue
            if resp.status_code in RETRY_STATUS and _should_retry(method, retry, attempt, resp.status_code):
                await asyncio.sleep(_retry_delay(attempt, resp))
                attempt += 1
                continue
            _raise_for(resp)
            return resp

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self.request(method, path, **kw)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise SandboxError(f"{method} {path}: the server did not answer JSON", status_code=resp.status_code) from None

    @asynccontextmanager
    async def stream(self, method: str, path: str, **kw: Any) -> AsyncIterator[httpx.Response]:
        try:
            async with self._client.stream(method, path, headers=await self._headers(), **kw) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    _raise_for(resp)
                yield resp
        except httpx.HTTPError as e:
            raise _translate(e, self.base_url + path) from None


def api_headers(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key else {}

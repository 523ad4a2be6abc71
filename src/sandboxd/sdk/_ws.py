"""WebSocket helpers for the agent's streaming endpoints (/execute/stream, /terminal, /files/watch).
Frames are JSON text; websockets' exceptions are translated into the SDK's tree here."""
from __future__ import annotations

import json
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Iterator

from websockets.exceptions import ConnectionClosedOK, InvalidStatus, WebSocketException

from ._errors import NetworkError, RequestTimeoutError, SandboxError, error_from_response


def ws_url(public_host: str, path: str) -> str:
    base = public_host.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[8:]
    elif base.startswith("http://"):
        base = "ws://" + base[7:]
    return base + path


def _translate(exc: BaseException, url: str) -> SandboxError:
    if isinstance(exc, InvalidStatus):
        r = exc.response
        try:
            body = json.loads(r.body or b"")
        except ValueError:
            body = None
        return error_from_response(r.status_code, body, (r.body or b"").decode("utf-8", "replace"),
                                   r.headers.get("x-request-id"))
    if isinstance(exc, TimeoutError):
        return RequestTimeoutError(f"websocket {url} timed out")
    return NetworkError(f"websocket {url}: {exc or type(exc).__name__}")


def decode(frame: str | bytes) -> dict[str, Any] | None:
    try:
        msg = json.loads(frame)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


class SyncSocket:
    def __init__(self, ws: Any, url: str):
        self._ws, self.url = ws, url

    def send(self, msg: dict[str, Any]) -> None:
        try:
            self._ws.send(json.dumps(msg))
        except (WebSocketException, OSError) as e:
            raise _translate(e, self.url) from None

    def recv(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next JSON frame; None when the server closed the socket. Raises on timeout."""
        while True:
            try:
                frame = self._ws.recv(timeout=timeout)
            except ConnectionClosedOK:
                return None
            except (WebSocketException, OSError, TimeoutError) as e:
                if isinstance(e, WebSocketException) and "closed" in type(e).__name__.lower():
                    return None
                raise _translate(e, self.url) from None
            msg = decode(frame)
            if msg is not None:
                return msg

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (msg := self.recv()) is not None:
            yield msg

    def close(self) -> None:
        try:
            self._ws.close()
        except (WebSocketException, OSError):
            pass


@contextmanager
def open_sync(url: str, headers: dict[str, str], open_timeout: float = 30.0) -> Iterator[SyncSocket]:
    from websockets.sync.client import connect as sconnect  # ~60 ms of import every CLI call would pay

    try:
        cm = sconnect(url, additional_headers=headers, open_timeout=open_timeout, proxy=None, max_size=None)
        ws = cm.__enter__()
    except (WebSocketException, OSError, TimeoutError) as e:
        raise _translate(e, url) from None
    try:
        yield SyncSocket(ws, url)
    finally:
        try:
            cm.__exit__(None, None, None)
        except (WebSocketException, OSError):
            pass


class AsyncSocket:
    def __init__(self, ws: Any, url: str):
        self._ws, self.url = ws, url

    async def send(self, msg: dict[str, Any]) -> None:
        try:
            await self._ws.send(json.dumps(msg))
        except (WebSocketException, OSError) as e:
            raise _translate(e, self.url) from None

    async def recv(self) -> dict[str, Any] | None:
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosedOK:
                return None
            except (WebSocketException, OSError) as e:
                if "closed" in type(e).__name__.lower():
                    return None
                raise _translate(e, self.url) from None
            msg = decode(frame)
            if msg is not None:
                return msg

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        while (msg := await self.recv()) is not None:
            yield msg

    async def close(self) -> None:
        try:
            await self._ws.close()
        except (WebSocketException, OSError):
            pass


@asynccontextmanager
async def open_async(url: str, headers: dict[str, str], open_timeout: float = 30.0) -> AsyncIterator[AsyncSocket]:
    from websockets.asyncio.client import connect as aconnect  # as in open_sync

    try:
        cm = aconnect(url, additional_headers=headers, open_timeout=open_timeout, proxy=None, max_size=None)
        ws = await cm.__aenter__()
    except (WebSocketException, OSError, TimeoutError) as e:
        raise _translate(e, url) from None
    try:
        yield AsyncSocket(ws, url)
    finally:
        try:
            await cm.__aexit__(None, None, None)
        except (WebSocketException, OSError):
            pass

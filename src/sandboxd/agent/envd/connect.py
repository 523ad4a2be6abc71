"""Connect RPC with the JSON codec, as envd speaks it and the e2b SDK (connectrpc 0.12) expects.

Unary calls are plain JSON POSTs; errors are a non-2xx status with `{"code": "<snake_case>", "message"}`.
Streams are 5-byte-prefixed envelopes (flag byte, big-endian length, JSON) on `application/connect+json`,
closed by an end-of-stream envelope (flag 0x02) that carries the error, if any. Compression is never used.
"""
from __future__ import annotations

import asyncio
import json
import struct
from typing import Any, AsyncIterator, Awaitable, Callable

from ..server import Request, Response, StreamResponse

END_STREAM = 0x02
MAX_MESSAGE = 64 * 1024 * 1024

# Connect code -> HTTP status for unary errors (connectrpc.com/docs/protocol#error-codes).
STATUS = {
    "canceled": 499, "unknown": 500, "invalid_argument": 400, "deadline_exceeded": 504, "not_found": 404,
    "already_exists": 409, "permission_denied": 403, "resource_exhausted": 429, "failed_precondition": 400,
    "aborted": 409, "out_of_range": 400, "unimplemented": 501, "internal": 500, "unavailable": 503,
    "data_loss": 500, "unauthenticated": 401,
}


class ConnectError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def body(self) -> dict:
        return {"code": self.code, "message": self.message}


def envelope(message: Any, flags: int = 0) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", flags, len(data)) + data


def end_stream(error: ConnectError | None = None) -> bytes:
    return envelope({"error": error.body()} if error else {}, END_STREAM)


async def read_envelopes(req: Request) -> AsyncIterator[dict]:
    """Decode the request body (chunked or not) into JSON messages as they arrive."""
    buf = bytearray()
    async for chunk in req.stream():
        buf += chunk
        while len(buf) >= 5:
            flags, size = struct.unpack(">BI", bytes(buf[:5]))
            if size > MAX_MESSAGE:
                raise ConnectError("resource_exhausted", f"message of {size} bytes is too large")
            if len(buf) < 5 + size:
                break
            payload = bytes(buf[5:5 + size])
            del buf[:5 + size]
            if flags & 0x01:
                raise ConnectError("internal", "compressed messages are not supported")
            if flags & END_STREAM:
                return
            yield _parse(payload)
    if buf:
        raise ConnectError("invalid_argument", "truncated envelope in request body")


def _parse(raw: bytes) -> dict:
    if not raw.strip():
        return {}
    try:
        msg = json.loads(raw)
    except ValueError as e:
        raise ConnectError("invalid_argument", f"invalid JSON message: {e}") from None
    if not isinstance(msg, dict):
        raise ConnectError("invalid_argument", "message must be a JSON object")
    return msg


def timeout_of(req: Request) -> float | None:
    raw = req.headers.get("connect-timeout-ms")
    try:
        return int(raw) / 1000 if raw else None
    except ValueError:
        return None


def _error_response(err: ConnectError) -> Response:
    return Response(STATUS.get(err.code, 500), json.dumps(err.body()).encode())


def _internal(exc: BaseException) -> ConnectError:
    return ConnectError("internal", f"{type(exc).__name__}: {exc}")


Unary = Callable[[Request, dict], Awaitable[dict]]
Streaming = Callable[[Request, dict], AsyncIterator[dict]]
ClientStreaming = Callable[[Request, AsyncIterator[dict]], Awaitable[dict]]


def unary(fn: Unary, map_error: Callable[[BaseException], ConnectError | None]) -> Callable:
    async def handler(req: Request) -> Response:
        try:
            ctype = req.headers.get("content-type", "application/json").split(";")[0].strip()
            if ctype not in ("application/json", ""):
                raise ConnectError("unimplemented", f"unsupported content type {ctype}; use application/json")
            msg = _parse(await req.body())
            return Response(200, json.dumps(await fn(req, msg), separators=(",", ":")).encode())
        except ConnectError as e:
            return _error_response(e)
        except Exception as e:  # noqa: BLE001 - every failure must reach the client as a Connect error
            return _error_response(map_error(e) or _internal(e))

    return handler


def server_stream(fn: Streaming, map_error: Callable[[BaseException], ConnectError | None]) -> Callable:
    async def handler(req: Request) -> StreamResponse | Response:
        try:
            first = None
            async for msg in read_envelopes(req):
                if first is None:
                    first = msg
            if first is None:
                raise ConnectError("invalid_argument", "server-stream call needs one request message")
        except ConnectError as e:
            return _error_response(e)
        return StreamResponse(_run(req, fn(req, first), map_error), content_type="application/connect+json")

    return handler


def client_stream(fn: ClientStreaming, map_error: Callable[[BaseException], ConnectError | None]) -> Callable:
    async def handler(req: Request) -> StreamResponse:
        async def one() -> AsyncIterator[dict]:
            yield await fn(req, read_envelopes(req))

        # Consume the whole input stream before the response head goes out (as envd does): a head that
        # arrives while the client is still streaming let the client end its body early, and the input was
        # lost (the E2B SDK's stream_input + close_stdin then fed the process nothing).
        chunks = [chunk async for chunk in _run(req, one(), map_error)]

        async def replay() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        return StreamResponse(replay(), content_type="application/connect+json")

    return handler


async def _run(req: Request, messages: AsyncIterator[dict],
               map_error: Callable[[BaseException], ConnectError | None]) -> AsyncIterator[bytes]:
    """Envelope every message, flush it as produced, and always finish with end-of-stream.

    A handler may set `req.on_deadline`; it runs when Connect-Timeout-Ms passes (envd kills the process).
    """
    loop = asyncio.get_running_loop()
    timeout = timeout_of(req)
    deadline = loop.time() + timeout if timeout else None
    error: ConnectError | None = None
    it = messages.__aiter__()
    try:
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise asyncio.TimeoutError
            try:
                msg = await asyncio.wait_for(it.__anext__(), left)
            except StopAsyncIteration:
                break
            yield envelope(msg)
    except asyncio.TimeoutError:
        error = ConnectError("deadline_exceeded", "the call's deadline was exceeded")
        hook = getattr(req, "on_deadline", None)
        if hook is not None:
            hook()
    except ConnectError as e:
        error = e
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as e:  # noqa: BLE001
        error = map_error(e) or _internal(e)
    finally:
        close = getattr(it, "aclose", None)
        if close:
            try:
                await close()
            except Exception:
                pass
    yield end_stream(error)

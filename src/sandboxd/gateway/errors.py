"""The gateway's one error table: every refusal it answers itself has this shape (the API's error body:
`error.{message,code,request_id,details}` plus the same fields at the top level, as HopX clients read).
A refusal made on envd's behalf (a signed file URL) may carry envd's own body instead, `{"code": <status>,
"message": ...}`, which E2B's SDK reads."""
from __future__ import annotations

import json
import secrets
import time

REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
           409: "Conflict", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
           502: "Bad Gateway", 503: "Service Unavailable"}


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict | None = None, body: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}
        self.body = body  # the whole JSON body, where the protocol answered has its own shape


def error_parts(status: int, code: str, message: str, details: dict | None = None,
                close: bool = False, shape: dict | None = None) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of an error answer; the headers' Content-Length is the body's length. shape: the
    body to send instead of ours."""
    rid = "req_" + secrets.token_hex(12)
    details = details or {}
    body = json.dumps(shape if shape is not None else {
        "error": {"message": message, "code": code, "request_id": rid, "details": details},
        "code": code, "message": message, "request_id": rid, "details": details,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }).encode()
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode()),
               (b"X-Request-ID", rid.encode())]
    if close:
        headers.append((b"Connection", b"close"))
    if status == 503:
        headers.append((b"Retry-After", b"1"))
    return headers, body


def error_bytes(status: int, code: str, message: str, details: dict | None = None, close: bool = False,
                head_request: bool = False, shape: dict | None = None) -> bytes:
    """A whole error answer, for when no request head was parsed (or none can be answered through h11).
    An answer to HEAD carries the headers only: a body would be read as the start of the next answer."""
    headers, body = error_parts(status, code, message, details, close, shape)
    out = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n".encode()
    out += b"".join(n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n"
    return out if head_request else out + body

"""`CONNECT 127.0.0.1:<port>` on the agent socket: a raw two-way pipe to a port a process in the sandbox
listens on. The gateway opens one per request for a sandbox's own ports (a web app, a dev server), which a
sandbox without a network interface could not otherwise serve. Only loopback: the agent is no proxy to
anywhere else the sandbox can reach."""
from __future__ import annotations

import asyncio
import json
import socket

CHUNK = 64 * 1024
LOOPBACK = {"127.0.0.1": socket.AF_INET, "localhost": socket.AF_INET, "[::1]": socket.AF_INET6}


def parse(target: str) -> tuple[str, int] | None:
    """(host, port) of an authority-form target on loopback, else None."""
    host, sep, raw = target.rpartition(":")
    if not sep or host not in LOOPBACK or not raw.isdigit() or not 0 < int(raw) < 65536:
        return None
    return host, int(raw)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, leftover: bytes) -> None:
    where = parse(target)
    if where is None:
        return _refuse(writer, 400, "invalid_argument", "CONNECT takes 127.0.0.1:<port> (loopback only)")
    host, port = where
    try:
        up_reader, up_writer = await asyncio.open_connection("::1" if host == "[::1]" else "127.0.0.1", port)
    except OSError:
        if host != "localhost":
            return _refuse(writer, 502, "port_not_open", f"The sandbox port is not open: {port}")
        try:  # a server bound to ::1 only
            up_reader, up_writer = await asyncio.open_connection("::1", port)
        except OSError:
            return _refuse(writer, 502, "port_not_open", f"The sandbox port is not open: {port}")
    writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
    if leftover:
        up_writer.write(leftover)
    to_app = asyncio.ensure_future(_pipe(reader, up_writer))
    to_client = asyncio.ensure_future(_pipe(up_reader, writer))
    try:
        await asyncio.wait({to_app, to_client}, return_when=asyncio.FIRST_COMPLETED)
        if to_app.done() and not to_client.done():
            await to_client  # the client is done sending: the app's answer still comes back
    finally:
        for t in (to_app, to_client):
            t.cancel()
        await asyncio.gather(to_app, to_client, return_exceptions=True)
        up_writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


def _refuse(writer: asyncio.StreamWriter, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": message, "code": code, "message": message}).encode()
    reason = b"Bad Gateway" if status == 502 else b"Bad Request"
    writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 % (status, reason, len(body)) + body)

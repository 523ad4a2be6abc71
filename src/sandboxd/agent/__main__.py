"""Run the agent: `python -I -m sandboxd.agent [--unix PATH | --port N | --fd N]`.

Inside a sandbox the host passes an already-listening unix socket as fd 3 (SANDBOXD_AGENT_FD=3).
"""
from __future__ import annotations

import sys

# asyncio imports ssl (libssl + libcrypto: ~4 MiB RSS and a good share of start-up) only to offer TLS,
# which the agent never serves. Keep it out while asyncio loads; a later `import ssl` (an https webhook
# callback) still works because the block is lifted right after.
_blocked = "ssl" not in sys.modules
if _blocked:
    sys.modules["ssl"] = None  # type: ignore[assignment]
import asyncio  # noqa: E402

if _blocked:
    del sys.modules["ssl"]

import argparse  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sandboxd.agent", description="sandboxd in-sandbox agent")
    p.add_argument("--fd", type=int, default=int(os.environ["SANDBOXD_AGENT_FD"])
                   if os.environ.get("SANDBOXD_AGENT_FD") else None, help="inherited listening socket fd")
    p.add_argument("--unix", help="listen on this unix socket path")
    p.add_argument("--port", type=int, help="listen on this TCP port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workspace", default=None, help="default working directory (default /workspace)")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    from .app import create_app
    from .server import serve_connection
    from .services import Services

    app = create_app(Services(workspace=args.workspace))

    async def on_conn(reader, writer):
        await serve_connection(reader, writer, app.dispatch, app.error_response)

    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(on_conn, path=args.unix)
    elif args.port is not None:
        server = await asyncio.start_server(on_conn, host=args.host, port=args.port)
    elif args.fd is not None:
        sock = socket.socket(fileno=args.fd)
        sock.setblocking(False)
        if sock.family == socket.AF_UNIX:
            server = await asyncio.start_unix_server(on_conn, sock=sock)
        else:
            server = await asyncio.start_server(on_conn, sock=sock)
    else:
        sys.exit("sandboxd.agent: give --fd, --unix or --port (or set SANDBOXD_AGENT_FD)")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sandboxd-agent ready pid={os.getpid()}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
    await app.services.shutdown()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()

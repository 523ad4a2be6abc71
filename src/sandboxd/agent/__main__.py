"""Run the agent: `python -I -m sandboxd.agent [--unix PATH | --port N | --fd N]`.

Inside a sandbox the host passes an already-listening unix socket as fd 3 (SANDBOXD_AGENT_FD=3).
"""
from __future__ import annotations

import gc
import sys

# Start-up allocates tens of thousands of objects that live for the agent's whole life (modules, classes,
# compiled regexes); cyclic collections while importing them find nothing to free and cost ~5 ms of every
# sandbox start. Re-enabled once the app is built, with the survivors frozen out of later collections.
_gc_paused = __name__ == "__main__" and gc.isenabled()
if _gc_paused:
    gc.disable()

# asyncio imports ssl (libssl + libcrypto: ~4 MiB RSS and a good share of start-up) only to offer TLS,
# which the agent never serves. Keep it out while asyncio loads; a later `import ssl` (an https webhook
# callback) still works because the block is lifted right after.
_blocked = "ssl" not in sys.modules
if _blocked:
    sys.modules["ssl"] = None  # type: ignore[assignment]
import asyncio  # noqa: E402

if _blocked:
    del sys.modules["ssl"]

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402

_OPTIONS = {"--fd": int, "--unix": str, "--port": int, "--host": str, "--workspace": str}


class Args:
    def __init__(self, fd: int | None = None, unix: str | None = None, port: int | None = None,
                 host: str = "127.0.0.1", workspace: str | None = None, doorbell: bool = False):
        self.fd, self.unix, self.port, self.host, self.workspace = fd, unix, port, host, workspace
        self.doorbell = doorbell  # the host hands the listening socket over the doorbell (agent/park.py)


def _env_fd() -> tuple[int | None, bool]:
    """SANDBOXD_AGENT_FD: a number (the inherited socket), or "doorbell" (an agent its sandbox's init started:
    the socket comes through the doorbell, so that no process but the agent ever holds it)."""
    v = os.environ.get("SANDBOXD_AGENT_FD")
    return (None, True) if v == "doorbell" else (int(v) if v else None, False)


def parse_args(argv: list[str] | None = None) -> Args:
    """The agent's few options. argparse costs ~3 ms of every sandbox start, so it only runs for what this
    loop does not understand (--help, a typo, a missing value), where its messages matter."""
    argv = sys.argv[1:] if argv is None else list(argv)
    fd, doorbell = _env_fd()
    args = Args(fd=fd, doorbell=doorbell)
    it = iter(argv)
    try:
        for a in it:
            name, eq, value = a.partition("=")
            kind = _OPTIONS.get(name)
            if kind is None:
                raise ValueError(a)
            setattr(args, name[2:], kind(value if eq else next(it)))
    except (ValueError, StopIteration):
        return _parse_args_slow(argv)
    return args


def _parse_args_slow(argv: list[str]) -> Args:
    import argparse

    p = argparse.ArgumentParser(prog="sandboxd.agent", description="sandboxd in-sandbox agent")
    p.add_argument("--fd", type=int, default=_env_fd()[0], help="inherited listening socket fd")
    p.add_argument("--unix", help="listen on this unix socket path")
    p.add_argument("--port", type=int, help="listen on this TCP port")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workspace", default=None, help="default working directory (default /workspace)")
    return Args(**vars(p.parse_args(argv)), doorbell=_env_fd()[1])


async def serve(args: Args) -> None:
    from .app import create_app
    from .server import serve_connection
    from .services import Services

    app = create_app(Services(workspace=args.workspace))
    if _gc_paused:
        gc.freeze()
        gc.enable()

    async def on_conn(reader, writer):
        await serve_connection(reader, writer, app.dispatch, app.error_response)

    server: asyncio.AbstractServer | None
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        server = await asyncio.start_unix_server(on_conn, path=args.unix)
    elif args.port is not None:
        server = await asyncio.start_server(on_conn, host=args.host, port=args.port)
    elif args.fd is not None:
        from .park import Channel

        channel = Channel(on_conn)  # the host's socket: let go of for a memory checkpoint (agent/park.py)
        await channel.listen(socket.socket(fileno=args.fd))
        app.services.channel = channel
        server = None
    elif args.doorbell:
        from .park import Channel

        channel = Channel(on_conn, fd=None)
        channel.await_host()
        app.services.channel = channel
        server = None
    else:
        sys.exit("sandboxd.agent: give --fd, --unix or --port (or set SANDBOXD_AGENT_FD)")

    local = await _local_interpreter(app)
    sudo = None
    if os.environ.get("SANDBOXD_AGENT_SUDO"):  # only in a sandbox: on the host (fake backend) it would be a real sudo
        from . import sudo as sudo_service

        sudo = await sudo_service.serve()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"sandboxd-agent ready pid={os.getpid()}", file=sys.stderr, flush=True)
    await stop.wait()
    if server is not None:
        server.close()
    if app.services.channel is not None:
        app.services.channel.close()
    if local is not None:
        local.close()
    if sudo is not None:
        sudo.cancel()
    await app.services.shutdown()


INTERPRETER_PREFIX = "/e2b/49999"  # where the agent serves E2B's code interpreter (agent/envd/routes.py)


async def _local_interpreter(app):
    """E2B's code interpreter also answers inside its sandbox, on 127.0.0.1:49999 (code there checks its
    health or calls it, as in E2B's templates). Only the interpreter's routes; a user named there is ignored
    (the interpreter acts as for a request that names none), and CONNECT opens no tunnel.
    Only where the runtime asks for it (SANDBOXD_AGENT_INTERPRETER_PORT): an agent run on the host itself (the
    fake backend) must not take a port of the host's. Nothing is served where the port is taken or the
    sandbox has no loopback."""
    from .server import serve_connection

    port = os.environ.get("SANDBOXD_AGENT_INTERPRETER_PORT", "")
    if not port.isdigit():
        return None

    async def dispatch(req):
        req.headers.pop("authorization", None)
        req.query.pop("username", None)
        req.path = INTERPRETER_PREFIX + req.path
        return await app.dispatch(req)

    async def on_conn(reader, writer):
        await serve_connection(reader, writer, dispatch, app.error_response, tunnels=False)

    try:
        return await asyncio.start_server(on_conn, host="127.0.0.1", port=int(port))
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()

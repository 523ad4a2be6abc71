"""`sandboxd serve`: the control plane and the gateway in one process (the embedded default)."""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Optional

import typer

if TYPE_CHECKING:  # the settings (pydantic-settings, ~0.2 s) load only when the server runs, not per CLI call
    from sandboxd.config import Settings

log = logging.getLogger("sandboxd.serve")


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Optional[str] = typer.Option(None, "--host", help="listen address (env SANDBOXD_HOST, default 127.0.0.1)"),
        port: Optional[int] = typer.Option(None, "--port", help="control-plane port (env SANDBOXD_PORT, default 8080)"),
        gateway_port: Optional[int] = typer.Option(
            None, "--gateway-port", help="gateway port (env SANDBOXD_GATEWAY_PORT, default port+1)"),
        log_level: str = typer.Option("info", "--log-level"),
    ) -> None:
        """Run the control plane (HopX + E2B APIs) and the sandbox gateway."""
        from sandboxd.config import Settings

        overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port, "gateway_port": gateway_port}.items() if v is not None}
        settings = Settings(**overrides)
        logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(run(settings, log_level=log_level))


async def run(settings: Settings, log_level: str = "info") -> None:
    import uvicorn

    from sandboxd.api.app import create_app
    from sandboxd.wiring import ControlPlane, make_gateway

    plane = ControlPlane.build(settings)
    if plane.backend.capabilities.isolation != "process":
        ensure_subreaper()
    given = settings.api_key.get_secret_value() if settings.api_key else None
    secret = plane.keys.bootstrap(given)
    if secret and not given:
        # Printed once: only its hash is stored.
        print(f"sandboxd: first admin API key (shown once, keep it): {secret}", flush=True)
    app = create_app(settings, plane, manage=False)
    await plane.start()
    gateway = make_gateway(plane)
    server = None
    try:
        await gateway.start(settings.host, settings.effective_gateway_port)
        config = api_config(app, settings, log_level)
        server = uvicorn.Server(config)
        print(f"sandboxd: control plane http://{settings.host}:{settings.port}  "
              f"gateway {settings.effective_public_host}  backend {settings.backend}  data {settings.data_dir}",
              flush=True)
        await server.serve()
    finally:
        await gateway.close()
        await plane.stop()


def api_config(app, settings: Settings, log_level: str = "info"):
    """uvicorn's settings for the control plane: its h11 parser under our head deadline and connection caps
    (api/listener.py), idle keep-alive connections closed after api_keep_alive_seconds. No uvicorn
    `limit_concurrency`: the listener's caps come first and answer in the API's error shape."""
    import uvicorn

    from sandboxd.api.listener import limits_from, protocol_for

    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                          lifespan="on", timeout_graceful_shutdown=5, http=protocol_for(limits_from(settings)),
                          # uvicorn annotates an int but only hands it to loop.call_later, which takes seconds
                          timeout_keep_alive=settings.api_keep_alive_seconds)  # type: ignore[arg-type]


PR_GET_CHILD_SUBREAPER = 37


def is_subreaper() -> bool:
    import ctypes

    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0 and flag.value != 0
    except OSError:
        return False


def ensure_subreaper() -> bool:
    """Detached containers (`crun run -d`) are re-parented to the nearest child subreaper: that must be us,
    so the runtime's reaper (runtime/reaper.py) can reap their inits. The crun/runc host setup
    (runtime/hostsetup.py) already does it when the backend is built; this only covers a backend that did
    not. Not for the fake backend: its agents are our own children, and other processes re-parented to us
    could not be reaped safely next to asyncio's child watcher."""
    if is_subreaper():
        return True
    from sandboxd.runtime.hostsetup import set_subreaper

    ok = set_subreaper()
    if not ok:
        log.warning("could not become a child subreaper; host PID 1 will adopt detached sandbox inits")
    return ok


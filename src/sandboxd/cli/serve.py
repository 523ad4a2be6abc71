"""`sandboxd serve`: the control plane and the gateway in one process (the embedded default)."""
from __future__ import annotations

import asyncio
import logging
from typing import Optional

import typer

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
        overrides = {k: v for k, v in {"host": host, "port": port, "gateway_port": gateway_port}.items() if v is not None}
        settings = Settings(**overrides)
        logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        asyncio.run(run(settings, log_level=log_level))


async def run(settings: Settings, log_level: str = "info") -> None:
    import uvicorn

    from sandboxd.api.app import create_app
    from sandboxd.core.services import Services
    from sandboxd.gateway.proxy import Gateway
    from sandboxd.gateway.routing import BearerResolver

    svc = Services.build(settings)
    given = settings.api_key.get_secret_value() if settings.api_key else None
    secret = svc.keys.bootstrap(given)
    if secret and not given:
        # Printed once: only its hash is stored.
        print(f"sandboxd: first admin API key (shown once, keep it): {secret}", flush=True)
    app = create_app(settings, svc, manage=False)
    await svc.start()
    gateway = Gateway([BearerResolver(svc.signer, svc.lifecycle)])
    try:
        from sandboxd.api import e2b

        extra = getattr(e2b, "gateway_resolver", None)
        if extra is not None:  # the E2B dialect routes by E2b-Sandbox-Id
            gateway.resolvers.insert(0, extra(svc))
    except ImportError:
        pass
    app.state.gateway = gateway
    svc.lifecycle.on_gone.append(lambda _sid, sock: gateway.forget(sock))
    server = None
    try:
        await gateway.start(settings.host, settings.effective_gateway_port)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level, access_log=False,
                                lifespan="on", timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        print(f"sandboxd: control plane http://{settings.host}:{settings.port}  "
              f"gateway {settings.effective_public_host}  backend {settings.backend}  data {settings.data_dir}",
              flush=True)
        await server.serve()
    finally:
        await gateway.close()
        await svc.stop()

"""`sandboxd setup`: prepare this host and make sure the built-in template images exist.

Safe to run any number of times: the host preparation is idempotent (the runtime's job) and images are
built only when missing for the current recipes (content hash), so a second run takes seconds.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, List, Optional

import typer

if TYPE_CHECKING:  # loaded by the command itself: every other CLI call would pay for pydantic-settings
    from sandboxd.config import Settings


def _prepare_host(settings: Settings) -> None:
    try:
        from sandboxd.runtime.hostsetup import prepare_host
    except ImportError:
        typer.echo("host: no runtime host set-up available in this version; skipped")
        return
    result = prepare_host(settings)
    if result:
        typer.echo(f"host: {result}")
    if result and result.layout != "n/a":  # a real runtime: the nft guard and its egress floor are in place
        from sandboxd.runtime import network

        typer.echo(f"egress floor: non-public IPv4 ranges closed to sandboxes; opened by the operator "
                   f"(SANDBOXD_EGRESS_ALLOW_CIDRS): {', '.join(network.floor_openings()) or 'none'}; "
                   f"resolvers reachable on port 53: {', '.join(network.host_resolvers()) or 'none'}")


def _ensure_criu(settings: Settings) -> None:
    """A CRIU that can pause sandboxes to disk (runtime/criutools.py); without one, pause freezes in RAM."""
    if settings.criu != "auto":
        return
    from sandboxd.runtime import criutools

    try:
        criutools.ensure_root(settings.tools_dir, say=typer.echo)
    except (OSError, RuntimeError) as exc:
        typer.echo(f"criu: no private tools root ({exc}); pause keeps sandboxes in RAM", err=True)
    found, why = criutools.find(settings.criu, settings.tools_dir)
    typer.echo(f"criu: {found.version} ({found.source}): pause writes sandboxes to disk" if found
               else f"criu: {why}; pause keeps sandboxes in RAM")


async def _ensure_desktop(store, settings: Settings, log):
    # The desktop image is derived FROM base through a real build sandbox, so it needs the runtime backend.
    from sandboxd.runtime import get_backend
    from sandboxd.templates import desktop

    return await desktop.ensure(store, log, backend=get_backend(settings))


def register(app: typer.Typer) -> None:
    @app.command("setup")
    def setup(
        templates: Optional[List[str]] = typer.Option(
            None, "--template", "-t", help="built-in template(s) to ensure (default: all)"),
        skip_host: bool = typer.Option(False, "--skip-host", help="do not prepare the host (cgroups, network)"),
        skip_templates: bool = typer.Option(False, "--skip-templates", help="do not build template images"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="only print a summary"),
        skip_desktop: bool = typer.Option(False, "--skip-desktop", help="do not build the desktop template"),
    ) -> None:
        """Prepare the host and build the built-in templates that are missing."""
        from pydantic import ValidationError

        from sandboxd.config import Settings
        from sandboxd.errors import SandboxdError
        from sandboxd.templates.bases import BUILTINS
        from sandboxd.templates.store import TemplateStore

        try:
            settings = Settings()
        except ValidationError as exc:  # a bad SANDBOXD_* variable: say which, without a traceback
            for err in exc.errors():
                typer.echo(f"setup failed: SANDBOXD_{'_'.join(map(str, err['loc'])).upper()}: {err['msg']}", err=True)
            raise typer.Exit(2) from None
        started = time.monotonic()
        try:
            if not skip_host:
                _prepare_host(settings)
                _ensure_criu(settings)
            if not skip_templates:
                unknown = [t for t in templates or [] if t not in BUILTINS]
                if unknown:
                    raise typer.BadParameter(f"not a built-in template: {', '.join(unknown)}")
                store = TemplateStore(settings)
                log = (lambda line: None) if quiet else typer.echo
                images = asyncio.run(store.ensure_builtins(log, names=templates or None))
                if not skip_desktop and not templates:
                    images.append(asyncio.run(_ensure_desktop(store, settings, log)))
                for image in images:
                    typer.echo(f"template {image.name}: {image.content_hash[:12]} at {image.layers[0]}")
                # Layers of older recipes (an upgrade) and of deleted templates, unless a sandbox uses them.
                freed = store.gc(keep=store.layers_in_use(settings.data_dir))
                if freed:
                    typer.echo(f"removed {len(freed)} template layer(s) no image or sandbox uses")
        except SandboxdError as exc:
            typer.echo(f"setup failed: {exc.message}", err=True)
            tail = exc.details.get("log_tail") if exc.details else None
            if tail:
                typer.echo(tail, err=True)
            raise typer.Exit(1) from None
        typer.echo(f"setup done in {time.monotonic() - started:.1f}s")

"""`sandboxd template ...`: build templates from a directory, list and remove them."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sandboxd.cli.common import WIDE, client, err, fail, handles_errors, print_json, table, when

app = typer.Typer(no_args_is_help=True)


@app.command()
@handles_errors
def build(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="holds a Dockerfile"),
          name: Optional[str] = typer.Option(None, "--name", "-n", help="template name (default: dir name)"),
          cpu: int = typer.Option(2), memory: int = typer.Option(2048, help="MiB"),
          disk: int = typer.Option(10, help="GiB"),
          update: bool = typer.Option(False, "--update", help="rebuild the template if it exists"),
          no_cache: bool = typer.Option(False, "--no-cache"),
          build_arg: list[str] = typer.Option([], "--build-arg", help="NAME=VALUE for an ARG (repeatable)"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no log lines")) -> None:
    """Build a template from DIRECTORY/Dockerfile (docs/templates.md lists the instructions), with a live
    progress bar and the build log streamed above it."""
    from sandboxd.sdk import ConflictError

    name = name or directory.resolve().name
    args = {a.partition("=")[0]: a.partition("=")[2] if "=" in a else os.environ.get(a, "") for a in build_arg}
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                        TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=err, transient=False)
    with progress, client() as c:
        task = progress.add_task(f"building {name}", total=100, step="")

        def on_log(line: str) -> None:
            if not quiet:
                progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

        def on_progress(pct: int, step: Optional[str]) -> None:
            progress.update(task, completed=pct, step=step or "")

        try:
            result = c.build_template(directory, name, cpu=cpu, memory_mb=memory, disk_gb=disk, update=update,
                                      skip_cache=no_cache, build_args=args, on_log=on_log, on_progress=on_progress)
        except ConflictError as e:  # the API's advice names its body field; here it is a flag
            fail(e.message.replace("send update=true", "use --update"))
        progress.update(task, completed=100, step="done")
    sys.stdout.write(f"{name} {result['template_id']} {result.get('status')}\n")


@app.command("list")
@handles_errors
def list_(as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """List templates."""
    with client() as c:
        items = c.list_templates()
    if as_json:
        return print_json(items)
    table(["ID", "NAME", "STATUS", "CREATED", "DESCRIPTION"],
          [[t.id, t.name, t.status, when(t.created_at), t.description] for t in items])


@app.command()
@handles_errors
def rm(names: list[str] = typer.Argument(..., metavar="TEMPLATE...")) -> None:
    """Remove templates (by name or id)."""
    with client() as c:
        for n in names:
            c.delete_template(n)
            sys.stdout.write(f"removed {n}\n")


def _shown(v: Any) -> Any:
    if isinstance(v, dict):
        return ", ".join(f"{k}={x}" for k, x in v.items())
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return v


@app.command()
@handles_errors
def info(template: str, as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Show one template (by name or id): status, resources, build, visibility."""
    with client() as c:
        t = c.get_template(template)
    wire = {k: v for k, v in t.raw.items() if k != "request_id"}
    if as_json:
        return print_json(wire)
    table(["FIELD", "VALUE"], [[k, _shown(v)] for k, v in wire.items()])


@app.command()
@handles_errors
def logs(template: str, follow: bool = typer.Option(False, "--follow", "-f", help="until the build ends")) -> None:
    """The log of a template's newest build (by name or id); --follow waits for a running build to end."""
    with client() as c:
        template_id = c.get_template(template).id
        offset = 0
        while True:
            page = c.build_logs(template_id, offset)
            sys.stdout.write(page.get("logs") or "")
            sys.stdout.flush()
            offset = page.get("offset", offset)
            if page.get("complete") or (not follow and not page.get("logs")):
                break
            if page.get("status") == "building":
                time.sleep(1)

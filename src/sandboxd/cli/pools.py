"""`sandboxd pools list/set/delete`: warm pools of ready sandboxes per template (docs/performance.md), on the SDK."""
from __future__ import annotations

import sys
from typing import List

import typer

from sandboxd.cli.common import WIDE, client, handles_errors, print_json, table

app = typer.Typer(no_args_is_help=True)


def _lag(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}s"


@app.command("list")
@handles_errors
def list_(as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Pools with their target size, ready and filling sandboxes, hits and misses, refill lag."""
    with client() as c:
        rows = c.list_pools()
    if as_json:
        return print_json(rows)
    table(["TEMPLATE", "TARGET", "READY", "FILLING", "HITS", "MISSES", "REFILL", "ERROR"],
          [[p["template_name"], p["target"], p["ready"], p["filling"], p["hits"], p["misses"],
            _lag(p.get("last_refill_lag_seconds")), p.get("last_error")] for p in rows])


@app.command("set")
@handles_errors
def set_(template: str, size: int = typer.Argument(..., min=0, help="sandboxes to keep ready"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Keep SIZE sandboxes of TEMPLATE ready, so creating one skips the cold start."""
    with client() as c:
        p = c.set_pool(template, size)
    if as_json:
        return print_json(p)
    sys.stdout.write(f"{p['template_name']} target {p['target']} (ready {p['ready']})\n")


@app.command()
@handles_errors
def delete(templates: List[str] = typer.Argument(..., metavar="TEMPLATE...")) -> None:
    """Turn pools off: their waiting sandboxes are removed (the same as `set TEMPLATE 0`)."""
    with client() as c:
        for t in templates:
            p = c.set_pool(t, 0)
            sys.stdout.write(f"{p['template_name']} pool deleted\n")

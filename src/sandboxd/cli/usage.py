"""`sandboxd usage`: running time per team and sandbox in a window (docs/teams.md "Usage"), on the SDK."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from sandboxd.cli.common import WIDE, client, handles_errors, print_json, table, when

COLUMNS = ["SANDBOX", "TEMPLATE", "SECONDS", "VCPU-SECONDS", "GIB-SECONDS"]


def _amounts(u) -> list[str]:  # an SDK TeamUsage or SandboxUsage
    return [f"{u.sandbox_seconds:.1f}", f"{u.vcpu_seconds:.1f}", f"{u.gib_seconds:.1f}"]


@handles_errors
def usage(from_: Optional[str] = typer.Option(None, "--from", help="ISO 8601 time (default: 30 days before --to)"),
          to: Optional[str] = typer.Option(None, "--to", help="ISO 8601 time (default: now)"),
          team: Optional[str] = typer.Option(None, "--team", help="one team, by id or name (operator key)"),
          sandbox: Optional[str] = typer.Option(None, "--sandbox", help="one sandbox"),
          as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Running time per team and sandbox (paused and stopped time are not counted): each team's totals, then a
    table of its sandboxes, most used first."""
    with client() as c:
        report = c.usage(from_, to, team=team, sandbox_id=sandbox)
    if as_json:
        return print_json(report)
    sys.stdout.write(f"Usage from {when(report.start)} to {when(report.end)} UTC\n")
    for t in report.teams:
        seconds, vcpu, gib = _amounts(t)
        sys.stdout.write(f"\nTeam {t.team_name or '-'} ({t.team_id}): {seconds} s, {vcpu} vCPU-s, {gib} GiB-s\n")
        sys.stdout.flush()
        if t.sandboxes:
            table(COLUMNS, [[s.sandbox_id, s.template_id, *_amounts(s)] for s in t.sandboxes])


def register(app: typer.Typer) -> None:
    app.command("usage")(usage)

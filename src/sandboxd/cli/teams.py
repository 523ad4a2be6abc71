"""`sandboxd teams ...`: teams and their quotas (the operator's key in SANDBOXD_API_KEY; `show` with no team: the
key's own team, for any key). docs/teams.md."""
from __future__ import annotations

import sys
from typing import Any, Optional

import typer

from sandboxd.cli.common import client, fail, handles_errors, print_json, table, when

app = typer.Typer(no_args_is_help=True)

QUOTA_HELP = "a number, or 'none' to clear the quota"


@app.command("list")
@handles_errors
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List teams with their quotas."""
    with client() as c:
        teams = c.list_teams()
    if as_json:
        return print_json(teams)
    table(["ID", "NAME", "CREATED", "QUOTAS"],
          [[t.id, t.name, when(t.created_at), _quotas(t.quotas) or "none"] for t in teams])


@app.command()
@handles_errors
def create(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Create a team; give it keys with `sandboxd keys create --team NAME`."""
    with client() as c:
        team = c.create_team(name)
    if as_json:
        return print_json(team)
    sys.stdout.write(team.id + "\n")


@app.command()
@handles_errors
def delete(team: str) -> None:
    """Delete an empty team (no live keys, no sandboxes)."""
    with client() as c:
        gone = c.delete_team(team)
    sys.stdout.write(f"deleted {gone.id} ({gone.name})\n")


@app.command()
@handles_errors
def show(team: Optional[str] = typer.Argument(None, help="id or name; default: the key's own team"),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a team's quotas and what it uses now."""
    with client() as c:
        t = c.get_team(team)
    if as_json:
        return print_json(t)
    _print(t)


@app.command()
@handles_errors
def quota(team: Optional[str] = typer.Argument(None, help="id or name (the operator); none: a team admin's own "
                                                       "limits for its team, within the operator's quotas"),
          max_sandboxes: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          max_vcpu: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          max_memory_mb: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          max_disk_mb: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          max_templates: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          max_creates_per_minute: Optional[str] = typer.Option(None, help=QUOTA_HELP),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """Set a team's quotas; the ones not given stay as they are."""
    given = {"max_sandboxes": max_sandboxes, "max_vcpu": max_vcpu, "max_memory_mb": max_memory_mb,
             "max_disk_mb": max_disk_mb, "max_templates": max_templates,
             "max_creates_per_minute": max_creates_per_minute}
    changes = {name: _limit(name, v) for name, v in given.items() if v is not None}
    if not changes:
        fail("give at least one quota, e.g. --max-sandboxes 10 (see --help)")
    with client() as c:
        t = c.set_quotas(team, **changes)
    if as_json:
        return print_json(t)
    _print(t)


def _limit(name: str, value: str) -> int | None:
    if value.lower() == "none":
        return None
    if not value.isdigit():
        fail(f"--{name.replace('_', '-')} must be a non-negative integer or 'none', got {value!r}")
    return int(value)


def _quotas(quotas: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in quotas.items() if v is not None)


def _print(t) -> None:
    rows: list[list[Any]] = [["id", t.id], ["name", t.name], ["created_at", when(t.created_at)]]
    rows += [[k, "no limit" if v is None else v] for k, v in t.quotas.items()]
    rows += [[f"in use: {k}", v] for k, v in t.usage_now.items()]
    table(["FIELD", "VALUE"], rows)

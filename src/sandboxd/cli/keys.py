"""`sandboxd keys ...`: API-key management (needs an admin key in SANDBOXD_API_KEY)."""
from __future__ import annotations

import sys
from typing import Optional

import typer

from sandboxd.cli.common import client, handles_errors, print_json, table, when

app = typer.Typer(no_args_is_help=True)


@app.command()
@handles_errors
def create(name: str, admin: bool = typer.Option(False, "--admin", help="may manage keys"),
           rate_limit: Optional[int] = typer.Option(None, help="requests per minute"),
           team: Optional[str] = typer.Option(None, help="team id or name; default: the caller's"),
           role: Optional[str] = typer.Option(None, help="admin (manages the team's keys) or member"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Create a key and print its secret (shown only once)."""
    with client() as c:
        key = c.create_key(name, admin=admin, rate_limit_per_minute=rate_limit, team=team, role=role)
    if as_json:
        return print_json(key)
    sys.stdout.write(f"{key.key}\n")
    sys.stderr.write(f"created key {key.id} ({key.name}); store the secret now, it is not shown again\n")


@app.command("list")
@handles_errors
def list_(as_json: bool = typer.Option(False, "--json")) -> None:
    """List keys (never their secrets)."""
    with client() as c:
        keys = c.list_keys()
    if as_json:
        return print_json(keys)
    table(["ID", "NAME", "ADMIN", "TEAM", "ROLE", "CREATED", "REVOKED"],
          [[k.id, k.name, "yes" if k.admin else "", k.team_id, k.role, when(k.created_at), "yes" if k.revoked else ""]
           for k in keys])


@app.command()
@handles_errors
def revoke(key_id: str) -> None:
    """Revoke a key; requests made with it fail from now on."""
    with client() as c:
        c.revoke_key(key_id)
    sys.stdout.write(f"revoked {key_id}\n")

"""`sandboxd webhooks add/list/update/enable/disable/rm/deliveries`: E2B-style lifecycle webhooks, on the SDK."""
from __future__ import annotations

import secrets
import sys
from typing import Any, List, Optional

import typer

from sandboxd.cli.common import WIDE, client, fail, handles_errors, print_json, table

app = typer.Typer(no_args_is_help=True)
# E2B's lifecycle event types (docs/monitoring.md), spelled here and not imported from the server's
# core.events, which the client-only package does not ship; a unit test keeps the two equal.
LIFECYCLE_TYPES = tuple(f"sandbox.lifecycle.{e}" for e in
                        ("created", "updated", "paused", "resumed", "checkpointed", "killed"))


def _event_types(short: list[str] | None) -> list[str]:
    if not short:
        return list(LIFECYCLE_TYPES)
    out = []
    for e in short:
        full = e if e.startswith("sandbox.lifecycle.") else f"sandbox.lifecycle.{e}"
        if full not in LIFECYCLE_TYPES:
            fail(f"unknown event {e!r}; use one of: {', '.join(t.rsplit('.', 1)[-1] for t in LIFECYCLE_TYPES)}")
        out.append(full)
    return out


@app.command()
@handles_errors
def add(name: str, url: str,
        event: Optional[List[str]] = typer.Option(None, "--event", "-e", help="created, killed, ... (repeat; default all)"),
        secret: Optional[str] = typer.Option(None, help="signature secret (default: generated and printed once)"),
        disabled: bool = typer.Option(False, "--disabled"), as_json: bool = typer.Option(False, "--json")) -> None:
    """Register a webhook; its deliveries are signed with the secret (header e2b-signature)."""
    generated = secret is None
    secret = secret or secrets.token_urlsafe(32)
    with client() as c:
        w = c.create_webhook(name, url, _event_types(event), secret, enabled=not disabled)
    if as_json:
        return print_json(w)
    sys.stdout.write(f"{w['id']}\n")
    if generated:
        sys.stderr.write(f"signature secret (shown only now): {secret}\n")


@app.command("list")
@handles_errors
def list_(as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """List webhooks (never their secrets)."""
    with client() as c:
        rows = c.list_webhooks()
    if as_json:
        return print_json(rows)
    table(["ID", "NAME", "URL", "ENABLED", "EVENTS"],
          [[w["id"], w["name"], w["url"], "yes" if w["enabled"] else "no",
            ",".join(e.rsplit(".", 1)[-1] for e in w["events"])] for w in rows])


@app.command()
@handles_errors
def update(webhook_id: str, name: Optional[str] = typer.Option(None, help="new name"),
           url: Optional[str] = typer.Option(None, help="new receiver URL"),
           event: Optional[List[str]] = typer.Option(None, "--event", "-e", help="replaces the events (repeat)"),
           secret: Optional[str] = typer.Option(None, help="new signature secret"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Change a webhook's name, URL, events or secret; what is not given is kept."""
    changes: dict[str, Any] = {k: v for k, v in (("name", name), ("url", url), ("signatureSecret", secret))
                               if v is not None}
    if event:
        changes["events"] = _event_types(event)
    if not changes:
        fail("nothing to change: give --name, --url, --event or --secret")
    _change(webhook_id, changes, as_json)


@app.command()
@handles_errors
def enable(webhook_id: str) -> None:
    """Deliver events to this webhook again."""
    _change(webhook_id, {"enabled": True}, False)


@app.command()
@handles_errors
def disable(webhook_id: str) -> None:
    """Stop delivering events to this webhook (it is kept, with its log)."""
    _change(webhook_id, {"enabled": False}, False)


def _change(webhook_id: str, changes: dict, as_json: bool) -> None:
    with client() as c:
        w = c.update_webhook(webhook_id, **changes)
    if as_json:
        return print_json(w)
    sys.stdout.write(f"{w['id']} {'enabled' if w['enabled'] else 'disabled'} {w['url']}\n")


@app.command()
@handles_errors
def rm(webhook_ids: List[str] = typer.Argument(..., metavar="WEBHOOK_ID...")) -> None:
    """Delete webhooks; their queued deliveries are dropped."""
    with client() as c:
        for wid in webhook_ids:
            c.delete_webhook(wid)
            sys.stdout.write(f"deleted {wid}\n")


@app.command()
@handles_errors
def deliveries(webhook_id: str, limit: int = typer.Option(50, min=1, max=1000),
               status: Optional[str] = typer.Option(None, help="pending | delivered | failed"),
               as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """The delivery log of a webhook: status, attempts, response code, latency; newest first."""
    with client() as c:
        rows = c.webhook_deliveries(webhook_id, limit=limit, status=status)
    if as_json:
        return print_json(rows)
    table(["EVENT", "TYPE", "SANDBOX", "STATUS", "ATTEMPTS", "CODE", "MS", "UPDATED", "ERROR"],
          [[d["eventId"], d["eventType"].rsplit(".", 1)[-1], d["sandboxId"], d["deliveryStatus"], d["attempts"],
            d["responseStatusCode"], d["durationMs"], d["updatedAt"], d["error"]] for d in rows])

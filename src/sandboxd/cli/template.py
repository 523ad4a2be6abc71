"""`sandboxd template ...` commands (to be filled in; see the issue that owns this group)."""
from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)

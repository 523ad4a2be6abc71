"""What every `sandboxd` command group shares: the SDK client (SANDBOXD_URL, SANDBOXD_API_KEY), tables and
JSON on stdout, and errors as one line on stderr with a non-zero exit."""
from __future__ import annotations

import dataclasses
import functools
import json
import sys
from datetime import datetime
from typing import Any, Callable, NoReturn

import typer
from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handles_errors(fn: Callable) -> Callable:
    """Turn SDK errors into one clear line and a non-zero exit (no traceback for expected failures)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sandboxd.sdk import SandboxError

        try:
            return fn(*args, **kwargs)
        except SandboxError as e:
            fail(str(e))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except OSError as e:
            fail(f"{e.strerror or e}: {e.filename}" if getattr(e, "filename", None) else str(e))

    return wrapper


def plain(obj: Any) -> Any:
    """JSON-ready form of SDK results (dataclasses, datetimes), without the bulky `raw` copies."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != "raw"}
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (list, tuple)):
        return [plain(x) for x in obj]
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    return obj


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(plain(obj), indent=2, default=str) + "\n")


def table(columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(header_style="bold")
    for i, c in enumerate(columns):
        # Ids must stay whole (people copy them); the other columns fold on narrow terminals.
        t.add_column(c, no_wrap=i == 0, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    out.print(t)


def when(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%d %H:%M:%S") if d else ""


def client():
    from sandboxd.sdk import Client

    return Client()

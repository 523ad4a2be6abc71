"""What every `sandboxd` command group shares: the SDK client (SANDBOXD_URL, SANDBOXD_API_KEY), tables and
JSON on stdout, and errors as one line on stderr with a non-zero exit."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from datetime import datetime
from typing import Any, Callable, NoReturn

import typer
from rich.console import Console
from rich.table import Table


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich's own answer is exit code 1
        pipe_closed()


out = _Console()
err = _Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def pipe_closed() -> NoReturn:
    """The reader went away (`| head`): end quietly with 0, as Unix tools do. Later writes (and the flush at
    exit) go to /dev/null so Python prints no second error."""
    _stdout_to_devnull()
    raise typer.Exit(0)


def _stdout_to_devnull() -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def handles_errors(fn: Callable) -> Callable:
    """Turn SDK errors into one clear line and a non-zero exit (no traceback for expected failures)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from sandboxd.sdk import SandboxError

        try:
            result = fn(*args, **kwargs)
            sys.stdout.flush()
            return result
        except SandboxError as e:
            fail(str(e))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except BrokenPipeError:
            pipe_closed()
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


# Columns people copy from (ids, names, URLs) are never cut; the others are truncated with an ellipsis to
# fit the terminal, or shown whole with --wide.
WHOLE = {"ID", "FIELD", "NAME", "SANDBOX", "TEMPLATE", "URL", "EVENT", "VALUE", "WEBHOOK"}
MIN_CUT = 6  # a truncated column keeps this many characters, ellipsis included
_wide = False


def _set_wide(value: bool) -> bool:
    global _wide
    _wide = value
    return value


WIDE = typer.Option(False, "--wide", callback=_set_wide, help="never truncate table columns")


def _fit(widths: list[int], whole: list[bool], room: int) -> list[int]:
    """Cut the widest truncatable columns first until the row fits in `room` characters (or none can
    shrink further: then the table is wider than the terminal, but no id is broken)."""
    widths = list(widths)
    while sum(widths) > room:
        cut = [i for i, w in enumerate(widths) if not whole[i] and w > MIN_CUT]
        if not cut:
            break
        i = max(cut, key=lambda j: widths[j])
        widths[i] -= 1
    return widths


def table(columns: list[str], rows: list[list[Any]]) -> None:
    cells = [["" if v is None else str(v) for v in r] for r in rows]
    natural = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    whole = [_wide or c in WHOLE for c in columns]
    frame = 3 * len(columns) + 1  # borders and one space of padding each side
    widths = _fit(natural, whole, out.width - frame)
    t = Table(header_style="bold")
    for c, w in zip(columns, widths):
        t.add_column(c, no_wrap=True, overflow="ellipsis", width=w)
    for r in cells:
        t.add_row(*r)
    need = sum(widths) + frame
    # Console.print never goes past the console's width: a wider table gets a console of its own.
    (out if need <= out.width else _Console(width=need)).print(t, crop=False)


def when(d: datetime | None) -> str:
    return d.strftime("%Y-%m-%d %H:%M:%S") if d else ""


def client():
    from sandboxd.sdk import Client

    return Client()


def hide_flag_types() -> None:
    """Typer's help shows a type beside every option, so flags read `--json <bool>` as if they took a value;
    a flag (`--x` or `--x/--no-x`) shows none."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    if getattr(shown, "hides_flag_types", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    display_type_rich.hides_flag_types = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def _print_version(value: bool) -> None:
    if value:
        from sandboxd import __version__

        sys.stdout.write(f"sandboxd {__version__}\n")
        raise typer.Exit()


def version_option(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                                help="Print the version and exit.")) -> None:
    """Self-hosted isolated sandboxes."""


class SandboxdApp(typer.Typer):
    """The root app: flag help without types, and a reader that closed the pipe (`| head`) ends the command
    with 0 wherever it happened (Click alone would exit 1)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        hide_flag_types()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("prog_name", "sandboxd")  # also under `python -m`: help and completion name the command
        stdout = sys.stdout
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as e:
            if sys.stdout is not stdout:  # Click met EPIPE outside our commands: it wraps stdout and exits 1
                raise SystemExit(0) from None
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                _stdout_to_devnull()
                raise SystemExit(e.code or 0) from None
            raise

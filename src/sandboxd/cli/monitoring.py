"""`sandboxd sandbox metrics <id> [--follow]` and `sandboxd sandbox events [<id>]`, on the SDK.

The lead wires it with `monitoring.register(sandbox.app)`. Metric lines follow the E2B CLI's format:
`[2025-07-25 14:05:55Z]  CPU:  8.27% /  2 Cores | Memory:    31 / 484   MiB | Disk:  1445 / 2453  MiB`.
"""
from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional

import typer

from sandboxd.cli.common import WIDE, client, handles_errors, plain, print_json, table, when
from sandboxd.sdk._sse import sse_frames

MIB = 1 << 20


def metric_line(ts: datetime | float | None, cpu_pct: float, cores: int, mem_used: int, mem_total: int,
                disk_used: int, disk_total: int) -> str:
    if isinstance(ts, (int, float)):
        ts = datetime.fromtimestamp(ts, timezone.utc)
    when = ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ") if ts else "-"
    pct = f"{round(cpu_pct, 2):g}"
    return (f"[{when}]  CPU: {pct:>5}% / {cores:>2} Cores | Memory: {mem_used // MIB:>5} / {mem_total // MIB:<5} MiB"
            f" | Disk: {disk_used // MIB:>5} / {disk_total // MIB:<5} MiB")


def _line_of(m) -> str:  # an SDK Metric
    return metric_line(m.timestamp, m.cpu_used_pct, m.cpu_count, m.mem_used, m.mem_total, m.disk_used, m.disk_total)


def _line_of_system(s: dict[str, Any]) -> str:  # an SSE frame's `system` block (HopX contract §5.6)
    cpu, mem, disk = s.get("cpu") or {}, s.get("memory") or {}, s.get("disk") or {}
    return metric_line(s.get("sampled_at"), float(cpu.get("usage_percent", 0)), int(cpu.get("cores", 0)),
                       int(mem.get("used", 0)), int(mem.get("total", 0)), int(disk.get("used", 0)),
                       int(disk.get("total", 0)))


def _monitor_system(data: Any) -> dict[str, Any] | None:
    """The frame's `system` block when it carries the monitor's sample (not only the agent's own view)."""
    system = data.get("system") if isinstance(data, dict) else None
    if isinstance(system, dict) and system.get("source") == "monitor" and isinstance(system.get("sampled_at"), (int, float)):
        return system
    return None


def _follow(client, sandbox_id: str, last_ts: float | None) -> None:
    """Print new samples as the control plane's SSE metrics stream ticks. Frames whose `system` block holds
    the monitor's sample are printed directly; otherwise (no monitor) each frame triggers a history read."""
    from sandboxd.sdk import NotFoundError

    path = f"/v1/sandboxes/{sandbox_id}/metrics/stream"
    try:
        with client.http.stream("GET", path, timeout=None) as resp:
            _print_frames(client, sandbox_id, resp.iter_lines(), last_ts)
    except NotFoundError:  # killed before (or while) we connected: same ending as the stream's `end` event
        sys.stdout.write(f"sandbox {sandbox_id} ended\n")


def _print_frames(client, sandbox_id: str, lines: Iterator[str], last_ts: float | None) -> None:
    for event, data in sse_frames(lines):
        if event == "end":
            sys.stdout.write(f"sandbox {sandbox_id} ended\n")
            return
        system = _monitor_system(data)
        if system is not None:
            # Whole seconds: the history's timestamps are, so the sample it ended with is not printed again.
            if last_ts is None or int(system["sampled_at"]) > int(last_ts):
                last_ts = float(system["sampled_at"])
                sys.stdout.write(_line_of_system(system) + "\n")
                sys.stdout.flush()
            continue
        start = int(last_ts) if last_ts is not None else None
        for m in client.get_metrics(sandbox_id, start=start):
            ts = m.timestamp.timestamp() if m.timestamp else 0
            if last_ts is None or ts > last_ts:
                last_ts = ts
                sys.stdout.write(_line_of(m) + "\n")
        sys.stdout.flush()


UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_time(value: str) -> datetime:
    """`--since`: an age (90s, 10m, 2h, 1d) or an ISO 8601 time (UTC unless it names an offset)."""
    number, unit = value[:-1], value[-1:].lower()
    if unit in UNITS and number.replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=float(number) * UNITS[unit])
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is neither an age like 10m, 2h, 1d nor an ISO 8601 time") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@handles_errors
def metrics(sandbox_id: str,
            follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new samples (SSE stream)"),
            since: Optional[str] = typer.Option(None, help="only samples from then on: 10m, 2h, 1d or an ISO time"),
            limit: Optional[int] = typer.Option(None, min=1, help="only the newest N samples of the history"),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Resource usage history of a sandbox: CPU, memory and disk, one line per sample."""
    start = since_time(since) if since else None
    with client() as c:
        rows = c.get_metrics(sandbox_id, start=start)
        if limit is not None:
            rows = rows[-limit:]
        if as_json:
            return print_json(rows)
        sys.stdout.write(f"Metrics for sandbox {sandbox_id}\n\n")
        for m in rows:
            sys.stdout.write(_line_of(m) + "\n")
        sys.stdout.flush()
        if follow:
            last = rows[-1].timestamp.timestamp() if rows and rows[-1].timestamp else None
            _follow(c, sandbox_id, last)


def _details(data: dict[str, Any]) -> str:
    parts = []
    if data.get("kill_reason"):
        parts.append(f"reason={data['kill_reason']}")
    if data.get("set_timeout"):
        parts.append(f"timeout={data['set_timeout']}")
    ex = data.get("execution")
    if isinstance(ex, dict) and "execution_time" in ex:
        parts.append(f"ran={ex['execution_time'] / 1000:.1f}s")
    return " ".join(parts)


@handles_errors
def events(sandbox_id: Optional[str] = typer.Argument(None, help="one sandbox; all sandboxes when left out"),
           limit: int = typer.Option(10, min=1, max=100), offset: int = typer.Option(0, min=0),
           oldest_first: bool = typer.Option(False, "--oldest-first"),
           follow: bool = typer.Option(False, "--follow", "-f", help="the last LIMIT events, then new ones as "
                                       "they happen, one line each (Ctrl-C ends)"),
           as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
    """Lifecycle events (created, updated, paused, resumed, checkpointed, killed), newest first."""
    if follow:
        return _follow_events(sandbox_id, limit, as_json)
    with client() as c:
        rows = c.events(sandbox_id, limit=limit, offset=offset, oldest_first=oldest_first)
    if as_json:
        return print_json(rows)
    table(["TIME", "TYPE", "SANDBOX", "DETAILS"],
          [[when(e.timestamp), e.type.rsplit(".", 1)[-1], e.sandbox_id, _details(e.data)] for e in rows])


def _event_line(e) -> str:  # an SDK SandboxEvent
    return f"{when(e.timestamp)}  {e.type.rsplit('.', 1)[-1]:<12}  {e.sandbox_id or '-'}  {_details(e.data)}".rstrip()


def _follow_events(sandbox_id: str | None, limit: int, as_json: bool) -> None:
    """History, then the live stream (opened first, so nothing falls between); an event in both is
    printed once. JSON output is one object per line."""
    def emit(e) -> None:
        sys.stdout.write((json.dumps(plain(e), default=str) if as_json else _event_line(e)) + "\n")
        sys.stdout.flush()

    with client() as c, c.event_stream() as live:
        recent = c.events(sandbox_id, limit=limit, oldest_first=False)
        seen = {(e.type, e.sandbox_id, when(e.timestamp)) for e in recent}
        for e in reversed(recent):
            emit(e)
        for e in live:
            if sandbox_id and e.sandbox_id != sandbox_id:
                continue
            if (e.type, e.sandbox_id, when(e.timestamp)) in seen:
                continue
            emit(e)


def register(sandbox_app: typer.Typer) -> None:
    sandbox_app.command("metrics")(metrics)
    sandbox_app.command("events")(events)

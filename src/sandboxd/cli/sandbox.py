"""`sandboxd sandbox ...`: a thin layer over the SDK. Reads SANDBOXD_URL and SANDBOXD_API_KEY.
Every listing takes --json; every error prints one line on stderr and exits non-zero."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from sandboxd.cli.common import client, fail, handles_errors, print_json, table, when

app = typer.Typer(no_args_is_help=True)


def _info_rows(info) -> list[list[Any]]:
    return [["id", info.id], ["status", info.status], ["template", info.template_name or info.template_id],
            ["public_host", info.public_host], ["created_at", when(info.created_at)],
            ["expires_at", when(info.expires_at)], ["timeout_seconds", info.timeout_seconds],
            ["resources", ", ".join(f"{k}={v}" for k, v in info.resources.items())],
            ["metadata", ", ".join(f"{k}={v}" for k, v in info.metadata.items())]]


def _pairs(values: list[str] | None, what: str) -> dict[str, str] | None:
    if not values:
        return None
    result = {}
    for v in values:
        k, sep, val = v.partition("=")
        if not sep or not k:
            fail(f"{what} must look like KEY=VALUE, got {v!r}")
        result[k] = val
    return result


# -- lifecycle ------------------------------------------------------------------------------------------------
@app.command()
@handles_errors
def create(template: str = typer.Option("code-interpreter", "--template", "-t", help="template name or id"),
           timeout: Optional[int] = typer.Option(None, help="lifetime in seconds"),
           env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE, repeatable"),
           metadata: Optional[List[str]] = typer.Option(None, "--metadata", "-m", help="KEY=VALUE, repeatable"),
           internet: Optional[bool] = typer.Option(None, "--internet/--no-internet", help="allow egress"),
           vcpu: Optional[float] = typer.Option(None, help="vCPUs (default: the template's)"),
           memory_mb: Optional[int] = typer.Option(None, help="memory limit in MB (default: the template's)"),
           disk_mb: Optional[int] = typer.Option(None, help="disk size in MB (default: the template's)"),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Create a sandbox and print its id."""
    from sandboxd.sdk import SandboxInfo

    with client() as c:
        wire = c.create_sandbox(template, timeout=timeout, env_vars=_pairs(env, "--env"),
                                metadata=_pairs(metadata, "--metadata"), internet_access=internet,
                                vcpu=vcpu, memory_mb=memory_mb, disk_mb=disk_mb)
    info = SandboxInfo.from_wire(wire)
    if as_json:
        print_json(info)
    else:
        sys.stdout.write(info.id + "\n")


@app.command("list")
@handles_errors
def list_(status: Optional[str] = typer.Option(None, help="running | paused | ..."),
          template: Optional[str] = typer.Option(None, help="only sandboxes of this template"),
          as_json: bool = typer.Option(False, "--json")) -> None:
    """List sandboxes."""
    with client() as c:
        items = c.list_sandboxes(status=status, template=template)
    if as_json:
        return print_json(items)
    table(["ID", "STATUS", "TEMPLATE", "CREATED", "EXPIRES"],
          [[s.id, s.status, s.template_name or s.template_id, when(s.created_at), when(s.expires_at)]
           for s in items])


@app.command()
@handles_errors
def info(sandbox_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one sandbox."""
    with client() as c:
        s = c.get_sandbox(sandbox_id)
    if as_json:
        return print_json(s)
    table(["FIELD", "VALUE"], _info_rows(s))


@app.command()
@handles_errors
def kill(sandbox_ids: List[str] = typer.Argument(..., metavar="SANDBOX_ID...")) -> None:
    """Kill sandboxes."""
    with client() as c:
        for sid in sandbox_ids:
            c.kill_sandbox(sid)
            sys.stdout.write(f"killed {sid}\n")


@app.command()
@handles_errors
def pause(sandbox_id: str) -> None:
    """Pause a sandbox (its processes are frozen; no CPU is used)."""
    with client() as c:
        s = c.pause_sandbox(sandbox_id)
    sys.stdout.write(f"{s.id} {s.status}\n")


@app.command()
@handles_errors
def resume(sandbox_id: str) -> None:
    """Resume a paused sandbox."""
    with client() as c:
        s = c.resume_sandbox(sandbox_id)
    sys.stdout.write(f"{s.id} {s.status}\n")


@app.command("timeout")
@handles_errors
def timeout_(sandbox_id: str, seconds: int = typer.Argument(..., help="new lifetime, from now")) -> None:
    """Set how long a sandbox lives from now."""
    with client() as c:
        s = c.set_timeout(sandbox_id, seconds)
    sys.stdout.write(f"{s.id} expires at {when(s.expires_at)} UTC\n")


# -- working inside a sandbox --------------------------------------------------------------------------------
def _connect(sandbox_id: str):
    from sandboxd.sdk import Sandbox

    return Sandbox.connect(sandbox_id)


def _write(stream) -> Callable[[str], None]:
    def emit(data: str) -> None:
        stream.write(data)
        stream.flush()

    return emit


@app.command("exec", context_settings={"allow_interspersed_args": False})
@handles_errors
def exec_(sandbox_id: str, command: List[str] = typer.Argument(..., help="the command, after --"),
          timeout: int = typer.Option(300, help="seconds before the command is killed"),
          cwd: Optional[str] = typer.Option(None, help="working directory (default /workspace)"),
          env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE, repeatable")) -> None:
    """Run a command in the sandbox, streaming its output; exits with the command's exit code."""
    if command and command[0] == "--":  # Click keeps the separator when interspersed args are off
        command = command[1:]
    if not command:
        fail("no command given: sandboxd sandbox exec SANDBOX_ID -- COMMAND [ARGS...]")
    cmd = command[0] if len(command) == 1 else shlex.join(command)
    sb = _connect(sandbox_id)
    try:
        result = sb.commands.run(cmd, on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr),
                                 timeout=timeout, cwd=cwd, env=_pairs(env, "--env"))
    finally:
        sb.close()
    raise typer.Exit(result.exit_code)


@app.command()
@handles_errors
def run(sandbox_id: str, file: Path = typer.Argument(..., help="a code file, or - for stdin"),
        language: str = typer.Option("python", "--language", "-l"),
        timeout: int = typer.Option(300), as_json: bool = typer.Option(False, "--json")) -> None:
    """Run a code file in the sandbox's kernel; prints output and the cell's value. Exit 1 on error."""
    code = sys.stdin.read() if str(file) == "-" else file.read_text()
    sb = _connect(sandbox_id)
    try:
        if as_json:
            ex = sb.run_code(code, language=language, timeout=timeout)
            print_json(ex)
        else:
            ex = sb.run_code(code, language=language, timeout=timeout, on_stdout=_write(sys.stdout),
                             on_stderr=_write(sys.stderr))
            if ex.text is not None:
                sys.stdout.write(ex.text + "\n")
    finally:
        sb.close()
    if ex.error or not ex.success:
        raise typer.Exit(1)


@app.command()
@handles_errors
def shell(sandbox_id: str) -> None:
    """An interactive shell in the sandbox (exit with `exit` or Ctrl-D)."""
    sb = _connect(sandbox_id)
    try:
        code = interactive(sb)
    finally:
        sb.close()
    raise typer.Exit(code)


def _split(target: str) -> tuple[str | None, str]:
    sid, sep, path = target.partition(":")
    if sep and sid and path.startswith("/") and not Path(target).exists():
        return sid, path
    return None, target


@app.command()
@handles_errors
def cp(source: str, dest: str) -> None:
    """Copy a file in or out: `cp ./a.txt SANDBOX:/workspace/a.txt` or `cp SANDBOX:/path ./local`."""
    src_sb, src_path = _split(source)
    dst_sb, dst_path = _split(dest)
    sid = src_sb or dst_sb
    if sid is None or (src_sb is not None and dst_sb is not None):
        fail("exactly one of SOURCE and DEST must be SANDBOX_ID:/absolute/path")
    sb = _connect(sid)
    try:
        if dst_sb:
            local = Path(src_path)
            if local.is_dir():
                fail(f"{local} is a directory; cp copies files")
            if dst_path.endswith("/"):
                dst_path += local.name
            sb.files.upload(local, dst_path)
            sys.stdout.write(f"{local} -> {dst_sb}:{dst_path} ({local.stat().st_size} bytes)\n")
        else:
            local = Path(dst_path)
            if local.is_dir():
                local = local / Path(src_path).name
            part = local.with_name(local.name + ".part")
            try:  # via a .part file so a failed copy never leaves a truncated file behind
                n = sb.files.download(src_path, part)
                part.replace(local)
            finally:
                part.unlink(missing_ok=True)
            sys.stdout.write(f"{src_sb}:{src_path} -> {local} ({n} bytes)\n")
    finally:
        sb.close()


def interactive(sb) -> int:
    """Bridge the local terminal (raw mode) and the sandbox's /terminal WebSocket; returns the shell's
    exit code. Output is read on a thread so typing never waits for the network."""
    import select
    import signal
    import termios
    import threading
    import tty

    fd = sys.stdin.fileno()
    is_tty = os.isatty(fd)
    cols, rows = os.get_terminal_size(fd) if is_tty else (80, 24)
    done = threading.Event()
    with sb.terminal.connect(cols=cols, rows=rows) as term:
        def pump() -> None:
            try:
                while (chunk := term.recv()) is not None:
                    os.write(sys.stdout.fileno(), chunk.encode())
            except Exception:  # the socket broke: end the session, the main loop restores the tty
                pass
            finally:
                done.set()

        threading.Thread(target=pump, daemon=True).start()
        old = termios.tcgetattr(fd) if is_tty else None
        prev_winch = None
        if is_tty:
            tty.setraw(fd)
            prev_winch = signal.signal(signal.SIGWINCH, lambda *_: term.resize(*os.get_terminal_size(fd)))
        try:
            while not done.is_set():
                ready, _, _ = select.select([fd], [], [], 0.1)
                if not ready:
                    continue
                data = os.read(fd, 4096)
                if not data:  # stdin closed: ask the shell to finish, then wait for it
                    term.send("exit\n")
                    done.wait(10)
                    break
                term.send(data.decode("utf-8", "replace"))
        finally:
            if old is not None:
                termios.tcsetattr(fd, termios.TCSADRAIN, old)
                signal.signal(signal.SIGWINCH, prev_winch or signal.SIG_DFL)
        done.wait(2)
    return term.exit_code or 0

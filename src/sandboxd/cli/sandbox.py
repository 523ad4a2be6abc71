"""`sandboxd sandbox ...`: a thin layer over the SDK. Reads SANDBOXD_URL and SANDBOXD_API_KEY.
Every listing takes --json; every error prints one line on stderr and exits non-zero."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from sandboxd.cli.common import WIDE, client, fail, handles_errors, print_json, table, when
from sandboxd.cli.outputs import save_outputs

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
          as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
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
def info(sandbox_id: str, as_json: bool = typer.Option(False, "--json"), wide: bool = WIDE) -> None:
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


def _transition(sandbox_id: str, method: str) -> None:
    with client() as c:
        s = getattr(c, method)(sandbox_id)
    sys.stdout.write(f"{s.id} {s.status}\n")


@app.command()
@handles_errors
def pause(sandbox_id: str) -> None:
    """Pause a sandbox (its processes are frozen; no CPU is used)."""
    _transition(sandbox_id, "pause_sandbox")


@app.command()
@handles_errors
def resume(sandbox_id: str) -> None:
    """Resume a paused sandbox."""
    _transition(sandbox_id, "resume_sandbox")


@app.command()
@handles_errors
def stop(sandbox_id: str) -> None:
    """Stop a sandbox: its processes end, its files are kept until `start` (or `kill`)."""
    _transition(sandbox_id, "stop_sandbox")


@app.command()
@handles_errors
def start(sandbox_id: str) -> None:
    """Start a stopped sandbox again, with the files it had."""
    _transition(sandbox_id, "start_sandbox")


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


USER_HELP = "run as this user (default: `user` where the sandbox has one, else root)"


def _user(sb, chosen: str | None) -> str | None:
    """The account commands run as: the one asked for, else the unprivileged `user` that templates (and
    E2B's) create, where this sandbox has it; root otherwise. None means the agent's own user, root."""
    if chosen:
        return None if chosen == "root" else chosen
    return "user" if sb.commands.run("id -u user", timeout=30).exit_code == 0 else None


@app.command("exec")
@handles_errors
def exec_(sandbox_id: str, command: Optional[List[str]] = typer.Argument(None, help="the command, after --"),
          timeout: int = typer.Option(300, help="seconds before the command is killed (exit code 124)"),
          cwd: Optional[str] = typer.Option(None, help="working directory (default /workspace)"),
          env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE, repeatable"),
          user: Optional[str] = typer.Option(None, "--user", "-u", help=USER_HELP)) -> None:
    """Run a command in the sandbox, streaming its output; exits with the command's exit code. Options go
    before or after the id; everything after `--` is the command."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("no command given: sandboxd sandbox exec SANDBOX_ID -- COMMAND [ARGS...]")
    cmd = command[0] if len(command) == 1 else shlex.join(command)
    sb = _connect(sandbox_id)
    try:
        result = sb.commands.run(cmd, on_stdout=_write(sys.stdout), on_stderr=_write(sys.stderr),
                                 timeout=timeout, cwd=cwd, env=_pairs(env, "--env"), user=_user(sb, user))
    finally:
        sb.close()
    if result.exit_code == 124 and "timed out" in str(result.raw.get("error") or ""):
        fail(f"the command timed out after {timeout} s and was killed", 124)
    if result.raw.get("success") is False and result.exit_code == 0:  # it never started (e.g. an unknown user)
        fail(str(result.raw.get("error") or "the command could not be started"))
    raise typer.Exit(result.exit_code)


@app.command()
@handles_errors
def run(sandbox_id: str, file: Path = typer.Argument(..., help="a code file, or - for stdin"),
        language: str = typer.Option("python", "--language", "-l"),
        timeout: int = typer.Option(300), as_json: bool = typer.Option(False, "--json"),
        out_dir: Path = typer.Option(Path("."), "--out-dir", "-o", file_okay=False,
                                     help="where images and other rich outputs are saved")) -> None:
    """Run a code file in the sandbox's kernel; prints output and the cell's value, saves rich outputs (a plot's
    PNG, SVG, HTML, PDF) to files and says where. Exit 1 on error."""
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
            save_outputs(ex, out_dir)
    finally:
        sb.close()
    if ex.error or not ex.success:
        raise typer.Exit(1)


@app.command()
@handles_errors
def shell(sandbox_id: str, user: Optional[str] = typer.Option(None, "--user", "-u", help=USER_HELP)) -> None:
    """An interactive shell in the sandbox (exit with `exit` or Ctrl-D)."""
    sb = _connect(sandbox_id)
    try:
        code = interactive(sb, _user(sb, user))
    finally:
        sb.close()
    raise typer.Exit(code)


@app.command()
@handles_errors
def cp(source: str, dest: str,
       user: Optional[str] = typer.Option(None, "--user", "-u", help="owner of what is copied in (default: "
                                          "`user` where the sandbox has one, else root)")) -> None:
    """Copy a file or a directory (recursively) in or out: `cp ./a.txt SANDBOX:/workspace/` or
    `cp SANDBOX:/workspace/results ./`. What is copied in belongs to the user commands run as."""
    from sandboxd.cli.copying import copy_in, copy_out, split_target

    src_sb, src_path = split_target(source)
    dst_sb, dst_path = split_target(dest)
    sid = src_sb or dst_sb
    if sid is None or (src_sb is not None and dst_sb is not None):
        fail("exactly one of SOURCE and DEST must be SANDBOX_ID:/absolute/path")
    sb = _connect(sid)
    try:
        if dst_sb:
            line = copy_in(sb, Path(src_path), dst_path, _user(sb, user))
        else:
            line = copy_out(sb, src_path, Path(dst_path))
        sys.stdout.write(f"{line}\n")
    finally:
        sb.close()


def interactive(sb, user: str | None = None) -> int:
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
    with sb.terminal.connect(cols=cols, rows=rows, user=user) as term:
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

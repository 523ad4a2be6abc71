"""`sandboxd sandbox cp`: files and directories in and out of a sandbox, over the SDK's streamed upload and
download. A directory travels as one tar.gz (one request, permissions kept) and is unpacked at the far end;
what is copied in is handed to the user commands run as; big transfers show a progress bar on a terminal."""
from __future__ import annotations

import secrets
import shlex
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

from sandboxd.cli.common import err, fail

BIG = 1 << 20  # smaller copies end before a bar would be worth drawing


def split_target(target: str) -> tuple[str | None, str]:
    sid, sep, path = target.partition(":")
    if sep and sid and path.startswith("/") and not Path(target).exists():
        return sid, path
    return None, target


@contextmanager
def _progress(what: str, total: int | None) -> Iterator[Any]:
    """A rich Progress with one task, or None when stderr is no terminal or the copy is small."""
    if not err.is_terminal or (total is not None and total < BIG):
        yield None
        return
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                               TransferSpeedColumn)

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as progress:
        yield progress, progress.add_task(what, total=total)


def _upload(sb, local: Path, remote: str) -> None:
    size = local.stat().st_size
    with _progress(f"{local.name}", size) as bar, open(local, "rb") as f:
        sb.files.upload(bar[0].wrap_file(f, total=size, task_id=bar[1]) if bar else f, remote)


class _Counting:
    """A binary file that moves a progress bar as the download writes to it."""

    def __init__(self, f: IO[bytes], bar: Any):
        self.f, self.bar = f, bar

    def write(self, data: bytes) -> int:
        n = self.f.write(data)
        if self.bar:
            self.bar[0].advance(self.bar[1], len(data))
        return n


def _download(sb, remote: str, local: Path, size: int | None) -> int:
    """Via a .part file, so a failed copy never leaves a truncated file behind."""
    part = local.with_name(local.name + ".part")
    try:
        with _progress(Path(remote).name, size) as bar, open(part, "wb") as f:
            n = sb.files.download(remote, _Counting(f, bar))
        part.replace(local)
    finally:
        part.unlink(missing_ok=True)
    return n


def _root(sb, script: str) -> str:
    """Run a helper script as root (the agent's own user); its stdout, or the copy fails with its stderr."""
    r = sb.commands.run(script, timeout=600)
    if r.exit_code != 0:
        fail(r.stderr.strip() or f"copy failed in the sandbox (exit {r.exit_code})")
    return r.stdout.strip()


def copy_in(sb, local: Path, dest: str, user: str | None) -> str:
    """`cp`'s semantics: into DEST when it is a directory (or ends with /), else as DEST."""
    if not local.exists():
        fail(f"{local}: no such file or directory")
    q = shlex.quote
    if local.is_file():
        target = dest + local.name if dest.endswith("/") else dest
        into = _root(sb, f"if [ -d {q(target)} ]; then echo {q(target.rstrip('/') + '/' + local.name)}; "
                         f"else echo {q(target)}; fi")
        _upload(sb, local, into)
        if user:
            _root(sb, f"chown {q(user)}: {q(into)}")
        return f"{local} -> {into} ({local.stat().st_size} bytes)"
    tmp = f"/tmp/.sandboxd-cp-{secrets.token_hex(6)}.tar.gz"
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "copy.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(local, arcname=".")
        _upload(sb, archive, tmp)
    owner = f" && chown -R {q(user)}: \"$t\"" if user else ""
    into = _root(sb, f"if [ -d {q(dest)} ]; then t={q(dest.rstrip('/') + '/' + local.resolve().name)}; "
                     f"else t={q(dest)}; fi; mkdir -p \"$t\" && tar -xzf {tmp} -C \"$t\" --no-same-owner{owner}; "
                     f"rc=$?; rm -f {tmp}; echo \"$t\"; exit $rc")
    files = sum(1 for p in local.rglob("*") if p.is_file())
    return f"{local}/ -> {into}/ ({files} files)"


def copy_out(sb, remote: str, local: Path) -> str:
    """A file, or a directory (packed in the sandbox, unpacked here); into LOCAL when it is a directory."""
    q = shlex.quote
    tmp = f"/tmp/.sandboxd-cp-{secrets.token_hex(6)}.tar.gz"
    kind = _root(sb, f"if [ -d {q(remote)} ]; then tar -czf {tmp} -C {q(remote)} . && echo dir $(stat -c %s {tmp});"
                     f" elif [ -e {q(remote)} ]; then echo file $(stat -L -c %s {q(remote)}); else echo missing; fi")
    what, _, size = kind.partition(" ")
    if what == "missing":
        fail(f"{remote}: no such file or directory in the sandbox")
    target = local / Path(remote.rstrip("/")).name if local.is_dir() else local
    if what == "file":
        n = _download(sb, remote, target, int(size or 0))
        return f"{sb.sandbox_id}:{remote} -> {target} ({n} bytes)"
    try:
        with tempfile.TemporaryDirectory() as scratch:
            archive = Path(scratch) / "copy.tar.gz"
            _download(sb, tmp, archive, int(size or 0))
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(target, filter="data")  # no absolute paths, links out or device files
                files = sum(1 for m in tar.getmembers() if m.isfile())
    finally:
        sb.commands.run(f"rm -f {tmp}", timeout=60)
    return f"{sb.sandbox_id}:{remote}/ -> {target}/ ({files} files)"

"""OCI images without a Python, made locally with umoci (no registry is reachable in tests): a busybox-only
tree (a static busybox: no libc at all), and an alpine-like one (musl's loader, a musl program, and Python's
files where Debian has them, but built on musl)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandboxd.templates.agentrt import _elf

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello from musl"); return 0; }\n'


def static_busybox() -> str:
    """The host's static busybox (Debian's busybox-static, scripts/install.sh installs it)."""
    path = shutil.which("busybox")
    if path is None or _elf(Path(path))[0]:
        pytest.fail("a static busybox is needed (apt-get install busybox-static)")
    return path


def busybox_layout(layout: Path, *, musl: bool = False, tag: str = "v1") -> Path:
    """An OCI layout at layout with one image, tag: /bin/busybox and its applets (+ the musl tree)."""
    content = layout.parent / f"{layout.name}.content"
    (content / "bin").mkdir(parents=True)
    busybox = static_busybox()
    shutil.copy(busybox, content / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        if name != "busybox":
            os.symlink("busybox", content / "bin" / name)
    if musl:
        _musl_tree(content)
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:{tag}"], check=True)
    subprocess.run(["umoci", "insert", "--image", f"{layout}:{tag}", str(content), "/"], check=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:{tag}", "--config.env", "PATH=/bin"], check=True)
    return layout


def busybox_archive(path: Path, **kw) -> Path:
    """The busybox image as an OCI archive (a tar of the layout) at path."""
    layout = busybox_layout(path.parent / f"{path.name}.layout", **kw)
    with tarfile.open(path, "w") as tar:
        for p in sorted(layout.iterdir()):
            tar.add(p, arcname=p.name)
    return path


def _musl_tree(content: Path) -> None:
    gcc = shutil.which("musl-gcc")
    loader = Path("/lib/ld-musl-x86_64.so.1")
    if gcc is None or not loader.exists():
        pytest.fail("musl is needed (apt-get install musl-tools)")
    (content / "lib").mkdir()
    shutil.copy(loader.resolve(), content / "lib" / loader.name)
    (content / "usr/bin").mkdir(parents=True)
    src = content.parent / "hello.c"
    src.write_text(HELLO_C)
    subprocess.run([gcc, "-o", str(content / "usr/bin/hello"), str(src)], check=True)
    # Alpine's python3 is where Debian's is, but a musl program: the agent's venv cannot run on it.
    shutil.copy(content / "usr/bin/hello", content / "usr/bin/python3.11")
    os.symlink("python3.11", content / "usr/bin/python3")
    (content / "usr/lib/python3.11").mkdir(parents=True)
    (content / "usr/lib/python3.11/os.py").write_text("")

"""The built-in templates: mmdebstrap recipes, and how to build one into a directory.

A recipe is data; its content hash (with the agent's requirements and the uid shift) names the image,
so `sandboxd setup` rebuilds only what changed. Python packages are fetched by the HOST's pip (which
knows this machine's proxy, CA and indexes) into wheels, then installed inside the chroot with no
network at all, so no host CA or proxy setting can end up in the image.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from sandboxd.errors import BuildFailed

Log = Callable[[str], None]

# Bump when the build procedure below changes in a way the recipe data does not show.
RECIPE_VERSION = 2
AGENT_REQUIREMENTS = Path(__file__).resolve().parent.parent / "agent" / "requirements.txt"
USER_ENV = "/opt/python"  # the user's Python environment, first on PATH, writable by `user`
AGENT_VENV = "/opt/sandboxd/venv"  # the agent's own environment; user pip installs can never touch it
AGENT_PKG = "/opt/sandboxd/pkg"  # the runtime bind-mounts the host's sandboxd package at AGENT_PKG/sandboxd
USER_UID = 1000
IMAGE_PYTHON = (3, 11)  # Debian bookworm's python3
IMAGE_PATH = f"{USER_ENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

BASE_PACKAGES = ("python3", "python3-venv", "bash", "coreutils", "curl", "git", "tini", "ca-certificates",
                 "procps", "passwd", "less", "iproute2")


@dataclass(frozen=True)
class BaseRecipe:
    name: str
    packages: tuple[str, ...] = BASE_PACKAGES
    user_pip: tuple[str, ...] = ("ipykernel",)
    suite: str = "bookworm"
    variant: str = "minbase"
    # /usr/local/bin links the HopX builder helpers rely on (`/usr/local/bin/pip3 install ...`).
    links: tuple[tuple[str, str], ...] = (
        ("/usr/local/bin/pip", f"{USER_ENV}/bin/pip"),
        ("/usr/local/bin/pip3", f"{USER_ENV}/bin/pip3"),
    )
    description: str = ""


BUILTINS: dict[str, BaseRecipe] = {
    "base": BaseRecipe(
        name="base",
        description="Debian bookworm minimal: python3, bash, coreutils, curl, git, ipykernel",
    ),
    "code-interpreter": BaseRecipe(
        name="code-interpreter",
        packages=BASE_PACKAGES + ("nodejs", "npm", "esbuild", "r-base-core", "r-cran-irkernel", "default-jdk-headless"),
        # The versions of E2B's code-interpreter template: code written against it (often by a model) runs here too.
        user_pip=("ipykernel", "numpy==2.3.5", "pandas==2.2.3", "matplotlib==3.10.9", "e2b-charts", "bash_kernel"),
        links=BaseRecipe.links + (("/usr/local/bin/node", "/usr/bin/node"), ("/usr/local/bin/npm", "/usr/bin/npm")),
        description="base + numpy, pandas, matplotlib (with E2B's chart extractor), bash_kernel, Node.js, "
                    "esbuild (TypeScript cells), R with IRkernel and a JDK (Java cells, through JShell)",
    ),
}


def agent_requirements() -> list[str]:
    """The agent's third-party deps; an absent file means none yet."""
    try:
        text = AGENT_REQUIREMENTS.read_text()
    except FileNotFoundError:
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def recipe_hash(recipe: BaseRecipe, uid_base: int, uid_count: int) -> str:
    doc = {"v": RECIPE_VERSION, "recipe": asdict(recipe), "agent": agent_requirements(),
           "uid_base": uid_base, "uid_count": uid_count}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def image_env() -> dict[str, str]:
    return {"PATH": IMAGE_PATH, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}


async def run_logged(argv: list[str], log: Log, *, env: dict[str, str] | None = None, what: str = "") -> None:
    """Run a host command, streaming its output lines to log; BuildFailed with the tail if it fails."""
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, env=env)
    tail: list[str] = []
    assert proc.stdout is not None
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = (tail + [line])[-30:]
        log(line)
    rc = await proc.wait()
    if rc != 0:
        raise BuildFailed(f"{what or argv[0]} failed with exit code {rc}", details={"log_tail": "\n".join(tail)})


def _customize_script(recipe: BaseRecipe, wheels_in_chroot: str, agent_reqs: list[str]) -> str:
    """Shell run by mmdebstrap's customize hook with the rootfs as $1 (our own trusted recipe)."""
    # A clean environment for everything run inside the chroot: nothing from the host's pip/proxy setup.
    chroot = ('env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 PIP_CONFIG_FILE=/dev/null '
              'PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 chroot "$1"')
    pip_offline = f"--no-index --find-links {wheels_in_chroot}"
    user_pip = " ".join(recipe.user_pip)
    lines = [
        "set -eux",
        f'{chroot} useradd --create-home --uid {USER_UID} --user-group --shell /bin/bash user',
        f'{chroot} python3 -m venv {USER_ENV}',
        f'{chroot} {USER_ENV}/bin/pip install {pip_offline} {user_pip}' if user_pip else ":",
        f'{chroot} chown -R {USER_UID}:{USER_UID} {USER_ENV}',
        f'{chroot} python3 -m venv {AGENT_VENV}',
    ]
    if agent_reqs:
        lines.append(f'{chroot} {AGENT_VENV}/bin/pip install {pip_offline} -r {wheels_in_chroot}/agent-requirements.txt')
    lines += [
        f'echo {AGENT_PKG} > "$1"{AGENT_VENV}/lib/python3.11/site-packages/sandboxd-pkg.pth',
        f'mkdir -p "$1"{AGENT_PKG}/sandboxd',
        'mkdir -p "$1"/workspace',
        f'chown {USER_UID}:{USER_UID} "$1"/workspace',
        f'printf \'case ":$PATH:" in *":{USER_ENV}/bin:"*) ;; *) export PATH="{USER_ENV}/bin:$PATH";; esac\\n\' '
        '> "$1"/etc/profile.d/sandboxd-python.sh',
        'echo "export LANG=C.UTF-8" >> "$1"/etc/profile.d/sandboxd-python.sh',
    ]
    for link, target in recipe.links:
        lines.append(f'ln -sf {target} "$1"{link}')
    lines.append(f'rm -rf "$1"{wheels_in_chroot} "$1"/root/.cache "$1"/home/user/.cache')
    return "\n".join(lines) + "\n"


async def fetch_wheels(requirements: list[str], dest: Path, log: Log) -> None:
    """Let the host's pip (which knows this machine's indexes, proxy and CA) turn requirements into wheels."""
    if not requirements:
        return
    if sys.version_info[:2] == IMAGE_PYTHON:
        # Same interpreter version as the image: pip can also build wheels from sdists.
        argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--prefer-binary", "-w", str(dest)]
    else:
        # Another host Python (e.g. Ubuntu's 3.12): fetch wheels made for the image's Python and glibc.
        arch = platform.machine()
        tags = [f"--platform={p}_{arch}" for p in ("manylinux_2_36", "manylinux_2_34", "manylinux_2_28",
                                                    "manylinux_2_17", "manylinux2014", "linux")]
        argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", str(dest),
                "--python-version", "%d.%d" % IMAGE_PYTHON, "--implementation", "cp", *tags]
    await run_logged([*argv, *requirements], log, what="pip wheel")


async def build_base(recipe: BaseRecipe, rootfs: Path, work: Path, log: Log) -> None:
    """Build recipe's rootfs (unshifted) into rootfs, a path that must not exist yet; work is scratch space."""
    if shutil.which("mmdebstrap") is None:
        raise BuildFailed("mmdebstrap is not installed (scripts/install.sh installs it)")
    wheels = work / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    agent_reqs = agent_requirements()
    log(f"[{recipe.name}] fetching Python wheels on the host")
    await fetch_wheels(list(recipe.user_pip), wheels, log)
    await fetch_wheels(agent_reqs, wheels, log)
    (wheels / "agent-requirements.txt").write_text("\n".join(agent_reqs) + "\n")
    script = work / "customize.sh"
    in_chroot = "/tmp/sandboxd-wheels"
    script.write_text(_customize_script(recipe, in_chroot, agent_reqs))
    log(f"[{recipe.name}] mmdebstrap {recipe.suite} ({recipe.variant}) + {', '.join(recipe.packages)}")
    argv = [
        "mmdebstrap", "--mode=root", f"--variant={recipe.variant}", f"--include={','.join(recipe.packages)}",
        "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        # update-alternatives links man pages even when dpkg leaves them out (the JDK fails without the dir).
        '--essential-hook=mkdir -p "$1/usr/share/man/man1"',
        f'--customize-hook=mkdir -p "$1"{in_chroot} && cp -a {wheels}/. "$1"{in_chroot}/',
        f"--customize-hook=sh {script} \"$1\"",
        recipe.suite, str(rootfs),
    ]
    env = {k: v for k, v in os.environ.items()}
    env.setdefault("DEBIAN_FRONTEND", "noninteractive")
    await run_logged(argv, log, env=env, what="mmdebstrap")
    # Mount targets the runtime binds over; present in the image so a sandbox's upper dir never gains them.
    # mmdebstrap leaves the host's resolv.conf and hostname behind: replace them with neutral contents.
    neutral = {"etc/resolv.conf": "", "etc/hostname": "sandbox\n", "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n"}
    for name, text in neutral.items():
        target = rootfs / name
        if target.is_symlink():
            target.unlink()
        target.write_text(text)
        target.chmod(0o644)

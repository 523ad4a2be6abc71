"""The packages as users install them: both wheels build from the checkout; the server's carries the API's
specs and the /docs viewer; the client-only wheel, alone in a fresh virtualenv, runs the getting-started SDK
block against a server and its `sandboxd` CLI works without the server's modules."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.real import unavailable
from support.server import running_server

ROOT = Path(__file__).resolve().parents[2]
GETTING_STARTED = ROOT / "docs" / "getting-started.md"
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"
pytestmark = pytest.mark.slow


def plain_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without this checkout on the import path (the venv must import what it installed)."""
    return {k: v for k, v in (env or os.environ).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pkg")
    repo, dist = tmp / "repo", tmp / "dist"
    repo.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, repo / name)
    for name in ("src", "spec", "clients"):
        shutil.copytree(ROOT / name, repo / name, symlinks=True, ignore=ignore)
    for project in (repo, repo / "clients" / "python"):
        # No build isolation: the build backends are in the test environment, so nothing is downloaded.
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(dist), str(project)], check=True, timeout=600, env=plain_env())
    return {w.name.split("-")[0]: w for w in dist.glob("*.whl")}


@pytest.fixture(scope="module")
def client_venv(wheels, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, env=plain_env())
    # Its dependencies from the wheelhouse scripts/install.sh fills: a test downloads nothing.
    if not WHEELHOUSE.is_dir():
        unavailable(f"{WHEELHOUSE} is missing: scripts/install.sh fills it")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--find-links",
                    str(WHEELHOUSE), str(wheels["sandboxd_client"])], check=True, timeout=600, env=plain_env())
    return venv


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    yield from running_server(tmp_path_factory, "fake")


def test_the_server_wheel_ships_the_specs_and_the_viewer(wheels):
    with zipfile.ZipFile(wheels["sandboxd"]) as z:
        names = set(z.namelist())
        for spec in ("controlplane.yaml", "e2b.yaml", "monitoring.yaml"):
            assert z.read(f"sandboxd/api/spec/{spec}") == (ROOT / "spec" / spec).read_bytes()
    for asset in ("docs.html", "docs.js", "swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css",
                  "swagger-ui/LICENSE"):
        assert f"sandboxd/api/static/{asset}" in names


def test_the_client_wheel_holds_the_sdk_and_cli_and_nothing_of_the_server(wheels):
    with zipfile.ZipFile(wheels["sandboxd_client"]) as z:
        names = {n for n in z.namelist() if n.startswith("sandboxd/")}
        meta = z.read(next(n for n in z.namelist() if n.endswith("METADATA"))).decode()
    packages = {n.split("/")[1] for n in names if n.count("/") > 1}
    assert packages == {"sdk", "cli"}
    assert "sandboxd/cli/main.py" in names and "sandboxd/sdk/_sandbox.py" in names
    assert not names & {"sandboxd/cli/serve.py", "sandboxd/cli/setup.py", "sandboxd/config.py"}
    shipped_cli = {Path(n).name for n in names if n.startswith("sandboxd/cli/")}
    source_cli = {p.name for p in (ROOT / "src" / "sandboxd" / "cli").glob("*.py")} - {"serve.py", "setup.py"}
    assert shipped_cli == source_cli  # a new command module must be listed in clients/python/pyproject.toml
    requires = set(re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)", meta, re.M))
    assert requires == {"httpx", "websockets", "dockerfile-parse", "typer", "rich"}


def test_the_client_alone_runs_the_getting_started_block_and_the_cli(client_venv, fake_server):
    py, cli = client_venv / "bin" / "python", client_venv / "bin" / "sandboxd"
    no_server = subprocess.run([str(py), "-c", "import sandboxd.core"], capture_output=True, text=True,
                               env=plain_env(), cwd=client_venv)
    assert "ModuleNotFoundError" in no_server.stderr
    helped = subprocess.run([str(cli), "--help"], capture_output=True, text=True, env=plain_env(), cwd=client_venv)
    assert helped.returncode == 0 and "sandbox" in helped.stdout, helped.stderr
    assert subprocess.run([str(cli), "serve", "--help"], capture_output=True, env=plain_env()).returncode != 0

    block = re.search(r"<!-- test: sandboxd -->\n```python\n(.*?)```", GETTING_STARTED.read_text(), re.S)
    assert block is not None
    env = plain_env(fake_server.client_env)
    r = subprocess.run([str(py), "-c", block[1]], capture_output=True, text=True, env=env, timeout=300,
                       cwd=client_venv)
    assert r.returncode == 0 and r.stdout == "hello\n42\n42\n", r.stderr[-2000:]
    listed = subprocess.run([str(cli), "sandbox", "list"], capture_output=True, text=True, env=env, cwd=client_venv)
    assert listed.returncode == 0, listed.stderr

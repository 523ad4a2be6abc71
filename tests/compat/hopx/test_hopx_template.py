"""A template build with `hopx_ai.template` (the official builder, unmodified), then a sandbox from the
new template; and the same through our CLI (`sandboxd template build`). Builds need real sandboxes
(RUN steps), so these run on the real backend only."""
from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys

import pytest

hopx_ai = pytest.importorskip("hopx_ai")
from hopx_ai import Sandbox  # noqa: E402
from hopx_ai.template import BuildOptions, Template  # noqa: E402


@pytest.fixture(scope="module")
def real_server(hopx_server):
    if hopx_server.backend == "fake":
        pytest.skip("template builds run RUN steps in a real sandbox (the crun parametrisation covers them)")
    return hopx_server


def test_hopx_template_build_then_sandbox(real_server, tmp_path, monkeypatch):
    monkeypatch.setenv("HOPX_API_KEY", real_server.api_key)
    monkeypatch.setenv("HOPX_TEMPLATE_BAKE_SECONDS", "600")
    (tmp_path / "app.py").write_text("print('built by hopx')\n")
    name = f"test-hopx-{secrets.token_hex(3)}"
    tpl = (Template().from_python_image("3.11").copy("app.py", "/app/").set_env("TEST_BUILT", "1")
           .run_cmd("python3 /app/app.py > /app/out.txt"))
    logs: list[str] = []
    result = asyncio.run(Template.build(tpl, BuildOptions(
        name=name, api_key=real_server.api_key, base_url=real_server.url, context_path=str(tmp_path),
        on_log=lambda entry: logs.append(str(entry)))))
    assert result.template_id and logs
    sb = Sandbox.create(template=name, base_url=real_server.url)
    try:
        assert sb.files.read("/app/out.txt") == "built by hopx\n"
        assert sb.commands.run("echo $TEST_BUILT").stdout.strip() == "1"
    finally:
        sb.kill()
    Sandbox.delete_template(result.template_id, base_url=real_server.url)


def test_cli_template_build_with_progress_then_sandbox(real_server, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.py").write_text("print('built by sandboxd')\n")
    (tmp_path / "Dockerfile").write_text("FROM base\nCOPY app/ /srv/\nENV TEST_CLI=1\n"
                                         "RUN python3 /srv/hello.py > /srv/out.txt\n")
    name = f"test-cli-{secrets.token_hex(3)}"
    env = real_server.client_env
    cli = [sys.executable, "-m", "sandboxd.cli.main"]
    r = subprocess.run([*cli, "template", "build", str(tmp_path), "--name", name], env=env, capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split()[0] == name and "100%" in r.stderr  # the progress bar reached the end
    from sandboxd import Sandbox as OurSandbox

    with OurSandbox.create(name, api_key=real_server.api_key, api_url=real_server.url) as sb:
        found = sb.commands.run("cat /srv/out.txt")
        assert "built by sandboxd" in found.stdout, (found.stdout, found.stderr)
        assert sb.commands.run("echo $TEST_CLI").stdout.strip() == "1"
    assert subprocess.run([*cli, "template", "rm", name], env=env, capture_output=True).returncode == 0
    assert name not in subprocess.run([*cli, "template", "list", "--json"], env=env, capture_output=True,
                                      text=True).stdout

"""Real Dockerfile builds through `sandboxd template build` on crun: every supported instruction in one
file, and a multi-stage build; then a sandbox from each template shows what the Dockerfile made."""
from __future__ import annotations

import io
import secrets
import subprocess
import sys
import tarfile

import pytest

from support.server import IN_CI, real_problem, running_server

pytestmark = pytest.mark.real

DOCKERFILE = """\
# syntax is Docker's; every instruction below is one templates support
ARG BASE=base
FROM ${BASE} AS builder
RUN mkdir -p /out && echo made-in-stage > /out/artifact.txt && echo stage-only > /out/other.txt

FROM base
ARG GREETING=hello
LABEL org.example.team="templates"
EXPOSE 8080
ENV APP_HOME=/srv/app \\
    PATH=/opt/extra:$PATH
ENV MODE prod
WORKDIR $APP_HOME
COPY --chown=user:user --chmod=640 app.txt ./
ADD bundle.tar.gz /srv/bundle/
ADD notes.txt /srv/notes.txt
COPY --from=builder /out/artifact.txt /srv/from-stage/
COPY --from=base /etc/debian_version /srv/from-template/
RUN echo "$GREETING" > /srv/arg.txt
RUN ["/bin/sh", "-c", "echo exec-form > /srv/exec.txt"]
SHELL ["/bin/bash", "-c"]
RUN echo "bash ${BASH_VERSION%%.*}" > /srv/shell.txt
USER user
HEALTHCHECK --timeout=20s CMD test -f /tmp/ready
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo \\"$(id -un) $(pwd) $MODE\\" > /tmp/started; touch /tmp/ready; exec sleep 1000"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if problem := real_problem():
        if IN_CI:
            pytest.fail(f"real backend unavailable in CI: {problem}")
        pytest.skip(problem)
    yield from running_server(tmp_path_factory, "crun")


def _build(server, directory, name, *extra):
    r = subprocess.run([sys.executable, "-m", "sandboxd.cli.main", "template", "build", str(directory),
                        "--name", name, *extra], env=server.client_env, capture_output=True, text=True, timeout=900)
    return r


def _context(tmp_path):
    (tmp_path / "app.txt").write_text("app file\n")
    (tmp_path / "notes.txt").write_text("plain file, not an archive\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"from the archive\n"
        info = tarfile.TarInfo("inner/a.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (tmp_path / "bundle.tar.gz").write_bytes(buf.getvalue())
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)


def test_every_instruction_then_sandbox(server, tmp_path):
    from sandboxd import Sandbox

    _context(tmp_path)
    name = f"test-df-{secrets.token_hex(3)}"
    r = _build(server, tmp_path, name, "--build-arg", "GREETING=hi from args")
    assert r.returncode == 0, r.stderr[-4000:]
    with Sandbox.create(name, api_key=server.api_key, api_url=server.url) as sb:
        def sh(cmd: str) -> str:
            out = sb.commands.run(cmd)
            assert out.exit_code == 0, (cmd, out.stdout, out.stderr)
            return out.stdout.strip()

        assert sh("echo $APP_HOME $MODE") == "/srv/app prod"
        assert sh("echo $PATH").startswith("/opt/extra:/opt/python/bin:")  # $PATH: the base image's
        assert sh("cat /srv/app/app.txt") == "app file"
        assert sh("stat -c '%U %a' /srv/app/app.txt") == "user 640"
        assert sh("cat /srv/bundle/inner/a.txt") == "from the archive"
        assert sh("cat /srv/notes.txt") == "plain file, not an archive"
        assert sh("cat /srv/from-stage/artifact.txt") == "made-in-stage"
        assert sh("cat /srv/from-template/debian_version").startswith("12")  # COPY --from a template
        assert sh("test ! -e /out && test ! -e /srv/from-stage/other.txt && echo absent") == "absent"
        assert sh("cat /srv/arg.txt") == "hi from args"
        assert sh("echo ${GREETING:-unset}") == "unset"  # an ARG is the build's, not the image's
        assert sh("cat /srv/exec.txt") == "exec-form"
        assert sh("cat /srv/shell.txt") == "bash 5"
        # ENTRYPOINT + CMD ran as the start command, as USER in WORKDIR with the image env
        assert sh("cat /tmp/started") == "user /srv/app prod"
        # USER and WORKDIR are also the defaults of every command, terminal and relative path at run time
        assert sh("id -un; pwd; echo $HOME").split() == ["user", "/srv/app", "/home/user"]
        assert sb.commands.run("id -un; pwd", user="root", cwd="/tmp").stdout.split() == ["root", "/tmp"]
        # and of Python code: the stateful kernel runs as USER, in WORKDIR, with USER's HOME
        who = "import os, pwd; me = pwd.getpwuid(os.getuid()).pw_name; print(me, os.getcwd(), os.environ['HOME'])"
        assert sb.run_code(who).stdout.split() == ["user", "/srv/app", "/home/user"]
        assert sb.run_code("print(me)").stdout == "user\n"  # the same kernel: its state is kept
        sb.files.write("relative.txt", "here")
        assert sh("cat /srv/app/relative.txt") == "here"
    listed = subprocess.run([sys.executable, "-m", "sandboxd.cli.main", "template", "list", "--json"],
                            env=server.client_env, capture_output=True, text=True).stdout
    assert name in listed and "builder" not in listed and "stage-" not in listed  # no stage left as a template


def test_from_base_and_cmd_only(server, tmp_path):
    from sandboxd import Sandbox

    (tmp_path / "Dockerfile").write_text('FROM base\nCMD ["sh", "-c", "echo up > /tmp/up; sleep 1000"]\n')
    name = f"test-df-{secrets.token_hex(3)}"
    r = _build(server, tmp_path, name)
    assert r.returncode == 0, r.stderr[-4000:]
    with Sandbox.create(name, api_key=server.api_key, api_url=server.url) as sb:
        assert sb.commands.run("sleep 1; cat /tmp/up").stdout.strip() == "up"


def test_failing_step_names_its_line(server, tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM base\nRUN true\n\nRUN exit 3\n")
    r = _build(server, tmp_path, f"test-df-{secrets.token_hex(3)}")
    assert r.returncode != 0 and "Dockerfile line 4" in r.stderr + r.stdout


def test_stage_files_are_copied_without_trusting_them(server, tmp_path):
    """A stage's symlink out of the tree is copied as a symlink, never followed on the host; a FIFO in what a
    COPY --from takes fails the build at that line."""
    from sandboxd import Sandbox

    (tmp_path / "Dockerfile").write_text(
        "FROM base AS evil\n"
        "RUN mkdir -p /x/links /x/pipe && ln -s /etc/shadow /x/links/shadow && ln -s ../../.. /x/links/up"
        " && mkfifo /x/pipe/fifo\n"
        "FROM base\nCOPY --from=evil /x/links /srv/links/\n")
    name = f"test-df-{secrets.token_hex(3)}"
    r = _build(server, tmp_path, name)
    assert r.returncode == 0, r.stderr[-4000:]
    with Sandbox.create(name, api_key=server.api_key, api_url=server.url) as sb:
        out = sb.commands.run("readlink /srv/links/shadow /srv/links/up").stdout.split()
        assert out == ["/etc/shadow", "../../.."]
    (tmp_path / "Dockerfile").write_text(
        "FROM base AS evil\nRUN mkdir -p /x/pipe && mkfifo /x/pipe/fifo\nFROM base\n\nCOPY --from=evil /x/pipe /srv/\n")
    r = _build(server, tmp_path, f"test-df-{secrets.token_hex(3)}")
    assert r.returncode != 0 and "Dockerfile line 5 (COPY)" in r.stderr and "unpacked safely" in r.stderr

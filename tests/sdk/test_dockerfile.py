"""The Dockerfile → build steps translation (sdk/_dockerfile.py): each instruction with Docker's meaning,
and every refusal naming its line and instruction."""
from __future__ import annotations

import pytest

from sandboxd.sdk._dockerfile import parse_dockerfile, substitute
from sandboxd.sdk._errors import InvalidRequestError


def steps(text: str, **args: str) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "line"} for s in parse_dockerfile(text, args).steps]


def refused(text: str) -> str:
    with pytest.raises(InvalidRequestError) as exc:
        parse_dockerfile(text)
    return str(exc.value)


def test_run_shell_and_exec_forms():
    assert steps("FROM base\nRUN echo a \\\n  && echo b\n") == [{"type": "RUN", "args": ["echo a   && echo b"]}]
    assert steps('FROM base\nRUN ["sh", "-c", "echo hi"]\n') == [
        {"type": "RUN", "args": ["sh", "-c", "echo hi"], "exec": True}]


def test_shell_changes_later_shell_forms_only():
    out = steps('FROM base\nRUN echo 1\nSHELL ["/bin/bash", "-o", "pipefail", "-c"]\nRUN echo 2\nRUN ["ls"]\n')
    assert out == [{"type": "RUN", "args": ["echo 1"]},
                   {"type": "RUN", "args": ["/bin/bash", "-o", "pipefail", "-c", "echo 2"], "exec": True},
                   {"type": "RUN", "args": ["ls"], "exec": True}]
    r = parse_dockerfile('FROM base\nSHELL ["/bin/bash", "-c"]\nCMD serve --port 1\n')
    assert r.start_cmd == "/bin/bash -c 'serve --port 1'"
    assert "line 2 (SHELL)" in refused("FROM base\nSHELL /bin/bash -c\n")


def test_arg_defaults_build_args_and_from():
    text = "ARG BASE=base\nARG TAG\nFROM ${BASE}\nARG V=1\nARG BASE\nWORKDIR /w/$V/$BASE\nRUN echo $V\n"
    r = parse_dockerfile(text)
    assert r.from_image == "base"
    assert r.steps[0]["args"] == ["/w/1/base"]
    assert r.steps[1]["args"] == ["export BASE=base; export V=1; echo $V"]
    r = parse_dockerfile(text, {"BASE": "code-interpreter", "V": "two words"})
    assert r.from_image == "code-interpreter" and r.steps[0]["args"] == ["/w/two words/code-interpreter"]
    assert r.steps[1]["args"] == ["export BASE=code-interpreter; export V='two words'; echo $V"]
    # An ARG before FROM is not in scope after it unless declared again.
    assert steps("ARG X=1\nFROM base\nWORKDIR /a$X\n")[0]["args"] == ["/a"]


def test_env_both_syntaxes_and_substitution():
    out = steps('FROM base\nENV A=1 B="two words" \\\n    C=$A-${B}\nENV D ${A}x\nENV P=/x:$PATH E=\\$HOME\n'
                "WORKDIR /$D/${MISSING:-dflt}${A:+set}\n")
    assert out == [{"type": "ENV", "args": ["A", "1"], "expand": True},
                   {"type": "ENV", "args": ["B", "two words"], "expand": True},
                   {"type": "ENV", "args": ["C", "1-two words"], "expand": True},
                   {"type": "ENV", "args": ["D", "1x"], "expand": True},
                   {"type": "ENV", "args": ["P", "/x:${PATH}"], "expand": True},
                   {"type": "ENV", "args": ["E", "\\$HOME"], "expand": True},
                   {"type": "WORKDIR", "args": ["/1x/dfltset"]}]
    assert substitute("a\\$b $c", {"c": "C"}) == "a$b C"


def test_copy_flags_and_add():
    r = parse_dockerfile('FROM base\nCOPY --chown=user:user --chmod=755 a.sh b/ /opt/\nADD ["x.tar.gz", "/srv/"]\n')
    assert [c.sources for c in r.copies] == [["a.sh", "b/"], ["x.tar.gz"]]
    assert r.steps[0] == {"type": "COPY", "args": ["a.sh,b/", "/opt/"], "owner": "user:user",
                          "permissions": "755", "line": 2}
    assert r.steps[1] == {"type": "COPY", "args": ["x.tar.gz", "/srv/"], "extract": True, "line": 3}
    assert "line 2 (COPY): unsupported flag --exclude" in refused("FROM base\nCOPY --exclude=x a /b\n")
    assert "line 2 (COPY): --chmod takes an octal mode" in refused("FROM base\nCOPY --chmod=u+x a /b\n")
    assert "line 3 (COPY)" in refused("FROM base\n\nCOPY onlyone\n")


def test_add_url_runs_in_the_build_sandbox():
    r = parse_dockerfile("FROM base\nWORKDIR /d\nADD --chmod=644 https://example.invalid/f.tgz ./dl/\n")
    assert not r.copies
    run = r.steps[1]
    assert run["type"] == "RUN" and run["user"] == "root" and run["line"] == 3
    assert "curl -fsSL -o ./dl/f.tgz https://example.invalid/f.tgz" in run["args"][0]
    assert "chmod 644 ./dl/f.tgz" in run["args"][0]
    assert "line 2 (COPY)" in refused("FROM base\nCOPY https://example.invalid/x /x\n")


def test_multi_stage():
    r = parse_dockerfile("FROM base AS build\nRUN make\nFROM code-interpreter AS other\nFROM build\n"
                         "COPY --from=build /out/app /app\nCOPY --from=1 /x /x\nCOPY --from=mytpl /y /y\n")
    assert r.from_image == "base" and not r.copies
    assert [{k: v for k, v in s.items() if k != "line"} for s in r.steps] == [
        {"type": "RUN", "args": ["make"]},
        {"type": "FROM", "args": ["code-interpreter"]},
        {"type": "FROM", "fromStage": 0},
        {"type": "COPY", "args": ["/out/app", "/app"], "fromStage": 0},
        {"type": "COPY", "args": ["/x", "/x"], "fromStage": 1},
        {"type": "COPY", "args": ["/y", "/y"], "fromImage": "mytpl"}]
    # CMD and SHELL are the stage's: the last stage's start command, inherited from its parent stage.
    r = parse_dockerfile('FROM base AS a\nCMD ["a"]\nFROM base\nCMD ["b"]\n')
    assert r.start_cmd == "b"
    assert parse_dockerfile('FROM base AS a\nCMD ["a"]\nFROM a\n').start_cmd == "a"
    assert "line 1 (FROM)" in refused("FROM base AS\n")
    assert parse_dockerfile("FROM --platform=linux/amd64 base AS b\n").from_image == "base"


def test_entrypoint_and_cmd_combine_as_docker_does():
    start = lambda text: parse_dockerfile("FROM base\n" + text).start_cmd  # noqa: E731
    assert start('ENTRYPOINT ["python", "-m", "app"]\nCMD ["--port", "80"]\n') == "python -m app --port 80"
    assert start('CMD ["--port", "80"]\nENTRYPOINT ["serve"]\n') == "serve --port 80"
    assert start('ENTRYPOINT serve --x\nCMD ["ignored"]\n') == "serve --x"  # shell form ENTRYPOINT: no CMD
    assert start("CMD echo $HOME && sleep 1\n") == "echo $HOME && sleep 1"
    assert start('ENTRYPOINT ["serve"]\nCMD run fast\n') == "serve /bin/sh -c 'run fast'"
    assert start("") is None
    inherited = 'FROM base AS a\nCMD ["x"]\nFROM a\nENTRYPOINT ["serve"]\n'
    assert parse_dockerfile(inherited).start_cmd == "serve"  # a base's CMD does not follow a new ENTRYPOINT


def test_healthcheck_is_the_ready_check():
    r = parse_dockerfile("FROM base\nHEALTHCHECK --interval=5s --timeout=3s CMD curl -f localhost:80\n")
    assert r.ready_cmd == {"type": "command", "command": "curl -f localhost:80", "timeout": 3000}
    r = parse_dockerfile('FROM base\nHEALTHCHECK CMD ["test", "-f", "/ready"]\n')
    assert r.ready_cmd == {"type": "command", "command": "test -f /ready"}
    assert parse_dockerfile("FROM base\nHEALTHCHECK CMD true\nHEALTHCHECK NONE\n").ready_cmd is None
    assert "line 2 (HEALTHCHECK)" in refused("FROM base\nHEALTHCHECK true\n")


def test_accepted_metadata_and_refusals():
    # Nothing to build: one step that does nothing (FROM the stage itself), as the API wants a step.
    assert steps('FROM base\nLABEL a=b "c d"=e\nEXPOSE 80/tcp 443\nMAINTAINER me\n') == [
        {"type": "FROM", "fromStage": 0}]
    for op in ("ONBUILD RUN x", "STOPSIGNAL SIGINT", "VOLUME /data"):
        assert f"line 3 ({op.split()[0]})" in refused(f"FROM base\n# c\n{op}\n")
    assert "line 1 (RUN): the first instruction must be FROM" in refused("RUN x\n")
    assert "empty" in refused("# nothing\n")
    assert "line 2 (FOO): unknown instruction" in refused("FROM base\nFOO bar\n")

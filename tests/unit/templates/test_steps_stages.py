"""The step fields Dockerfile builds use (exec RUN, stages, COPY --from, ADD's unpacking, ENV expansion,
line numbers), and the host side of COPY --from: what the stage's sandbox packed is taken and unpacked
without trusting it."""
from __future__ import annotations

import io
import os
import tarfile

import pytest

from sandboxd.errors import BuildFailed, Invalid
from sandboxd.templates import stagecopy
from sandboxd.templates.steps import expand_env, parse_build_request, parse_step


def build(steps):
    return parse_build_request({"name": "t", "from_image": "base", "steps": steps})


def test_exec_run_keeps_its_argv_and_plain_steps_keep_their_keys():
    s = parse_step({"type": "RUN", "args": ["sh", "-c", "echo hi"], "exec": True, "line": 4}, 0)
    assert s.exec and s.args == ("sh", "-c", "echo hi") and s.key()["exec"] is True
    assert s.describe() == 'RUN ["sh", "-c", "echo hi"] (Dockerfile line 4)'
    old = parse_step({"type": "RUN", "args": ["sh", "-c", "echo hi"]}, 0)  # no exec: one shell command
    assert old.args == ("sh -c 'echo hi'",) and not old.exec
    assert old.key() == {"kind": "RUN", "args": ["sh -c 'echo hi'"], "owner": None, "permissions": None}
    with pytest.raises(Invalid):
        parse_step({"type": "RUN", "args": [], "exec": True}, 0)


def test_stages_and_copy_from():
    r = build([{"type": "RUN", "args": ["make"]}, {"type": "FROM", "args": ["base"]},
               {"type": "COPY", "args": ["/out", "/app"], "fromStage": 0},
               {"type": "FROM", "fromStage": 1}, {"type": "COPY", "args": ["/x", "/x"], "fromImage": "tpl"}])
    assert [s.kind for s in r.steps] == ["RUN", "FROM", "COPY", "FROM", "COPY"]
    assert r.steps[2].from_stage == 0 and r.steps[3].from_stage == 1 and r.steps[4].from_image == "tpl"
    assert r.steps[2].key()["from_stage"] == 0
    with pytest.raises(Invalid, match="not an earlier stage"):
        build([{"type": "COPY", "args": ["/a", "/a"], "fromStage": 0}])  # its own stage
    with pytest.raises(Invalid, match="not an earlier stage"):
        build([{"type": "FROM", "fromStage": 1}])
    with pytest.raises(Invalid):
        build([{"type": "FROM", "args": ["base"], "fromStage": 0}])
    with pytest.raises(Invalid):
        build([{"type": "COPY", "args": ["/a", "/a"], "fromStage": -1}])
    with pytest.raises(Invalid):
        build([{"type": "COPY", "args": ["/a", "/a"], "fromStage": 0, "fromImage": "x"}])
    with pytest.raises(Invalid):
        build([{"type": "RUN", "args": ["x"], "line": 0}])


def test_env_expand():
    s = parse_step({"type": "ENV", "args": ["PATH", "/x:${PATH}"], "expand": True}, 0)
    assert s.expand and s.key()["expand"] is True
    assert expand_env("/x:${PATH}:${NONE}\\$HOME", {"PATH": "/bin"}) == "/x:/bin:$HOME"
    assert not parse_step({"type": "ENV", "args": ["A", "${B}"]}, 0).expand  # literal without it


def test_copy_from_roots():
    assert stagecopy.roots("/out/app,/srv/*.txt, ./etc/x") == ["out/app", "srv", "etc/x"]
    for bad in ("/*.txt", "/", "/a/../../etc"):
        with pytest.raises(Invalid):
            stagecopy.roots(bad)


def test_take_refuses_what_is_not_a_plain_archive(tmp_path):
    upper = tmp_path / "upper"
    upper.mkdir()
    (tmp_path / "secret").write_text("host file")
    os.symlink(tmp_path / "secret", upper / "link.tar")
    with pytest.raises(BuildFailed):
        stagecopy._take(upper, "link.tar", tmp_path / "out.tar")
    os.mkfifo(upper / "fifo.tar")
    with pytest.raises(BuildFailed):
        stagecopy._take(upper, "fifo.tar", tmp_path / "out.tar")
    with pytest.raises(BuildFailed):
        stagecopy._take(upper, "missing.tar", tmp_path / "out.tar")
    (upper / "ok.tar").write_bytes(b"data")
    stagecopy._take(upper, "ok.tar", tmp_path / "out.tar")
    assert (tmp_path / "out.tar").read_bytes() == b"data"


def _tar(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_add_unpacks_archives_safely(tmp_path):
    ok = tarfile.TarInfo("dir/a.txt")
    ok.size = 2
    _tar(tmp_path / "good.tgz", [(ok, b"hi")])
    (tmp_path / "plain.txt").write_text("not an archive")
    out = stagecopy.unpack_archives([tmp_path / "good.tgz", tmp_path / "plain.txt"], tmp_path / "scratch")
    assert (out[0] / "dir" / "a.txt").read_text() == "hi" and out[1] == tmp_path / "plain.txt"
    dev = tarfile.TarInfo("dev/null")
    dev.type = tarfile.CHRTYPE
    escape = tarfile.TarInfo("../../escape")
    escape.size = 1
    for member in ((dev, None), (escape, b"x")):
        _tar(tmp_path / "bad.tgz", [member])
        with pytest.raises(Invalid):
            stagecopy.unpack_archives([tmp_path / "bad.tgz"], tmp_path / "scratch2")
    assert not (tmp_path / "escape").exists()


def test_the_service_wants_uploads_only_for_copies_from_the_context(tmp_path):
    from sandboxd.core.builds import BuildRequest, validate_request

    def req(step):
        return BuildRequest(name="t", from_image="base", steps=[step], start_cmd=None, ready_cmd=None, cpu=1,
                            memory_mb=512, disk_gb=1, skip_cache=False, update=False)

    validate_request(req({"type": "COPY", "args": ["/a", "/a"], "fromStage": 0}), tmp_path)
    validate_request(req({"type": "FROM", "args": ["base"]}), tmp_path)
    with pytest.raises(Invalid):
        validate_request(req({"type": "COPY", "args": ["a", "/a"]}), tmp_path)

"""E2B's template build API through the official `e2b` SDK's `Template`: announce, upload by content hash,
start with steps, follow the logs, use the template; failures name the step and the reason."""
from __future__ import annotations

import uuid

import httpx
import jsonschema
import pytest

from test_e2b_spec import _schema


@pytest.fixture
def real(e2b_env):
    if e2b_env["backend"] == "fake":
        pytest.skip("RUN steps need the crun backend")
    return e2b_env


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def context_dir(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "test.txt").write_text("This is a test file.")
    (folder / "link.txt").symlink_to("test.txt")
    return tmp_path


def test_a_template_built_with_copy_run_and_workdir_starts_sandboxes(real, context_dir):
    from e2b import Sandbox, Template, wait_for_timeout

    logs = []
    name = unique("e2b-built")
    t = (Template(file_context_path=str(context_dir)).from_base_image().skip_cache()
         .copy("folder/*", "folder")
         .run_cmd("cat folder/test.txt; echo; whoami; pwd; readlink folder/link.txt")
         .set_envs({"GREETING": "hello", "OTHER": "x"})
         .set_workdir("/app")
         .set_start_cmd("echo started > /tmp/started", wait_for_timeout(1_000)))
    info = Template.build(t, f"{name}:v1", cpu_count=1, memory_mb=1024, on_build_logs=lambda e: logs.append(e))
    assert info.name == f"{name}:v1" and "v1" in info.tags
    text = "\n".join(e.message for e in logs)
    # Builds FROM an image run as E2B's `user` in /home/user, like E2B's own.
    assert "This is a test file." in text and "\nuser\n/home/user\ntest.txt" in text, text
    assert Template.exists(name) and not Template.exists(unique("absent"))

    sbx = Sandbox.create(name, timeout=120)
    try:
        out = sbx.commands.run("cat /home/user/folder/test.txt; echo; echo $GREETING; cat /tmp/started; ls -d /app")
        assert out.stdout.split("\n")[:4] == ["This is a test file.", "hello", "started", "/app"]
        # The template's WORKDIR and USER are where and as whom a command runs unless it says otherwise.
        assert sbx.commands.run("pwd; id -un").stdout.split() == ["/app", "user"]
        assert sbx.commands.run("pwd; id -un", cwd="/tmp", user="root").stdout.split() == ["/tmp", "root"]
    finally:
        sbx.kill()

    # The same files again: the SDK is told they are there and uploads nothing.
    logs.clear()
    Template.build(t, f"{name}:v2", cpu_count=1, memory_mb=1024, on_build_logs=lambda e: logs.append(e))
    assert any("already cached" in e.message for e in logs)


def test_run_as_another_user_and_a_template_from_a_template(real):
    from e2b import Template

    Template.build(Template().from_image("ubuntu:22.04").run_cmd('test "$(whoami)" = "root"', user="root"),
                   unique("e2b-root"), cpu_count=1, memory_mb=1024)
    Template.build(Template().from_template("base"), unique("e2b-from-base"), cpu_count=1, memory_mb=1024)


def test_a_failing_step_is_named_with_the_reason(real):
    from e2b import Template
    from e2b.exceptions import BuildException

    bad = Template().from_base_image().run_cmd("true").run_cmd("whoami", user="root123")
    with pytest.raises(BuildException) as err:
        Template.build(bad, unique("e2b-bad-user"), cpu_count=1, memory_mb=1024)
    assert "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'" in str(
        err.value)

    info = Template.build_in_background(Template().from_base_image().run_cmd("exit 3"), unique("e2b-exit"),
                                        cpu_count=1, memory_mb=1024)
    status = Template.get_build_status(info)
    while status.status.value in ("building", "waiting"):
        status = Template.get_build_status(info)
    assert status.status.value == "error"
    assert status.reason.step == "1" and "exit code 3" in status.reason.message


def test_bad_requests_are_refused_in_e2b_shape(e2b_env):
    api, headers = e2b_env["api"], {"X-API-Key": e2b_env["key"]}
    r = httpx.post(f"{api}/v3/templates", json={"name": "e2b-too-big", "cpuCount": 64, "memoryMB": 1024},
                   headers=headers)
    assert r.status_code == 400 and r.json()["code"] == 400 and "cpuCount" in r.json()["message"]
    r = httpx.post(f"{api}/v3/templates", json={"name": "Not A Name", "cpuCount": 1, "memoryMB": 1024},
                   headers=headers)
    assert r.status_code == 400
    r = httpx.post(f"{api}/v3/templates", json={"name": "base", "cpuCount": 1, "memoryMB": 1024}, headers=headers)
    assert r.status_code == 400 and "built-in" in r.json()["message"]
    r = httpx.post(f"{api}/v3/templates", json={"name": unique("e2b-reg"), "cpuCount": 1, "memoryMB": 1024},
                   headers=headers)
    assert r.status_code == 202, r.text
    jsonschema.validate(r.json(), _schema("TemplateRequestResponseV3"))
    tid, bid = r.json()["templateID"], r.json()["buildID"]
    r = httpx.post(f"{api}/v2/templates/{tid}/builds/{bid}", headers=headers,
                   json={"fromImage": "private/app:1", "fromImageRegistry": {"type": "registry", "username": "u",
                                                                            "password": "p"}, "steps": []})
    assert r.status_code == 400 and "registry" in r.json()["message"]
    r = httpx.get(f"{api}/templates/{tid}/builds/{bid}/status", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "waiting" and r.json()["logEntries"] == []
    jsonschema.validate(r.json(), _schema("TemplateBuildInfo"))
    r = httpx.get(f"{api}/templates/{tid}/builds/{uuid.uuid4()}/status", headers=headers)
    assert r.status_code == 404
    r = httpx.get(f"{api}/templates/{tid}/files/../../etc", headers=headers)
    assert r.status_code in (400, 404, 405)  # the dots resolve away: never a file of the host
    r = httpx.get(f"{api}/templates/aliases/{unique('nothing')}", headers=headers)
    assert r.status_code == 404
    assert httpx.post(f"{api}/v3/templates", json={"name": "x"}).status_code == 401


def test_tags_name_builds_and_start_sandboxes_from_them(real):
    from e2b import Sandbox, Template
    from e2b.exceptions import TemplateException

    name = unique("e2b-tags")
    first = Template.build(Template().from_base_image().set_envs({"BUILD": "one"}), f"{name}:v1",
                           cpu_count=1, memory_mb=1024)
    second = Template.build(Template().from_base_image().set_envs({"BUILD": "two"}), name, cpu_count=1,
                            memory_mb=1024)
    assert first.build_id != second.build_id
    info = Template.assign_tags(f"{name}:v1", ["production", "stable"])
    assert info.build_id == first.build_id and info.tags == ["production", "stable"]
    tags = {t.tag: t.build_id for t in Template.get_tags(name)}
    assert tags == {"v1": first.build_id, "production": first.build_id, "stable": first.build_id,
                    "default": second.build_id}

    def build_of(ref: str) -> str:
        sbx = Sandbox.create(ref, timeout=60)
        try:
            return sbx.commands.run("echo $BUILD").stdout.strip()
        finally:
            sbx.kill()

    # A tag keeps naming its build after later builds of the same template.
    assert [build_of(f"{name}:production"), build_of(name), build_of(f"{name}:default")] == ["one", "two", "two"]
    Template.remove_tags(name, ["stable"])
    assert "stable" not in {t.tag for t in Template.get_tags(name)}
    for bad in ([":x"], [f"{name}:"], ["other-template:x"], ["has space"]):
        with pytest.raises(TemplateException):
            Template.assign_tags(f"{name}:v1", bad)
    with pytest.raises(TemplateException):
        Template.remove_tags(name, ["never-assigned"])
    api, headers = real["api"], {"X-API-Key": real["key"]}
    r = httpx.post(f"{api}/sandboxes", json={"templateID": f"{name}:nope", "timeout": 30}, headers=headers)
    assert r.status_code == 404 and r.json()["error_code"] == "template_tag_not_found"

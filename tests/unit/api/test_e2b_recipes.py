"""E2B's template build body -> our build request: instructions one to one, the prelude of a build FROM an
image, what is refused."""
from __future__ import annotations

import pytest

from sandboxd.api.e2b import recipes
from sandboxd.errors import Invalid
from sandboxd.templates.steps import parse_build_request


def build(body):
    return recipes.to_build_request("app", body, cpu=1, memory_mb=512)


def test_instructions_map_one_to_one_after_the_image_prelude():
    req = build({"fromImage": "e2bdev/base", "force": True, "startCmd": "srv", "readyCmd": "sleep 1", "steps": [
        {"type": "COPY", "args": ["src/*", "dst", "user", "0755"], "filesHash": "h" * 16, "force": True},
        {"type": "RUN", "args": ["whoami", "root"]},
        {"type": "RUN", "args": ["make"]},
        {"type": "ENV", "args": ["A", "1", "B", "2"]},
        {"type": "WORKDIR", "args": ["/app"]}, {"type": "USER", "args": ["root"]}]})
    assert req.from_image == "base" and req.skip_cache and req.hidden_steps == 2
    assert [s["type"] for s in req.steps] == ["USER", "WORKDIR", "COPY", "RUN", "RUN", "ENV", "WORKDIR", "USER"]
    assert req.steps[:2] == [{"type": "USER", "args": ["user"]}, {"type": "WORKDIR", "args": ["/home/user"]}]
    copy, as_root, plain = req.steps[2:5]
    assert copy == {"type": "COPY", "args": ["src/*", "dst"], "filesHash": "h" * 16, "owner": "user",
                    "permissions": "0755", "skipCache": True}
    assert as_root["user"] == "root" and as_root["args"] == ["whoami"] and "user" not in plain
    assert req.ready_cmd == {"type": "command", "command": "sleep 1"} and req.start_cmd == "srv"
    # Our own parser takes the result: the RUN keeps one command and its user, ENV its pairs.
    parsed = parse_build_request({"name": req.name, "from_image": req.from_image, "steps": req.steps})
    assert parsed.steps[3].args == ("whoami",) and parsed.steps[3].user == "root"
    assert parsed.steps[5].args == ("A", "1", "B", "2")


def test_a_build_from_a_template_keeps_its_user_and_directory():
    req = build({"fromTemplate": "base", "steps": []})
    assert req.from_image == "base" and req.steps == [] and req.hidden_steps == 0


@pytest.mark.parametrize("body,code", [
    ({"fromImage": "x", "fromImageRegistry": {"type": "registry"}}, "registry_not_configured"),
    ({}, "missing_from_image"),
    ({"fromImage": "base", "steps": [{"type": "RUN", "args": ["a", "b", "c"]}]}, "invalid_step"),
    ({"fromImage": "base", "steps": [{"type": "COPY", "args": ["only-src"]}]}, "invalid_step"),
    ({"fromImage": "base", "steps": [{"type": "RUN", "args": [1]}]}, "invalid_step"),
    ({"fromImage": "base", "steps": "RUN x"}, "invalid_step"),
])
def test_what_is_refused(body, code):
    with pytest.raises(Invalid) as err:
        build(body)
    assert err.value.code == code


def test_names_carry_a_tag():
    assert recipes.split_name("app:v1") == ("app", "v1") and recipes.split_name("app") == ("app", None)


def test_the_disk_holds_the_free_space_asked_for():
    assert recipes.disk_gb(None) == recipes.DISK_GB == recipes.disk_gb(1024)
    assert recipes.disk_gb(20 * 1024) == 24  # 20 GB free on top of a 4 GB allowance for the image

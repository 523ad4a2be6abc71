"""The image store: register, look up, delete, gc; the built-in recipes' content hash."""
import pytest

from sandboxd.errors import Conflict, Invalid, NotFound
from sandboxd.templates import bases
from sandboxd.templates.store import check_name


def test_get_by_name_and_hash_prefix(store, tiny):
    assert store.get("tiny") == tiny
    assert store.get("t" * 12).name == "tiny"
    assert [i.name for i in store.list()] == ["tiny"]
    assert store.info("tiny")["content_hash"] == "t" * 64 and store.info("tiny")["builtin"] is False
    with pytest.raises(NotFound):
        store.get("nope")
    with pytest.raises(NotFound):
        store.get("short")


def test_delete_keeps_layers_until_gc(store, tiny):
    store.delete("tiny")
    assert not store.exists("tiny")
    assert tiny.layers[0].is_dir()  # a running sandbox may still use it
    assert store.gc(keep={"t" * 64}) == []  # a running sandbox's layers are kept when the caller says so
    fresh = store.new_tmp("in-progress")
    assert store.gc() == ["t" * 64]
    assert not tiny.layers[0].exists()
    assert fresh.is_dir()  # a young build dir may be another process's build in progress
    with pytest.raises(NotFound):
        store.delete("tiny")


def test_layers_in_use_keeps_what_a_sandbox_needs(store, tiny):
    """A layer no image names is still kept while a sandbox record names it (a stopped sandbox mounts it
    again) or while it is mounted (a running sandbox of any data dir)."""
    import json
    import subprocess

    for h in ("r" * 64, "m" * 64):
        store.commit_layer(store.new_tmp(h[:4]), h, {"kind": "test"})
    store.delete("tiny")
    record = store.settings.data_dir / "sandboxes" / "sb1"
    record.mkdir(parents=True)
    (record / "state.json").write_text(json.dumps({"spec": {"image": {"layers": [str(store.layer_path("r" * 64))]}}}))
    mounted = store.layer_path("m" * 64)
    mounted.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mounted)], check=True)
    try:
        assert store.layers_in_use(store.settings.data_dir) == {"r" * 64, "m" * 64}
        assert store.gc(keep=store.layers_in_use(store.settings.data_dir)) == ["t" * 64]
    finally:
        subprocess.run(["umount", str(mounted)], check=True)
    assert store.layers_in_use(store.settings.data_dir) == {"r" * 64}


def test_builtins_cannot_be_deleted(store):
    with pytest.raises(Conflict):
        store.delete("base")


@pytest.mark.parametrize("name", ["", "UPPER", "a/b", "../x", "-lead", "x" * 64])
def test_bad_names(name):
    with pytest.raises(Invalid):
        check_name(name)


def test_builtin_hash_covers_recipe_agent_requirements_and_shift(monkeypatch, tmp_path):
    recipe = bases.BUILTINS["base"]
    h = bases.recipe_hash(recipe, 100000, 65536)
    assert h == bases.recipe_hash(recipe, 100000, 65536)
    assert h != bases.recipe_hash(recipe, 200000, 65536)
    assert h != bases.recipe_hash(bases.BUILTINS["code-interpreter"], 100000, 65536)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("fastapi==0.110  # the agent's server\n\nuvicorn\n")
    monkeypatch.setattr(bases, "AGENT_REQUIREMENTS", reqs)
    assert bases.agent_requirements() == ["fastapi==0.110", "uvicorn"]
    h2 = bases.recipe_hash(recipe, 100000, 65536)
    assert h2 != h
    reqs.write_text("fastapi==0.111\nuvicorn\n")
    assert bases.recipe_hash(recipe, 100000, 65536) != h2


def test_missing_builtins_are_reported(store):
    assert store.builtin_missing() == list(bases.BUILTINS)


def test_customize_script_installs_offline_and_without_host_config():
    script = bases._customize_script(bases.BUILTINS["code-interpreter"], "/tmp/w", ["fastapi"])
    assert "--no-index --find-links /tmp/w" in script
    assert "PIP_CONFIG_FILE=/dev/null" in script and "env -i" in script
    assert "numpy" in script and "useradd" in script and "/opt/sandboxd/pkg" in script
    assert "ca-certificates.crt" not in script and "proxy" not in script


def test_build_env_lends_ca_and_network_pip_config_only(monkeypatch, tmp_path):
    from sandboxd.templates import buildenv
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                    "extra-index-url = file:///opt/pypi/simple https://extra.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    env = buildenv.build_env("/etc/ssl/certs/sandboxd-build-ca.crt")
    assert env["PIP_INDEX_URL"] == "https://mirror.example/simple"
    assert env["PIP_EXTRA_INDEX_URL"] == "https://extra.example/simple"  # host-only file:// index dropped
    assert env["https_proxy"] == "http://proxy.example:3128"
    assert env["PIP_CERT"] == env["NODE_EXTRA_CA_CERTS"] == "/etc/ssl/certs/sandboxd-build-ca.crt"
    assert "PIP_FIND_LINKS" not in env
    assert "PIP_CERT" not in buildenv.build_env(None)


def test_an_image_deleted_while_the_store_is_read_is_just_gone(store, tiny, monkeypatch):
    """Another server on the same store may delete an image between a directory listing and the read."""
    vanished = store.images_dir / "vanished.json"
    listed = [vanished, *sorted(store.images_dir.glob("*.json"))]
    monkeypatch.setattr(type(store.images_dir), "glob", lambda self, pattern: iter(listed))
    assert [i.name for i in store.list()] == ["tiny"]
    assert store.free_layers({"t" * 64}) == set()  # tiny still uses its layer
    assert store.remove("tiny") == {"t" * 64}

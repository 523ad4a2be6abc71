"""One conformance suite over every backend: crun, runc (real sandboxes, root) and fake (the real agent
as a plain process, for API tests). Each behaviour the control plane relies on is checked the same way."""
from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace

import pytest

from support.runtime import cleanup, make_settings, new_id, require_real, SyncBackend
from sandboxd.errors import NotFound, NotSupported, SandboxdError
from sandboxd.runtime.base import Backend, Egress, Resources, RuntimeState, SandboxSpec, TemplateImage
from sandboxd.runtime import agentclient

HAVE_FAKE = importlib.util.find_spec("sandboxd.runtime.fake") is not None
BACKENDS = [pytest.param("crun", marks=pytest.mark.real), pytest.param("runc", marks=pytest.mark.real)]
if HAVE_FAKE:
    BACKENDS.append(pytest.param("fake"))


@pytest.fixture(params=BACKENDS)
def env(request):
    name = request.param
    if name == "runc" and shutil.which("runc") is None:
        require_real()
        pytest.skip("runc is not installed")
    settings = make_settings(name)
    if name == "fake":
        from sandboxd.runtime.fake import FakeBackend

        backend = FakeBackend(settings)
        image = TemplateImage(name="base", layers=(), content_hash="fake")
    else:
        from sandboxd.runtime.hostsetup import prepare_host
        from sandboxd.runtime.oci.backend import OciBackend
        from support.runtime import base_image

        prepare_host(settings, backend=name)
        backend = OciBackend(settings, runtime=name)  # exactly this runtime, no fallback
        image = base_image(settings)
    sb = SyncBackend(backend)
    try:
        yield name, sb, image
    finally:
        cleanup(settings, sb)
        sb.close()


def _spec(image, **kw):
    return SandboxSpec(id=new_id("conf"), image=image, resources=Resources(memory_mb=256, disk_mb=128, pids=128), **kw)


def test_implements_the_protocol(env):
    name, sb, _ = env
    assert isinstance(sb.backend, Backend)
    assert sb.backend.capabilities.name == name


def test_full_lifecycle(env):
    name, sb, image = env
    spec = _spec(image, env={"CONF_VAR": "v1"})
    box = sb.create(spec)
    assert box.id == spec.id and box.state is RuntimeState.RUNNING
    assert sb.loop.run_until_complete(agentclient.health(box.agent_socket))["status"] == "healthy"
    assert sb.state(box.id) is RuntimeState.RUNNING

    r = sb.exec(box.id, ["sh", "-c", 'printf "%s" "$CONF_VAR $X"; cat; echo ok > conf-file; exit 5'],
                env={"X": "x"}, stdin=b"-in")
    assert (r.exit_code, r.stdout) == (5, b"v1 x-in")
    assert sb.exec(box.id, ["sleep", "20"], timeout=0.5).timed_out

    sb.pause(box.id)
    assert sb.state(box.id) is RuntimeState.PAUSED
    sb.resume(box.id)
    assert sb.state(box.id) is RuntimeState.RUNNING

    st = sb.stats(box.id)
    assert st.memory_used_bytes > 0 and st.pids >= 1 and st.cpu_usage_ns > 0

    sb.stop(box.id)
    assert sb.state(box.id) is RuntimeState.STOPPED
    again = sb.start(box.id)
    assert again.state is RuntimeState.RUNNING
    assert sb.exec(box.id, ["cat", "conf-file"]).stdout == b"ok\n"

    sb.destroy(box.id)
    assert sb.state(box.id) is None
    sb.destroy(box.id)  # idempotent


def test_unknown_sandbox(env):
    _, sb, _ = env
    assert sb.state("rt-nobody") is None
    sb.destroy("rt-nobody")
    with pytest.raises(NotFound):
        sb.pause("rt-nobody")
    with pytest.raises(NotFound):
        sb.exec("rt-nobody", ["true"])


def test_recover_adopts_running_and_paused(env):
    name, sb, image = env
    a, b = sb.create(_spec(image)), sb.create(_spec(image))
    sb.pause(b.id)
    adopted = {s.id: s.state for s in sb.recover()}
    assert adopted[a.id] is RuntimeState.RUNNING and adopted[b.id] is RuntimeState.PAUSED
    for x in (a, b):
        sb.destroy(x.id)


def test_duplicate_create_is_refused(env):
    name, sb, image = env
    spec = _spec(image)
    sb.create(spec)
    with pytest.raises(SandboxdError):
        sb.create(spec)
    assert sb.state(spec.id) is RuntimeState.RUNNING
    sb.destroy(spec.id)


def test_update_applies_at_once_and_outlives_a_restart(env):
    name, sb, image = env
    spec = _spec(image, env={"CONF_VAR": "v1"})
    box = sb.create(spec)
    hostname = sb.exec(box.id, ["hostname"]).stdout
    served = replace(spec, resources=Resources(memory_mb=320, disk_mb=128, pids=100), env={"CONF_VAR": "v2"})
    sb.update(box.id, served)
    if name != "fake":  # the fake has no cgroups: only the env is its to keep
        assert sb.stats(box.id).memory_limit_bytes == 320 * 1024 * 1024
    sb.stop(box.id)
    sb.start(box.id)
    assert sb.exec(box.id, ["sh", "-c", 'printf "%s" "$CONF_VAR"']).stdout == b"v2"
    if name != "fake":
        assert sb.stats(box.id).memory_limit_bytes == 320 * 1024 * 1024
    assert sb.exec(box.id, ["hostname"]).stdout == hostname
    sb.update(box.id, replace(served, resources=Resources(memory_mb=192, disk_mb=128, pids=100)))
    if name != "fake":
        assert sb.stats(box.id).memory_limit_bytes == 192 * 1024 * 1024
    with pytest.raises(NotFound):
        sb.update("rt-nobody", served)


def test_export_changes_copies_what_the_sandbox_wrote_and_leaves_it_as_it_was(env, tmp_path):
    _, sb, image = env
    box = sb.create(_spec(image))
    assert sb.exec(box.id, ["sh", "-c", "echo kept > exported-file"]).exit_code == 0

    def export(dest):
        dest.mkdir()
        sb.loop.run_until_complete(sb.backend.export_changes(box.id, dest))
        return [p.read_text() for p in dest.rglob("exported-file")]

    assert export(tmp_path / "running") == ["kept\n"]
    assert sb.state(box.id) is RuntimeState.RUNNING
    sb.pause(box.id)
    assert export(tmp_path / "paused") == ["kept\n"]
    assert sb.state(box.id) is RuntimeState.PAUSED
    sb.resume(box.id)
    sb.stop(box.id)
    with pytest.raises(SandboxdError) as err:
        export(tmp_path / "stopped")
    assert err.value.code == "sandbox_not_running"


def test_egress_rules_are_set_at_once_kept_across_a_restart_and_released(env):
    """The kernel's rules for the sandbox's veth follow set_egress at once, come back with a start, and go
    with the sandbox. What the rules do to traffic: tests/security/test_egress_policy.py."""
    name, sb, image = env
    if name == "fake":  # no network of its own: it refuses, never pretends
        box = sb.create(_spec(image, internet_access=True))
        with pytest.raises(NotSupported):
            sb.set_egress(box.id, Egress(deny=("0.0.0.0/0",)))
        with pytest.raises(NotSupported):
            sb.egress_denied(box.id)
        return
    from sandboxd.runtime import network

    spec = _spec(image, internet_access=True, egress=Egress(allow=("192.0.2.7",), deny=("0.0.0.0/0",)))
    veth = network.names(spec.id)[1]
    box = sb.create(spec)
    assert network.egress_rules(veth) == (["192.0.2.7/32"], ["0.0.0.0/0"])
    sb.set_egress(box.id, Egress(deny=("198.51.100.0/24", "192.0.2.9")))
    assert network.egress_rules(veth) == ([], ["192.0.2.9/32", "198.51.100.0/24"])
    assert sb.egress_denied(box.id).packets == 0
    sb.stop(box.id)
    assert network.egress_rules(veth) is None  # went with the veth
    sb.set_egress(box.id, Egress(deny=("192.0.2.0/24",)))  # a stopped sandbox keeps them for its start
    sb.start(box.id)
    assert network.egress_rules(veth) == ([], ["192.0.2.0/24"])
    sb.update(box.id, replace(spec, env={"CONF_VAR": "v2"}))  # limits and env only: the rules stay
    sb.stop(box.id)
    sb.start(box.id)
    assert network.egress_rules(veth) == ([], ["192.0.2.0/24"])
    network.drop_egress(veth)  # as a table made afresh would leave it: a restart's adoption writes them again
    assert network.egress_rules(veth) is None
    assert box.id in {r.id for r in sb.recover()}
    assert network.egress_rules(veth) == ([], ["192.0.2.0/24"])
    sb.destroy(box.id)
    assert network.egress_rules(veth) is None


def test_a_volume_outlives_its_sandboxes(env, tmp_path):
    """A volume dir (store ids, core/volumes.py) mounted read-write: what one sandbox writes, as root and as
    an unprivileged uid, the next one reads with the same owners, after a stop and start too."""
    name, sb, image = env
    settings = getattr(sb.backend, "settings", None)
    vol = (settings.data_dir if settings else tmp_path) / "volumes" / "volconformance"
    vol.mkdir(parents=True)
    if settings is not None:  # the store's root, as the volume service makes it
        shutil.chown(vol, settings.uid_base, settings.uid_base)

    def where(box_id: str) -> str:  # the fake backend has no mount namespace: a link under its root dir
        return f"{sb.backend.root}/{box_id}/root/mnt/vol" if name == "fake" else "/mnt/vol"

    first = sb.create(_spec(image, volumes=((vol, "/mnt/vol"),)))
    v = where(first.id)
    r = sb.exec(first.id, ["sh", "-c", f"echo one > {v}/a && mkdir {v}/d && chown 1000:1000 {v}/d"])
    assert r.exit_code == 0, r.stderr
    sb.stop(first.id)
    sb.start(first.id)
    assert sb.exec(first.id, ["cat", f"{v}/a"]).stdout == b"one\n"
    sb.destroy(first.id)
    assert (vol / "a").read_text() == "one\n"
    if settings is not None:  # stored in the store's ids, whichever range the sandbox ran in
        assert ((vol / "a").stat().st_uid, (vol / "d").stat().st_uid) == (settings.uid_base, settings.uid_base + 1000)

    second = sb.create(_spec(image, volumes=((vol, "/data"),)))
    v = where(second.id).replace("/mnt/vol", "/data")
    r = sb.exec(second.id, ["sh", "-c", f"cat {v}/a; stat -c '%u %g' {v}/a {v}/d"])
    own = "0 0" if name != "fake" else f"{vol.stat().st_uid} {vol.stat().st_gid}"
    assert r.stdout.decode().split("\n")[:3] == ["one", own, "1000 1000"], r.stdout
    sb.destroy(second.id)

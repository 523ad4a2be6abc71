"""An agent forked by the zygote (runtime/oci/zygote.py) is confined exactly like the container's own process,
and what it carries from the host side stays closed to the sandbox's code."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from support.runtime import spec
from sandboxd.runtime import reaper

pytestmark = pytest.mark.real

NAMESPACES = ("user", "mnt", "pid", "net", "uts", "ipc", "cgroup")
STATUS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
          "Seccomp_filters")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines) if k in STATUS}


def _agent(init_pid: int) -> int:
    """The sandbox's agent, seen from the host: the zygote's fork in the init's pid namespace."""
    ns = os.readlink(f"/proc/{init_pid}/ns/pid")
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (os.readlink(f"/proc/{p}/ns/pid") == ns
                    and b"sandboxd.agent.zygote" in Path(f"/proc/{p}/cmdline").read_bytes()):
                return int(p)
        except OSError:
            continue
    raise AssertionError("no agent forked by the zygote in this sandbox")


@pytest.fixture(scope="module")
def box(rt_env):
    _, sb, image = rt_env
    return sb.create(spec(image, "zyg", env={"ZYGOTE_TEST_SECRET": "s3cret"}))


def test_forked_agent_is_confined_like_the_container(rt_env, box):
    _, sb, _ = rt_env
    agent = _agent(box.pid)
    for ns in NAMESPACES:
        assert os.readlink(f"/proc/{agent}/ns/{ns}") == os.readlink(f"/proc/{box.pid}/ns/{ns}"), ns
    assert Path(f"/proc/{agent}/cgroup").read_text() == Path(f"/proc/{box.pid}/cgroup").read_text()
    assert _status(agent) == _status(box.pid)
    assert _status(agent)["Seccomp"] == "2" and _status(agent)["NoNewPrivs"] == "1"
    assert Path(f"/proc/{agent}/oom_score_adj").read_text() == Path(f"/proc/{box.pid}/oom_score_adj").read_text()
    # It serves, with the sandbox's environment (read by the fork alone, never by the zygote), and its
    # initial environment block (the zygote's) is empty: nothing of the host.
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(box.agent_socket)), base_url="http://agent") as c:
        r = c.post("/commands/run", json={"command": "echo $ZYGOTE_TEST_SECRET"}, timeout=30)
    assert r.status_code == 200 and r.json()["stdout"] == "s3cret\n"
    assert Path(f"/proc/{agent}/environ").read_bytes() == b""


def test_sandbox_code_cannot_read_the_agent(rt_env, box):
    """The agent's memory belongs to the host's user namespace: non-dumpable, its /proc files stay closed
    to the sandbox's root, and what is readable names no host path."""
    _, sb, _ = rt_env
    code = ("import json, os\nout = {}\n"
            "agent = next(p for p in os.listdir('/proc') if p.isdigit() and b'sandboxd.agent.zygote' in "
            "open(f'/proc/{p}/cmdline', 'rb').read())\n"
            "for name in ('environ', 'maps', 'mem', 'exe', 'root', 'cwd', 'fd'):\n"
            "    path = f'/proc/{agent}/{name}'\n"
            "    try:\n"
            "        os.listdir(path) if name == 'fd' else (os.readlink(path) if name in ('exe', 'root', 'cwd') "
            "else open(path, 'rb').read(64))\n"
            "        out[name] = 'read'\n"
            "    except OSError as e:\n"
            "        out[name] = e.errno\n"
            "out['cmdline'] = open(f'/proc/{agent}/cmdline', 'rb').read().decode()\n"
            "print(json.dumps(out))")
    r = sb.py(box.id, code)
    assert r.exit_code == 0, r.stderr.decode()
    out = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert {k: v for k, v in out.items() if k != "cmdline"} == {k: 13 for k in
                                                                ("environ", "maps", "mem", "exe", "root", "cwd", "fd")}
    assert out["cmdline"].split("\0")[0] == "/opt/sandboxd/venv/bin/python"  # the sandbox's own path


def test_sandbox_ends_when_its_forked_agent_dies(rt_env):
    _, sb, image = rt_env
    box = sb.create(spec(image, "zygdie"))
    try:
        os.kill(_agent(box.pid), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{box.pid}") and Path(f"/proc/{box.pid}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, "the container's init outlived its agent"
            # The dead agent is a zombie of ours (the subreaper), and it keeps the namespace's init from
            # finishing its exit until it is reaped: the daemon does this every second.
            reaper.reap_orphans()
            time.sleep(0.05)
    finally:
        sb.destroy(box.id)


def test_a_failing_zygote_falls_back_to_the_cold_agent(rt_env, monkeypatch):
    from sandboxd.runtime.oci import zygote

    _, sb, image = rt_env

    async def refuse(self, *args, **kwargs):
        raise zygote.ZygoteFailed("refused for the test")

    monkeypatch.setattr(zygote.Zygote, "spawn", refuse)
    box = sb.create(spec(image, "zygcold"))
    try:
        assert sb.sh(box.id, "true").exit_code == 0
        cmdlines = [Path(f"/proc/{p}/cmdline").read_bytes() for p in filter(str.isdigit, os.listdir("/proc"))
                    if _same_pid_ns(p, box.pid)]
        assert any(b"-m\0sandboxd.agent\0" in c for c in cmdlines)  # the exec'd agent, under tini
    finally:
        sb.destroy(box.id)
    monkeypatch.undo()
    z = next(iter(sb.backend._zygotes.values()))
    assert z.failures == 1 and not z.broken  # one failure may be the sandbox's own: the zygote stays in use
    z.failures = 0


@pytest.mark.parametrize("touches_python", [False, True])
def test_an_image_built_on_a_builtin_shares_its_zygote_unless_it_touches_python(rt_env, tmp_path, touches_python):
    """A snapshot's or a fork's image is the builtin layer plus the sandbox's changes: its agent is forked by the
    builtin's zygote, unless those changes reach into the Python installation (then it starts cold)."""
    from dataclasses import replace

    _, sb, image = rt_env
    upper = tmp_path / "upper"
    (upper / "home" / "user").mkdir(parents=True)
    (upper / "home" / "user" / "from-the-layer").write_text("kept\n")
    if touches_python:
        (upper / "usr" / "local" / "lib" / "python3.11").mkdir(parents=True)
    derived = replace(image, name="derived", layers=(upper, *image.layers), content_hash="derived-" + upper.name)
    zygotes = set(sb.backend._zygotes)
    box = sb.create(spec(derived, "zygderived"))
    try:
        assert sb.sh(box.id, "cat /home/user/from-the-layer").stdout == b"kept\n"
        if touches_python:
            with pytest.raises(AssertionError):
                _agent(box.pid)
        else:
            _agent(box.pid)
        assert set(sb.backend._zygotes) <= zygotes | {image.layers[-1].parent.name}  # no zygote of its own
    finally:
        sb.destroy(box.id)


def _same_pid_ns(pid: str, init_pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init_pid}/ns/pid")
    except OSError:
        return False

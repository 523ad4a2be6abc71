"""Lifecycle of real sandboxes on this host: create, exec, pause/resume, stop/start, destroy."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from support.runtime import leftovers, spec
from sandboxd.errors import Conflict
from sandboxd.runtime.base import Resources, RuntimeState
from sandboxd.runtime import agentclient
from sandboxd.runtime.oci.state import Record

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def running(rt_env):
    settings, sb, image = rt_env
    s = spec(image, "life", env={"RT_GREETING": "hello"})
    return sb.create(s)


def test_create_gives_a_hardened_sandbox_under_tini(rt_env, running):
    _, sb, _ = rt_env
    assert sb.state(running.id) is RuntimeState.RUNNING
    assert sb.loop.run_until_complete(agentclient.health(running.agent_socket)) ["status"] == "healthy"
    r = sb.sh(running.id, "cat /proc/1/cmdline | tr '\\0' ' '; echo; grep -E 'NoNewPrivs|Seccomp:|CapEff' /proc/self/status;"
                          " cat /proc/self/uid_map")
    out = r.stdout.decode()
    # tini runs the agent, or (builtin images) waits on the agent the zygote forked into the sandbox
    assert out.startswith(("/usr/bin/tini -g -- /opt/sandboxd/venv/bin/python -I -m sandboxd.agent",
                           "/usr/bin/tini -g -- /bin/sh -c read _ <&3"))
    assert "NoNewPrivs:\t1" in out and "Seccomp:\t2" in out
    assert "CapEff:\t00000000a00405fb" in out  # the 12 capabilities of seccomp.CAPABILITIES
    settings = rt_env[0]
    slot = Record.load(running.bundle).extra["uid_slot"]  # its own host range, never the store's
    assert slot >= 1 and out.split()[-3:] == ["0", str(settings.uid_base + slot * settings.uid_count), "65536"]


def test_exec_env_user_cwd_stdin_and_exit_code(rt_env, running):
    _, sb, _ = rt_env
    r = sb.exec(running.id, ["sh", "-c", 'echo "$RT_GREETING $EXTRA"; id -u; pwd; cat; exit 3'],
                env={"EXTRA": "world"}, user="user", cwd="/tmp", stdin=b"from-stdin")
    assert r.exit_code == 3
    assert r.stdout.decode().split("\n")[:4] == ["hello world", "1000", "/tmp", "from-stdin"]
    assert sb.exec(running.id, ["id", "-u"], user="0").stdout == b"0\n"
    assert sb.exec(running.id, ["pwd"]).stdout == b"/workspace\n"
    # like every process of the sandbox, the host's first choice under memory pressure (not the daemon's 0)
    assert sb.exec(running.id, ["cat", "/proc/self/oom_score_adj"]).stdout == b"500\n"
    nope = sb.exec(running.id, ["/no/such/binary"])
    assert nope.exit_code != 0 and b"/no/such/binary" in nope.stderr


def test_exec_timeout_kills_the_command(rt_env, running):
    _, sb, _ = rt_env
    t = time.monotonic()
    r = sb.exec(running.id, ["sh", "-c", "echo started; sleep 30"], timeout=1.0)
    assert r.timed_out and time.monotonic() - t < 10
    assert b"sleep 30" not in sb.exec(running.id, ["ps", "-eo", "args"]).stdout


def test_pause_freezes_cpu_and_keeps_memory_and_files(rt_env, running):
    _, sb, _ = rt_env
    blob = sb.py(running.id, "import os,sys; d=os.urandom(1<<20); open('/workspace/blob','wb').write(d);"
                             "import hashlib; print(hashlib.sha256(d).hexdigest())").stdout.decode().strip()
    # A busy process holding state in memory: it must be the same process with the same counter after.
    sb.sh(running.id, "nohup python3 -c 'import time\nn=0\nwhile True: n+=1' >/dev/null 2>&1 &")
    time.sleep(0.3)
    sb.pause(running.id)
    assert sb.state(running.id) is RuntimeState.PAUSED
    before = sb.stats(running.id).cpu_usage_ns
    time.sleep(1.0)
    assert sb.stats(running.id).cpu_usage_ns == before  # no CPU at all while frozen
    sb.resume(running.id)
    assert sb.state(running.id) is RuntimeState.RUNNING
    time.sleep(0.3)
    assert sb.stats(running.id).cpu_usage_ns > before
    assert sb.sh(running.id, "sha256sum /workspace/blob").stdout.decode().split()[0] == blob
    sb.sh(running.id, "pkill -f 'n+=1'")


def test_stop_start_keeps_files_byte_for_byte(rt_env):
    _, sb, image = rt_env
    box = sb.create(spec(image, "stop"))
    digest = sb.py(box.id, "import os,hashlib; d=os.urandom(3<<20); open('/workspace/data','wb').write(d);"
                           "os.symlink('data','/workspace/link'); os.chmod('/workspace/data',0o640);"
                           "print(hashlib.sha256(d).hexdigest())").stdout.decode().strip()
    sb.stop(box.id)
    assert sb.state(box.id) is RuntimeState.STOPPED
    with pytest.raises(Conflict):
        sb.exec(box.id, ["true"])
    again = sb.start(box.id)
    assert sb.loop.run_until_complete(agentclient.health(again.agent_socket))["status"] == "healthy"
    out = sb.sh(box.id, "sha256sum /workspace/data; stat -c %a /workspace/data; readlink /workspace/link").stdout.decode()
    assert out.split() == [digest, "/workspace/data", "640", "data"]
    sb.destroy(box.id)


def test_stats_reflect_limits(rt_env):
    _, sb, image = rt_env
    box = sb.create(spec(image, "stats", resources=Resources(vcpu=0.5, memory_mb=300, disk_mb=200, pids=77)))
    st = sb.stats(box.id)
    assert st.cpu_quota_cores == 0.5
    assert st.memory_limit_bytes == 300 * 1024 * 1024
    assert 150 * 1024 * 1024 < st.disk_limit_bytes <= 200 * 1024 * 1024
    assert 1 <= st.pids < 77 and st.memory_used_bytes > 0 and st.cpu_usage_ns > 0
    assert sb.exec(box.id, ["cat", "/sys/fs/cgroup/pids/pids.max"]).stdout == b"77\n"
    sb.destroy(box.id)


def test_destroy_releases_everything_and_is_idempotent(rt_env):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "gone", internet_access=True))
    assert leftovers(settings, box.id)  # the probe sees a live sandbox's resources
    sb.destroy(box.id)
    assert leftovers(settings, box.id) == []
    assert sb.state(box.id) is None
    sb.destroy(box.id)
    assert box.id not in sb.loop.run_until_complete(sb.backend.cli.list_ids())


def test_duplicate_id_is_a_conflict(rt_env, running):
    _, sb, image = rt_env
    from sandboxd.runtime.base import SandboxSpec

    with pytest.raises(Conflict):
        sb.create(SandboxSpec(id=running.id, image=image))
    assert sb.state(running.id) is RuntimeState.RUNNING


def test_binds_are_read_only_and_the_agent_holds_only_its_socket(rt_env, tmp_path):
    _, sb, image = rt_env
    src = tmp_path / "ca.pem"
    src.write_text("CERT")
    box = sb.create(spec(image, "bind", binds=((src, "/etc/rt-ca.pem"),)))
    assert sb.exec(box.id, ["cat", "/etc/rt-ca.pem"]).stdout == b"CERT"
    r = sb.sh(box.id, "echo x > /etc/rt-ca.pem")
    assert r.exit_code != 0 and b"Read-only file system" in r.stderr
    assert src.read_text() == "CERT"
    # the agent's fds, seen from the host: the listening socket is fd 3, and no other host file but its log
    ns = os.readlink(f"/proc/{box.pid}/ns/pid")
    agent = next(p for p in filter(str.isdigit, os.listdir("/proc")) if _in_ns(p, ns)
                 and b"sandboxd.agent" in open(f"/proc/{p}/cmdline", "rb").read())
    fds = {int(n): os.readlink(f"/proc/{agent}/fd/{n}") for n in os.listdir(f"/proc/{agent}/fd")}
    assert fds[3].startswith("socket:")
    assert [t for t in fds.values() if t.startswith("/") and t != "/dev/null" and not t.endswith("/agent.log")] == []
    sb.destroy(box.id)


def test_cancelled_exec_ends_the_command(rt_env, running):
    _, sb, _ = rt_env

    async def cancel_it():
        task = asyncio.ensure_future(sb.backend.exec(running.id, ["sleep", "77"]))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    sb.loop.run_until_complete(cancel_it())
    time.sleep(0.2)
    assert b"sleep 77" not in sb.exec(running.id, ["ps", "-eo", "args"]).stdout


def test_code_interpreter_kernel_runs_under_the_hardening(rt_env):
    """The Jupyter kernel (ZMQ over the sandbox's own loopback, threads, numpy) works inside the profile."""
    settings, sb, _ = rt_env
    import httpx

    from sandboxd.errors import NotFound
    from sandboxd.templates.store import TemplateStore

    try:
        image = TemplateStore(settings).get("code-interpreter")
    except NotFound:
        pytest.skip("the code-interpreter template is not built")
    box = sb.create(spec(image, "kernel", resources=Resources(memory_mb=1024, disk_mb=512, pids=256)))
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(box.agent_socket)), base_url="http://agent",
                      timeout=120) as client:
        r = client.post("/execute", json={"code": "import numpy as np\nx = np.arange(5)\nprint(x.sum())",
                                          "language": "python"})
        assert r.status_code == 200 and r.json()["stdout"] == "10\n"
        assert client.post("/execute", json={"code": "print(x.mean())"}).json()["stdout"] == "2.0\n"
    assert sb.exec(box.id, ["node", "-e", "console.log(6*7)"]).stdout == b"42\n"
    sb.destroy(box.id)


def test_state_comes_from_the_kernel_not_a_runtime_call(rt_env):
    """The lifecycle's watch asks every sandbox's state every 5 s: a `crun state` each (~8 ms of CPU with
    the daemon's spawn) kept a core busy at a thousand idle sandboxes. The answer is right in every state,
    and a pid that no longer is the sandbox's init (reused by another process) means the sandbox stopped."""
    import os
    import signal

    from sandboxd.runtime.oci.state import Record

    _, sb, image = rt_env
    box = sb.create(spec(image, "state"))
    calls = []
    cli_call = sb.backend.cli.call

    async def counted(*args, **kw):
        calls.append(args[0])
        return await cli_call(*args, **kw)

    sb.backend.cli.call = counted
    try:
        assert sb.state(box.id) is RuntimeState.RUNNING
        sb.pause(box.id)
        assert sb.state(box.id) is RuntimeState.PAUSED
        sb.resume(box.id)
        assert sb.state(box.id) is RuntimeState.RUNNING
        assert [c for c in calls if c == "state"] == []
        d = sb.backend.dir(box.id)
        rec = Record.load(d)
        init, rec.pid = rec.pid, os.getpid()  # a live process, but not in the sandbox's cgroup
        rec.save(d)
        assert sb.state(box.id) is RuntimeState.STOPPED
        rec.pid = init
        rec.save(d)
        assert sb.state(box.id) is RuntimeState.RUNNING
        os.kill(init, signal.SIGKILL)  # the init dies (a zombie until reaped): stopped
        deadline = time.time() + 10
        while sb.state(box.id) is not RuntimeState.STOPPED:
            assert time.time() < deadline, "a dead init still reads as running"
            time.sleep(0.05)
    finally:
        del sb.backend.cli.call
        sb.destroy(box.id)


def _in_ns(pid: str, ns: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == ns
    except OSError:
        return False

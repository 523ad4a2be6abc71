"""Resource abuse stays inside the sandbox's limits: fork bomb (pids), memory bomb (OOM kill), disk fill."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from support.runtime import spec
from sandboxd.runtime.base import Resources, RuntimeState
from sandboxd.runtime import agentclient

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def bystander(rt_env):
    _, sb, image = rt_env
    return sb.create(spec(image, "by"))


def test_fork_bomb_is_contained_by_pids(rt_env, bystander):
    _, sb, image = rt_env
    bomb = sb.create(spec(image, "fork", resources=Resources(memory_mb=512, disk_mb=128, pids=64)))
    code = ("import os,json,time,errno\nn=0\n"
            "try:\n"
            "    while True:\n"
            "        if os.fork()==0:\n            os.closerange(0, 3); time.sleep(60); os._exit(0)\n"
            "        n+=1\n"
            "except OSError as e:\n    print(json.dumps([n, errno.errorcode[e.errno]]))\n")
    r = sb.py(bomb.id, code, timeout=60)
    n, err = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert err == "EAGAIN" and 10 < n < 64
    assert 50 < sb.stats(bomb.id).pids <= 64  # the budget used up (the bomb itself has exited), never more
    # the host and other sandboxes keep working
    assert sb.exec(bystander.id, ["echo", "alive"]).stdout == b"alive\n"
    assert os.waitpid(os.spawnv(os.P_NOWAIT, "/bin/true", ["true"]), 0)[1] == 0
    sb.destroy(bomb.id)


def test_memory_bomb_is_oom_killed_inside_its_sandbox_only(rt_env, bystander):
    _, sb, image = rt_env
    bomb = sb.create(spec(image, "mem", resources=Resources(memory_mb=128, disk_mb=128, pids=64)))
    r = sb.py(bomb.id, "x=[]\nwhile True: x.append(bytearray(8<<20))", timeout=60)
    assert r.exit_code in (137, -9)  # SIGKILL from the OOM killer
    st = sb.stats(bomb.id)
    assert st.oom_kills >= 1
    assert st.memory_limit_bytes == 128 * 1024 * 1024
    # the sandbox itself survives (its agent answers) and so does everyone else
    assert sb.state(bomb.id) is RuntimeState.RUNNING
    assert sb.loop.run_until_complete(agentclient.health(bomb.agent_socket))["status"] == "healthy"
    assert sb.exec(bystander.id, ["echo", "alive"]).stdout == b"alive\n"
    assert sb.stats(bystander.id).oom_kills == 0
    sb.destroy(bomb.id)


def test_filling_the_disk_stops_at_the_quota(rt_env):
    settings, sb, image = rt_env
    box = sb.create(spec(image, "disk", resources=Resources(memory_mb=256, disk_mb=100, pids=64)))
    host_free = shutil.disk_usage(settings.data_dir).free
    code = ("import json,errno\nn=0\nf=open('/workspace/fill','wb')\n"
            "try:\n    while True:\n        f.write(b'x'*(1<<20)); f.flush(); n+=1\n"
            "except OSError as e:\n    print(json.dumps([n, errno.errorcode[e.errno]]))\n")
    r = sb.py(box.id, code, timeout=60)
    n, err = json.loads(r.stdout.decode().strip().splitlines()[-1])
    assert err == "ENOSPC"
    assert 80 <= n <= 100  # MiB written before the quota: the image's size less ext4 metadata
    st = sb.stats(box.id)
    assert st.disk_used_bytes >= st.disk_limit_bytes - 8 * 1024 * 1024
    # the host disk did not pay for it beyond the sparse image (others use this disk too: loose bound)
    assert host_free - shutil.disk_usage(settings.data_dir).free < 400 * 1024 * 1024
    # the sandbox still works after freeing space
    assert sb.exec(box.id, ["rm", "/workspace/fill"]).exit_code == 0
    assert sb.sh(box.id, "echo ok > /workspace/after && cat /workspace/after").stdout == b"ok\n"
    sb.destroy(box.id)

"""reap_orphans() in a child subreaper: it reaps the runtime's orphaned zombies (found through the threads'
`children` lists, or every /proc entry where those lists do not exist) and leaves other code's children alone.
Run in a fresh interpreter: becoming a subreaper is for the life of the process."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCENARIO = textwrap.dedent("""
    import ctypes, os, shutil, sys, tempfile, threading, time
    from sandboxd.runtime import reaper

    if sys.argv[1] == "no-children-files":
        real = os.listdir
        os.listdir = lambda p=".": (_ for _ in ()).throw(FileNotFoundError(p)) if p == "/proc/self/task" else real(p)
    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # more than one task: every list is read

    fake = os.path.join(tempfile.mkdtemp(), "crun")  # what a runtime's intermediate process is called
    shutil.copy("/bin/true", fake)
    mine = os.fork()  # our own child, someone else's to wait for: never touched
    if mine == 0:
        os._exit(0)
    mid = os.fork()
    if mid == 0:  # the runtime's double fork: the grandchild outlives its parent and comes to us
        if os.fork() == 0:
            time.sleep(0.2)
            os.execv(fake, [fake])
        os._exit(0)
    os.waitpid(mid, 0)
    def state(pid, parent=None):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            return None
        return fields[0] if parent is None or int(fields[1]) == parent else None
    deadline = time.monotonic() + 5
    orphans = []
    while time.monotonic() < deadline and not orphans:
        for p in os.listdir("/proc") if sys.argv[1] == "no-children-files" else reaper._candidates():
            if p.isdigit() and int(p) != mine and state(p, os.getpid()) == "Z":
                orphans.append(int(p))
        time.sleep(0.02)
    assert orphans, "the orphan never became our zombie"
    assert state(mine) == "Z"
    print(reaper.reap_orphans(), state(orphans[0]), state(mine))
""")


@pytest.mark.parametrize("mode", ["children-files", "no-children-files"])
def test_reaps_the_runtimes_orphans_and_nothing_else(mode):
    out = subprocess.run([sys.executable, "-c", SCENARIO, mode], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    reaped, orphan, mine = out.stdout.split()
    assert (reaped, orphan, mine) == ("1", "None", "Z")


PERIODIC = textwrap.dedent("""
    import asyncio, ctypes, os, shutil, tempfile, time
    from sandboxd.runtime import reaper

    assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    reaper.REAP_EVERY = 0.2
    fake = os.path.join(tempfile.mkdtemp(), "crun")
    shutil.copy("/bin/true", fake)

    def state(pid):
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rpartition(")")[2].split()[0]
        except OSError:
            return None

    async def main():
        reaper.reap_periodically()
        r, w = os.pipe()
        mid = os.fork()
        if mid == 0:  # the runtime's double fork; the grandchild exits well after any reap at "create"
            if os.fork() == 0:
                time.sleep(0.3)
                os.write(w, str(os.getpid()).encode())
                os.execv(fake, [fake])
            os._exit(0)
        os.waitpid(mid, 0)
        os.close(w)
        orphan = int(os.read(r, 20))
        await asyncio.sleep(1.0)  # nobody creates or kills anything: only the timer can reap it
        print(state(orphan))

    asyncio.run(main())
""")


def test_an_orphan_that_exits_later_is_reaped_by_the_timer():
    out = subprocess.run([sys.executable, "-c", PERIODIC], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["None"]


UVLOOP_SCENARIO = textwrap.dedent("""
    import asyncio, sys, tempfile, time
    from pathlib import Path
    import uvloop
    from sandboxd.errors import RuntimeFailure
    from sandboxd.runtime import reaper
    from sandboxd.runtime.oci.cli import OciCli

    async def main():
        cli = OciCli("true", Path(tempfile.mkdtemp()))  # a runtime that exits at once, run from its sealed copy
        done = asyncio.Event()

        async def reap_all_the_time():  # the periodic reap and other sandboxes' waits, as often as they can
            while not done.is_set():
                time.sleep(0.003)  # a loaded daemon: other callbacks run while the child exits
                reaper.reap_orphans()
                await asyncio.sleep(0)

        reaping = asyncio.create_task(reap_all_the_time())
        hung = 0
        for _ in range(int(sys.argv[1])):
            try:
                await cli.call("state", "x", timeout=1.0, check=False)
            except RuntimeFailure:
                hung += 1
        done.set()
        await reaping
        print(hung)

    uvloop.run(main())
""")


def test_runtime_calls_under_uvloop_are_never_reaped_from_under_it():
    """`uvicorn.run` serves on uvloop when it is installed (the monitoring tests' server does), and libuv waits
    for its children itself: a runtime call whose child the orphan reap took first (between the fork and
    `spawned`) never saw it exit, and its `communicate()` hung until the timeout (a `crun delete` held a
    killed sandbox's release 60 s in CI)."""
    pytest.importorskip("uvloop")
    out = subprocess.run([sys.executable, "-c", UVLOOP_SCENARIO, "40"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"], out.stdout

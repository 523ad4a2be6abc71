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

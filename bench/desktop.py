"""Desktop benchmark: memory of a desktop sandbox (idle agent, display started, Chromium open) and the
latency of the first desktop call, a screenshot and a click. Prints figures; asserts nothing.

  python bench/desktop.py            # real sandbox: `sandboxd serve` (crun) + the desktop template
  python bench/desktop.py --host     # no sandbox: the agent as a host process, PSS of its desktop processes
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
MiB = 1 << 20


def timed(fn, n=10):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def wait(pred, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.25)
    raise TimeoutError


def chromium_window(desktop):
    return any("chrom" in (w.title or "").lower() for w in desktop.get_windows())


def common(d, report):
    t = time.perf_counter()
    d.get_display()  # first call: starts Xvnc + openbox
    report("first desktop call (starts the display)", (time.perf_counter() - t) * 1000, "ms")
    report("screenshot, full screen PNG (median of 10)", timed(d.screenshot), "ms")
    report("mouse click (median of 10)", timed(lambda: d.click(5, 5)), "ms")
    report("windows list (median of 10)", timed(d.get_windows), "ms")


def sandbox_mode():
    from desktop.test_e2e_real import TEMPLATES_DIR, _free_pair, _up, desktop_template
    from hopx_ai import Sandbox

    if not (TEMPLATES_DIR / "images" / "desktop.json").exists():
        sys.exit(f"no desktop template in {TEMPLATES_DIR}")
    data = Path(tempfile.mkdtemp(prefix="h-bench-desktop-"))
    data.chmod(0o755)  # the sandboxes' user namespace must traverse it
    port, key = _free_pair(), "bench-desktop-" + secrets.token_hex(8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
    env.update(SANDBOXD_DATA_DIR=str(data), SANDBOXD_TEMPLATES_PATH=str(TEMPLATES_DIR), SANDBOXD_BACKEND="crun",
               SANDBOXD_API_KEY=key, NO_PROXY="127.0.0.1,localhost")
    log = open(data / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "sandboxd.cli.main", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env, cwd=ROOT, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait(lambda: _up(base), 30)
        template = desktop_template({"base": base, "key": key})
        sb = Sandbox.create(template=template, base_url=base, api_key=key, timeout_seconds=600)
        try:
            d = sb.desktop

            def mem():
                time.sleep(3)  # let the sandbox settle
                return sb.get_metrics_snapshot()["system"]["memory"]["used"] / MiB

            def report(what, value, unit):
                print(f"{what:55s} {value:8.1f} {unit}")

            report("sandbox memory, agent only (no display yet)", mem(), "MiB")
            common(d, report)
            report("sandbox memory, display + window manager started", mem(), "MiB")
            sb.commands.run("chromium about:blank >/dev/null 2>&1", background=True)
            wait(lambda: chromium_window(d), 60)
            time.sleep(5)
            report("sandbox memory, Chromium open (about:blank)", mem(), "MiB")
        finally:
            sb.kill()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        shutil.rmtree(data, ignore_errors=True)


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout.split()
    pairs = list(zip(map(int, out[::2]), map(int, out[1::2])))
    found, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        found.append(p)
        frontier += [c for c, pp in pairs if pp == p]
    return found


def host_mode():
    from desktop.conftest import Agent, free_display
    from hopx_ai import Sandbox

    state = Path(tempfile.mkdtemp(prefix="h-bench-desktop-"))
    agent = Agent(state, free_display())
    try:
        d = Sandbox.debug(agent.url, "tok", sandbox_id="h-bench").desktop

        def report(what, value, unit):
            print(f"{what:55s} {value:8.1f} {unit}")

        def pss(exclude_agent=True):
            time.sleep(2)
            pids = [p for p in tree(agent.proc.pid) if not (exclude_agent and p == agent.proc.pid)]
            return sum(pss_kib(p) for p in pids) / 1024

        report("agent PSS before the display", pss_kib(agent.proc.pid) / 1024, "MiB")
        common(d, report)
        report("desktop processes PSS (Xvnc + openbox)", pss(), "MiB")
        chrome = subprocess.Popen(["chromium", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                                   "--no-first-run", f"--user-data-dir={state}/chromium", "about:blank"],
                                  env=agent.display_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        try:
            wait(lambda: chromium_window(d), 60)
            time.sleep(5)
            desk = pss()
            chrome_pss = sum(pss_kib(p) for p in tree(chrome.pid)) / 1024
            report("desktop processes PSS with Chromium open", desk + chrome_pss, "MiB")
        finally:
            os.killpg(chrome.pid, signal.SIGKILL)
            chrome.wait()
    finally:
        agent.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    host_mode() if "--host" in sys.argv else sandbox_mode()

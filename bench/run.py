"""THE benchmark: every figure of the performance table, with the bare-runtime floor and Debian's
podman measured in the same run on the same rootfs. Prints the table, writes JSON to bench/results/.

    .venv/bin/python bench/run.py                 # full: 50 runs per row, 200 idle sandboxes, 60 s sustained
    .venv/bin/python bench/run.py --quick         # 12 runs, 20 idle, 10 s sustained (a smoke run, not figures)
    .venv/bin/python bench/run.py --runs 100 --idle 200 --sustain 60 --pool 8 --no-podman

Runs a real `sandboxd serve` on crun in a scratch data dir (templates from SANDBOXD_TEMPLATES_PATH) and
drives it through our SDK, as a user would. Needs root and built templates. Asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import floors  # noqa: E402
from support.server import CPServer  # noqa: E402  (the test suites' `sandboxd serve` harness)
from gateway import timer  # noqa: E402  (bench/gateway.py: keep-alive request timing on a raw socket)
from runtime import host_cpu_ms, pss_kib  # noqa: E402
from agent_start import cpu_ms  # noqa: E402
from e2b_rows import TTI_TEMPLATE, WRITTEN_MIB, E2BRows  # noqa: E402

TEMPLATES = os.environ.get("SANDBOXD_TEMPLATES_PATH", "/var/lib/sandboxd/templates")


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def dist(xs: list[float] | None) -> dict | None:
    if not xs:
        return None
    return {"n": len(xs), "p50": pct(xs, .5), "p95": pct(xs, .95), "p99": pct(xs, .99), "min": min(xs)}


def ms_since(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


class Bench:
    def __init__(self, a):
        self.a = a
        self.data = Path(tempfile.mkdtemp(prefix="perf-bench-", dir="/tmp"))
        self.data.chmod(0o755)
        self.srv = CPServer(self.data, None, SANDBOXD_BACKEND="crun", SANDBOXD_TEMPLATES_PATH=TEMPLATES,
                            SANDBOXD_POOL=f"{a.template}={a.pool}", SANDBOXD_MAX_SANDBOXES=str(max(500, a.idle + 50)),
                            SANDBOXD_ZYGOTE="false" if a.no_zygote else "true",
                            # its pause rows are the freezer's (RAM); pauses to disk: bench/snapshots.py
                            SANDBOXD_PAUSE_TO="memory")
        self.api = None
        self.figures: dict[str, dict] = {}

    # ---- server helpers -------------------------------------------------------------------------------
    def sdk(self, **kw):
        from sandboxd.sdk import Sandbox

        return Sandbox.create(self.a.template, api_key=self.srv.key, api_url=self.srv.base, **kw)

    def pool(self) -> dict:
        return self.api.get(f"/v1/pools/{self.a.template}").json()

    def set_pool(self, n: int, wait: bool = True) -> None:
        self.api.put(f"/v1/pools/{self.a.template}", json={"size": n})
        deadline = time.monotonic() + 300
        while wait and time.monotonic() < deadline:
            p = self.pool()
            if p["ready"] == n and p["filling"] == 0:
                return
            time.sleep(0.05)

    # ---- rows ----------------------------------------------------------------------------------------
    def create_first_command(self, pooled: bool) -> tuple[list[float], list[float], int]:
        self.set_pool(self.a.pool if pooled else 0)
        first, kills, hits0 = [], [], self.pool()["hits"]
        self.agent_cpu: list[float] = []
        for _ in range(self.a.runs):
            if pooled:  # time a hit, not the refill: wait until a frozen member is there
                while self.pool()["ready"] == 0:
                    time.sleep(0.02)
            t = time.perf_counter()
            sb = self.sdk()
            sb.commands.run("true")
            first.append(ms_since(t))
            if not pooled:
                self.agent_cpu += _agent_cpu_ms(sb.id)
            t = time.perf_counter()
            sb.kill()
            kills.append(ms_since(t))
            sb.close()
        return first, kills, self.pool()["hits"] - hits0

    def live_rows(self) -> dict[str, list[float]]:
        out = {k: [] for k in ("exec", "run_code", "pause", "resume", "direct", "gateway")}
        sb = self.sdk()
        try:
            for _ in range(5):
                sb.commands.run("true")
            for _ in range(self.a.runs):
                t = time.perf_counter()
                sb.commands.run("true")
                out["exec"].append(ms_since(t))
            sb.run_code("x = 0")
            for _ in range(self.a.runs):
                t = time.perf_counter()
                sb.run_code("x = x + 1")
                out["run_code"].append(ms_since(t))
            for _ in range(self.a.runs):
                t = time.perf_counter()
                sb.pause()
                out["pause"].append(ms_since(t))
                t = time.perf_counter()
                sb.resume()
                out["resume"].append(ms_since(t))
            sock = self.data / "sandboxes" / sb.id / "agent.sock"
            direct = socket.socket(socket.AF_UNIX)
            direct.connect(str(sock))
            gw = socket.create_connection(("127.0.0.1", self.srv.port + 1))
            gw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            base = b"GET /health HTTP/1.1\r\nHost: agent\r\n"
            d_one = timer(direct, base + b"\r\n")
            g_one = timer(gw, base + f"Authorization: Bearer {sb._token.value}\r\n\r\n".encode())
            for _ in range(100):
                d_one(), g_one()
            for _ in range(max(self.a.runs * 10, 500)):
                out["direct"].append(d_one() * 1000)
                out["gateway"].append(g_one() * 1000)
            direct.close()
            gw.close()
        finally:
            sb.kill()
        return out

    def idle_memory(self) -> dict:
        self.set_pool(0)
        meminfo = lambda: int(next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable")).split()[1])
        before = meminfo()
        with ThreadPoolExecutor(4) as ex:
            sbs = list(ex.map(lambda _i: self.sdk(), range(self.a.idle)))
        time.sleep(3.0)  # let first requests and imports settle
        # What holding them costs while nothing happens: the daemon's sampler and watch, the agents' timers.
        window = min(10.0, max(2.0, self.a.sustain / 6))
        cpu0, serve0 = host_cpu_ms(), _proc_cpu_ms(self.srv.proc.pid)
        time.sleep(window)
        idle_cpu = {"window_s": window, "host_pct_of_a_core": (host_cpu_ms() - cpu0) / window / 10,
                    "serve_pct_of_a_core": (_proc_cpu_ms(self.srv.proc.pid) - serve0) / window / 10}
        per, kernels = [], []
        for sb in sbs:
            procs = Path(f"/sys/fs/cgroup/pids/sandboxd/{sb.id}/cgroup.procs")
            pids = [int(p) for p in procs.read_text().split()] if procs.exists() else []
            agent = [p for p in pids if b"ipykernel" not in _cmdline(p)]
            per.append(pss_kib(agent) / 1024)
            kernels.append(pss_kib([p for p in pids if p not in agent]) / 1024)
        used_mib = (before - meminfo()) / 1024
        with ThreadPoolExecutor(4) as ex:
            vanished = sum(ex.map(_kill_quietly, sbs))
        total_mib = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) / 1024
        per_host = used_mib / max(len(sbs), 1)
        return {"count": len(sbs), "vanished_before_kill": vanished, "pss_agent_init_mib": per, "idle_cpu": idle_cpu,
                "pss_kernel_mib": kernels,
                "host_mem_used_mib": used_mib, "host_mib_per_sandbox": per_host,
                "extrapolated_max_by_pss": int(total_mib * 0.9 / max(pct(per, .5) or 1, 0.1)),
                "extrapolated_max_by_host_use": int(total_mib * 0.9 / max(per_host, 0.1))}

    def sustained(self) -> dict:
        self.set_pool(self.a.pool)
        hits0, misses0 = self.pool()["hits"], self.pool()["misses"]
        stop = time.monotonic() + self.a.sustain
        ok, errors, lock = [0], [], threading.Lock()

        def worker():
            while time.monotonic() < stop:
                try:
                    sb = self.sdk()
                    sb.commands.run("true")
                    sb.kill()
                    sb.close()
                    with lock:
                        ok[0] += 1
                except Exception as exc:  # counted and reported: the figure is "with no errors"
                    with lock:
                        errors.append(repr(exc)[:200])

        t, cpu0, serve0, own0 = time.perf_counter(), host_cpu_ms(), _proc_cpu_ms(self.srv.proc.pid), _own_cpu_ms()
        threads = [threading.Thread(target=worker) for _ in range(self.a.workers)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        secs, cpu = time.perf_counter() - t, host_cpu_ms() - cpu0
        serve, own, n = _proc_cpu_ms(self.srv.proc.pid) - serve0, _own_cpu_ms() - own0, max(ok[0], 1)
        p = self.pool()
        # Everything on the host (client, control plane, runtime, sandboxes, pool refills) per create: what
        # bounds the rate on a CPU-bound box is this over the number of cores.
        return {"seconds": secs, "created": ok[0], "per_second": ok[0] / secs, "errors": len(errors),
                "host_cpu_ms_per_create": round(cpu / n, 1),
                # Where it goes: the daemon's own threads (not its children: crun, sandboxes), this client.
                "serve_cpu_ms_per_create": round(serve / n, 1), "client_cpu_ms_per_create": round(own / n, 1),
                "rest_cpu_ms_per_create": round((cpu - serve - own) / n, 1),
                "error_samples": errors[:5], "pool_hits": p["hits"] - hits0, "pool_misses": p["misses"] - misses0}

    # ---- the whole run -------------------------------------------------------------------------------
    def run(self) -> dict:
        import httpx

        from sandboxd.config import Settings
        from sandboxd.templates.store import TemplateStore

        rootfs = TemplateStore(Settings(templates_path=Path(TEMPLATES))).get(self.a.template).layers[-1]
        res: dict = {"args": vars(self.a), "host": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                                                    "load": os.getloadavg()}}
        print("floors: bare crun ...", flush=True)
        res["crun"] = floors.BareCrun(rootfs).measure(self.a.runs, min(self.a.idle, 20))
        if not self.a.no_podman:
            print("floors: podman ...", flush=True)
            res["podman"] = floors.podman(rootfs, self.a.runs)
            tti_rootfs = TemplateStore(Settings(templates_path=Path(TEMPLATES))).get(TTI_TEMPLATE).layers[-1]
            res["podman_tti"] = floors.podman(tti_rootfs, self.a.runs, first=("node", "-v"))
        print("floors: jupyter over zmq ...", flush=True)
        res["zmq"] = floors.jupyter_zmq(self.a.runs)
        self.srv.start()
        self.api = httpx.Client(base_url=self.srv.base, headers={"X-API-Key": self.srv.key}, timeout=120)
        try:
            print("sandboxd: create -> first command (pool hit) ...", flush=True)
            res["hit"], kills_hit, res["hits_counted"] = self.create_first_command(pooled=True)
            print("sandboxd: create -> first command (cold) ...", flush=True)
            res["cold"], kills_cold, _ = self.create_first_command(pooled=False)
            res["agent_cpu_cold"] = self.agent_cpu
            res["kill"] = kills_hit + kills_cold
            print("sandboxd: live sandbox rows ...", flush=True)
            res["live"] = self.live_rows()
            e2b = E2BRows(self.srv, self.data, self.a.runs, self.a.at_once)
            print(f"sandboxd: E2B SDK time to interactive, sequential and {self.a.at_once} at once ...", flush=True)
            res["tti"] = e2b.tti()
            print("sandboxd: E2B SDK fork and snapshot ...", flush=True)
            res["fork"] = e2b.fork_and_snapshot()
            self.set_pool(self.a.pool)
            print(f"sandboxd: {self.a.idle} idle sandboxes ...", flush=True)
            res["idle"] = self.idle_memory()
            print(f"sandboxd: sustained creates for {self.a.sustain:.0f} s ...", flush=True)
            res["sustained"] = self.sustained()
            res["pool_report"] = self.pool()
        finally:
            try:
                self.set_pool(0)
            finally:
                self.api.close()
                self.srv.close()
                log = self.data / "serve.log"
                if log.exists():  # kept for the warnings (sandboxes that died on their own, failed fills)
                    (HERE / "results").mkdir(exist_ok=True)
                    shutil.copy(log, HERE / "results" / "last-serve.log")
                shutil.rmtree(self.data, ignore_errors=True)
        return res


def _kill_quietly(sb) -> int:
    """Kill; 1 when the sandbox was already gone (died on its own), which the figures report."""
    from sandboxd.sdk import NotFoundError

    try:
        sb.kill()
        return 0
    except NotFoundError:
        return 1


def _agent_cpu_ms(sandbox_id: str) -> list[float]:
    """On-CPU time (all threads, schedstat ns) of the sandbox's agent process so far: its whole start,
    imports and serving until now (here: just after the first command answered)."""
    procs = Path(f"/sys/fs/cgroup/pids/sandboxd/{sandbox_id}/cgroup.procs")
    if not procs.exists():
        procs = Path(f"/sys/fs/cgroup/sandboxd/{sandbox_id}/cgroup.procs")
    try:
        pids = [int(p) for p in procs.read_text().split()]
    except OSError:
        return []
    return [cpu_ms(p) for p in pids if b"sandboxd.agent" in _cmdline(p) and b"tini" not in _cmdline(p)][:1]



def _proc_cpu_ms(pid: int) -> float:
    """User + system CPU of one process (all its threads, none of its children), in ms."""
    f = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(f[11]) + int(f[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def _own_cpu_ms() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return (r.ru_utime + r.ru_stime) * 1000


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def table(res: dict) -> list[dict]:
    c, pm, live, idle, sus = res["crun"], res.get("podman") or {}, res["live"], res["idle"], res["sustained"]
    fork = res["fork"]
    direct_p50 = pct(live["direct"], .5)
    overhead = [g - d for g, d in zip(live["gateway"], live["direct"])]
    rows = [
        ("create → first commands.run('true'), pool hit", "p50 ≤ 25, p99 ≤ 80 ms", res["hit"], c["resume_exec"],
         "crun resume + exec", pm.get("cold")),
        ("the same, cold (no pool)", "p50 ≤ 150 ms", res["cold"], c["cold"], "crun run + exec", pm.get("cold")),
        ("commands.run('true') round trip", "p50 ≤ 5 ms", live["exec"], c["exec"], "crun exec true", pm.get("exec")),
        ("run_code('x = x + 1'), warm kernel", "p50 ≤ 10 ms", live["run_code"], res.get("zmq"), "jupyter execute/ZMQ",
         None),
        ("pause through the API", "p50 ≤ 10 ms", live["pause"], c["pause"], "crun pause", pm.get("pause")),
        ("resume through the API", "p50 ≤ 10 ms", live["resume"], c["resume"], "crun resume", pm.get("resume")),
        ("kill through the API", "p50 ≤ 30 ms", res["kill"], c["delete"], "crun delete --force", pm.get("delete")),
        ("gateway overhead over agent socket", "p50 ≤ 1 ms", overhead, live["direct"], "direct socket request", None),
        ("E2B SDK create → commands.run('node -v')", "p50 ≤ 440 ms", res["tti"]["sequential"],
         None, "-", (res.get("podman_tti") or {}).get("cold")),
        (f"the same, {len(res['tti']['at_once'])} at once", "-", res["tti"]["at_once"], None, "-", None),
        (f"E2B fork of a sandbox with {WRITTEN_MIB} MiB written, 1 copy", "p50 ≤ 150 ms", fork["fork_one"],
         fork["cp_floor"], f"cp -a {WRITTEN_MIB} MiB", None),
        ("the same, 10 copies in one call", "≤ 1000 ms", fork["fork_ten"], fork["cp_floor"],
         f"cp -a {WRITTEN_MIB} MiB", None),
        ("E2B create_snapshot of that sandbox", "p50 ≤ 300 ms", fork["snapshot"], fork["cp_floor"],
         f"cp -a {WRITTEN_MIB} MiB", None),
        ("create from the snapshot → first command", "≤ 1.5× cold", fork["from_snapshot"], fork["cold"],
         "cold create → first command", None),
    ]
    out = [{"figure": f, "target": t, "sandboxd_ms": dist(x), "floor": fl_name, "floor_ms": dist(fl),
            "podman_ms": dist(p)} for f, t, x, fl, fl_name, p in rows]
    out.append({"figure": "agent CPU, exec → first command answered (cold)", "target": "≤ 100 ms",
                "sandboxd_ms": dist(res.get("agent_cpu_cold")), "floor": "-", "floor_ms": None, "podman_ms": None})
    out.append({"figure": "idle memory per sandbox (agent + init, PSS)", "target": "≤ 20 MiB",
                "sandboxd_mib": dist(idle["pss_agent_init_mib"]), "floor": "sleeping process, bare container",
                "floor_mib": dist([k / 1024 for k in c["idle_pss_kib"]])})
    out.append({"figure": "concurrent idle sandboxes on this host", "target": "≥ 500",
                "measured": idle["count"], "extrapolated_by_pss": idle["extrapolated_max_by_pss"],
                "extrapolated_by_host_memory": idle["extrapolated_max_by_host_use"],
                "idle_cpu_pct_of_a_core_serve_host": [round(idle["idle_cpu"]["serve_pct_of_a_core"], 1),
                                                      round(idle["idle_cpu"]["host_pct_of_a_core"], 1)]})
    out.append({"figure": f"sustained creates/s (pool warm, {sus['seconds']:.0f} s)", "target": "≥ 30/s, no errors",
                "measured": round(sus["per_second"], 2), "errors": sus["errors"], "pool_hits": sus["pool_hits"],
                "host_cpu_ms_per_create": sus["host_cpu_ms_per_create"],
                "of_which_serve_client_rest": [sus.get("serve_cpu_ms_per_create"), sus.get("client_cpu_ms_per_create"),
                                               sus.get("rest_cpu_ms_per_create")],
                "pool_misses": sus["pool_misses"]})
    out[0]["hits_counted"] = res["hits_counted"]
    next(r for r in out if r["figure"].startswith("gateway overhead"))["direct_p50_ms"] = direct_p50
    return out


def show(rows: list[dict]) -> None:
    f = lambda d: "-" if not d else f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"
    print(f"\n{'figure':<46} {'target':<20} {'sandboxd p50/p95/p99':<24} {'floor p50/p95/p99':<24} "
          f"{'podman p50/p95/p99':<24} floor is")
    for r in rows:
        if "sandboxd_ms" in r:
            print(f"{r['figure']:<46} {r['target']:<20} {f(r['sandboxd_ms']):<24} {f(r['floor_ms']):<24} "
                  f"{f(r['podman_ms']):<24} {r['floor']}")
        elif "sandboxd_mib" in r:
            print(f"{r['figure']:<46} {r['target']:<20} {f(r['sandboxd_mib']) + ' MiB':<24} "
                  f"{f(r['floor_mib']) + ' MiB':<24} {'-':<24} {r['floor']}")
        else:
            rest = {k: v for k, v in r.items() if k not in ("figure", "target")}
            print(f"{r['figure']:<46} {r['target']:<20} {json.dumps(rest)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--idle", type=int, default=200)
    ap.add_argument("--sustain", type=float, default=60.0)
    ap.add_argument("--pool", type=int, default=8)
    ap.add_argument("--workers", type=int, default=8, help="clients creating at once in the sustained row")
    ap.add_argument("--no-zygote", action="store_true", help="agents exec'd, not forked (the A/B baseline)")
    ap.add_argument("--template", default="base")
    ap.add_argument("--at-once", type=int, default=100, help="E2B SDK creates at once in the time-to-interactive row")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-podman", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.runs, a.idle, a.sustain, a.at_once = min(a.runs, 12), min(a.idle, 20), min(a.sustain, 10.0), min(a.at_once, 10)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    os.environ.setdefault("no_proxy", "127.0.0.1,localhost")
    res = Bench(a).run()
    rows = table(res)
    show(rows)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    path = out / f"run-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps({"rows": rows, "raw": res}, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

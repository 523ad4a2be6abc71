"""The stateful Python kernel: an ipykernel launched from the USER's python, driven with jupyter_client.

Started on the first Python execution (or by a pre-warm request), never at agent boot: jupyter_client
and pyzmq are imported here, lazily. The kernel talks over zmq `ipc` sockets in a private directory,
so it works in a sandbox whose network namespace has no loopback configured.
"""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Awaitable, Callable

from .server import now_iso
from .users import User

if TYPE_CHECKING:
    from jupyter_client.asynchronous import AsyncKernelClient

OUTPUT_CAP = 16 * 1024 * 1024
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

# Runs once in a new kernel: the formatters both dialects read (HopX's `dataframe`; E2B's `data` for a
# DataFrame, `chart` for a matplotlib figure through E2B's own `e2b_charts` extractor, `json` for a
# displayed dict or list, as E2B's code interpreter template registers them), and a helper the agent
# calls before each execution to sync env vars and the working directory. pandas and matplotlib are only
# looked at when the user imported them, so a plain `1 + 1` imports nothing.
SETUP = r'''
def __sandboxd_setup():
    import os, json, sys
    ip = get_ipython()
    from IPython.core.formatters import BaseFormatter, JSONFormatter
    from traitlets import ObjectName, Unicode
    def register(f):
        ip.display_formatter.formatters[f.format_type] = f
        if f.format_type not in ip.display_formatter.active_types:
            ip.display_formatter.active_types.append(f.format_type)
    class DataFrameFormatter(BaseFormatter):
        format_type = Unicode("application/vnd.dataframe+json")
        print_method = ObjectName("_repr_dataframe_")
        _return_type = (dict, list)
    f = DataFrameFormatter(parent=ip.display_formatter)
    register(f)
    def df_json(df):
        return json.loads(df.head(1000).to_json(orient="split", date_format="iso", default_handler=str))
    for module in ("pandas.core.frame", "pandas"):  # pandas >= 3 reports DataFrame.__module__ == "pandas"
        f.for_type_by_name(module, "DataFrame", df_json)
    class E2BData(BaseFormatter):
        format_type = Unicode("e2b/data")
        print_method = ObjectName("_repr_e2b_data_")
        _return_type = (dict, str)
        def __call__(self, obj):
            pd = sys.modules.get("pandas")
            if pd is None or not isinstance(obj, pd.DataFrame):
                return super().__call__(obj)
            return {k: [v.isoformat() if isinstance(v, pd.Timestamp) else v for v in col]
                    for k, col in obj.to_dict(orient="list").items()}
    class E2BChart(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict, str)
        def __call__(self, obj):
            if "matplotlib" not in sys.modules:
                return super().__call__(obj)
            from matplotlib.figure import Figure
            if not isinstance(obj, Figure):
                return super().__call__(obj)
            try:
                from e2b_charts import chart_figure_to_dict
            except ImportError:  # a template without the extractor still gets its PNG
                return None
            try:
                return chart_figure_to_dict(obj)
            except Exception:  # a figure the extractor does not understand: the PNG alone, like E2B
                return {}
    class E2BJSON(JSONFormatter):
        def __call__(self, obj):
            if isinstance(obj, (list, dict)):
                try:
                    return json.loads(json.dumps(obj, default=_plain)), {"expanded": True}
                except (TypeError, ValueError):
                    pass
            return super().__call__(obj)
    def _plain(o):  # numpy arrays and scalars, as E2B's orjson option does
        if hasattr(o, "tolist"):
            return o.tolist()
        raise TypeError(type(o).__name__)
    for cls in (E2BData, E2BChart, E2BJSON):
        register(cls(parent=ip.display_formatter))
    saved = {}  # what each variable a request set was before it (None: unset), given back when it is gone
    def sync(env, cwd):
        for k in [k for k in saved if k not in env]:
            old = saved.pop(k)
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
        for k, v in env.items():
            if k not in saved:
                saved[k] = os.environ.get(k)
            os.environ[k] = v
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
    # Pillow as E2B's template sets it up, once the user imports it: no viewer program opens a window on a
    # headless sandbox (show() falls through to Pillow's IPython viewer: the image is a result), and saving
    # an image to a path shows it too.
    def pil_image(mod):
        original = mod.Image.save
        def save(self, fp, format=None, **params):
            if isinstance(fp, str):
                from IPython.display import display
                display(self)
            return original(self, fp, format, **params)
        mod.Image.save = save
    def pil_show(mod):
        mod.UnixViewer.show_file = lambda self, path, **options: 0
    hooks = {"PIL.Image": pil_image, "PIL.ImageShow": pil_show}
    import importlib.abc
    class AfterImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            hook = hooks.get(name)
            for finder in sys.meta_path if hook else ():
                spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None and spec.loader is not None:
                    run = spec.loader.exec_module
                    def exec_module(module, run=run, hook=hook):
                        run(module)
                        hook(module)
                    spec.loader.exec_module = exec_module
                    return spec
            return None
    sys.meta_path.insert(0, AfterImport())
    for name, hook in hooks.items():
        if name in sys.modules:
            hook(sys.modules[name])
    return sync
__sandboxd_sync = __sandboxd_setup()
del __sandboxd_setup
'''

OnText = Callable[[str, str], Awaitable[None]] | None  # (stream name, text)


@dataclass
class KernelResult:
    stdout: str = ""
    stderr: str = ""
    success: bool = True
    error: str | None = None
    timed_out: bool = False
    restarted: bool = False
    rich: dict = field(default_factory=dict)  # contract top-level keys: png, html, json, dataframe, result...
    outputs: list = field(default_factory=list)  # every display output, in order
    execution_count: int | None = None


class KernelUnavailable(Exception):
    """The user's python has no ipykernel: callers fall back to a one-shot interpreter."""


# bash_kernel's own `__main__`, but for pexpect's 50 ms sleep before every line it sends to bash: the kernel
# sends its set-up line by line (2 s of sleeps before the first cell) and two lines per cell (100 ms each).
# Its purpose, not racing the child's echo being turned off, does not apply: bash_kernel spawns with echo off.
BASH_KERNEL_MAIN = '''
import pexpect.spawnbase
_init = pexpect.spawnbase.SpawnBase.__init__
def _no_send_delay(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.delaybeforesend = None
pexpect.spawnbase.SpawnBase.__init__ = _no_send_delay
from ipykernel.kernelapp import IPKernelApp
from bash_kernel.kernel import BashKernel
IPKernelApp.launch_instance(kernel_class=BashKernel)
'''


def launch_argv(language: str, python: str | None, conn_file: str) -> list[str]:
    """The kernel process of a language, as E2B's code interpreter runs them: ipykernel; bash_kernel (an
    interactive bash on a pty) from the user's python; IRkernel from the template's R."""
    if language == "r":
        return ["R", "--slave", "--no-save", "--no-restore", "-e", "IRkernel::main()", "--args", conn_file]
    assert python is not None  # only R's kernel is started without one (the code interpreter checks)
    # parent_handle: an ipykernel exits by itself if the agent dies (it would be reparented)
    parent = f"--IPKernelApp.parent_handle={os.getpid()}"
    if language == "python":
        return [python, "-m", "ipykernel_launcher", "-f", conn_file, "--HistoryManager.enabled=False", parent]
    if language == "bash":
        return [python, "-c", BASH_KERNEL_MAIN, "-f", conn_file, parent]
    raise ValueError(f"no kernel for {language!r}")


class Kernel:
    def __init__(self, language: str = "python") -> None:
        self.language = language
        h = os.urandom(16).hex()
        self.kernel_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        self.proc: subprocess.Popen | None = None
        self.client: AsyncKernelClient | None = None
        self.dir: str | None = None
        self._log: IO[bytes] | None = None
        self.lock = asyncio.Lock()
        self.state = "starting"
        self.last_activity = now_iso()
        self.started_at = time.time()
        self.executions = 0
        self.python: str | None = None
        self.start_env: dict[str, str] = {}  # the environment it was started with (see KernelManager.take_unused)
        # What the owner last synced into it (env vars, cwd), to skip a round trip: KernelManager's sync
        # cell, the code interpreter's env vars.
        self.synced: str | dict[str, str] | None = None
        self.interrupted: str | None = None  # a cell interrupted when its client left, maybe still ending
        self.user: User | None = None  # whom it runs as (None: the agent's own user)

    async def start(self, python: str | None, env: dict[str, str], cwd: str | None, user: User | None = None) -> None:
        import tempfile

        from jupyter_client.asynchronous import AsyncKernelClient
        from jupyter_client.connect import write_connection_file

        _remove_stale_dirs()
        self.python, self.start_env = python, dict(env)
        self.user = user
        self.dir = tempfile.mkdtemp(prefix=f"sandboxd-kernel-{os.getpid()}-")
        conn_file, info = write_connection_file(os.path.join(self.dir, "kernel.json"), transport="ipc",
                                                ip=os.path.join(self.dir, "k"), key=os.urandom(16).hex().encode())
        self._log = open(os.path.join(self.dir, "kernel.log"), "wb")
        kenv = {**env, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
                "PYDEVD_DISABLE_FILE_VALIDATION": "1", "JPY_PARENT_PID": str(os.getpid())}
        ids: dict = {}
        if user is not None:  # the kernel makes its sockets in its dir and reads its connection file
            for path in (self.dir, conn_file):
                os.chown(path, user.uid, user.gid)
            kenv.update(HOME=user.home, USER=user.name, LOGNAME=user.name)
            ids = {"user": user.uid, "group": user.gid, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(
                launch_argv(self.language, python, conn_file), env=kenv,
                cwd=cwd if cwd and os.path.isdir(cwd) else None, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log, **ids)
        except FileNotFoundError as e:  # no R in this template
            await self.shutdown()
            raise KernelUnavailable(f"{e.filename} is not installed") from None
        kc = AsyncKernelClient()
        kc.load_connection_info(info)
        kc.start_channels()
        self.client = kc
        try:
            await self._wait_ready(kc, 60)
        except Exception:
            with open(os.path.join(self.dir, "kernel.log"), "rb") as f:
                err = f.read().decode(errors="replace")[-2000:]
            await self.shutdown()
            if "No module named" in err or "there is no package called" in err:  # python / R
                raise KernelUnavailable(err.strip()) from None
            raise RuntimeError(f"the Python kernel did not start: {err.strip() or 'timeout'}") from None
        self.state = "idle"
        if self.language == "python":
            await self._execute_raw(SETUP, timeout=30)

    async def _wait_ready(self, kc, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.alive():
                raise RuntimeError("kernel exited")
            kc.kernel_info()
            try:
                while True:
                    msg = await kc.get_shell_msg(timeout=1)
                    if msg["msg_type"] == "kernel_info_reply":
                        break
                # drain the iopub status messages of the probe
                while True:
                    try:
                        await kc.get_iopub_msg(timeout=0.2)
                    except Exception:
                        return
            except Exception:
                if time.monotonic() > deadline:
                    raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def started_client(self) -> AsyncKernelClient:
        """The client of a started kernel; one shut down under its caller (its context deleted) has none."""
        if self.client is None:
            raise RuntimeError(f"the {self.language} kernel was shut down")
        return self.client

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    async def settle(self, grace: float = 5.0) -> None:
        """Let the cell interrupted when its client left end before the next is sent: a kernel aborts the
        cells queued behind an interrupted one (IRkernel always, ipykernel after an error), saying so on
        the shell channel only, so a cell sent too early would never run nor end."""
        deadline = time.monotonic() + grace
        kc = self.client
        while kc is not None and self.interrupted and time.monotonic() < deadline and self.alive():
            try:
                msg = await kc.get_iopub_msg(timeout=max(0.05, deadline - time.monotonic()))
            except Exception:  # queue.Empty on timeout
                break
            if (msg["parent_header"].get("msg_id") == self.interrupted and msg["msg_type"] == "status"
                    and msg["content"].get("execution_state") == "idle"):
                break
        self.interrupted = None

    async def shutdown(self) -> None:
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:
                pass
            self.client = None
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        if self._log:
            self._log.close()
            self._log = None
        if self.dir:
            import shutil

            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.state = "dead"

    async def _execute_raw(self, code: str, timeout: float) -> KernelResult:
        return await self.execute(code, timeout, silent=True)

    async def execute(self, code: str, timeout: float, on_text: OnText = None, *, silent: bool = False
                      ) -> KernelResult:
        kc = self.started_client()
        res = KernelResult()
        out: list[str] = []
        err: list[str] = []
        out_size = 0  # a print loop must not grow the agent without bound: keep the first OUTPUT_CAP chars
        msg_id = kc.execute(code, silent=silent, store_history=not silent, allow_stdin=False)
        self.state, self.last_activity = "busy", now_iso()
        deadline = time.monotonic() + timeout
        interrupted_at = None
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if interrupted_at is None:
                    res.timed_out = True
                    self.interrupt()
                    interrupted_at = time.monotonic()
                    deadline = interrupted_at + 5  # give the KeyboardInterrupt a moment to unwind
                    continue
                res.restarted = True  # the interrupt did not bring it back: caller restarts the kernel
                break
            try:
                msg = await kc.get_iopub_msg(timeout=min(remaining, 1.0))
            except Exception:
                if not self.alive():
                    res.success, res.error, res.restarted = False, "the Python kernel died", True
                    err.append("The Python kernel died (out of memory?); it will be restarted.\n")
                    break
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                text = c.get("text", "")
                kept = out_size + len(text)
                if kept <= OUTPUT_CAP:
                    (out if c.get("name") == "stdout" else err).append(text)
                elif out_size <= OUTPUT_CAP:
                    err.append("\n[output truncated]\n")
                out_size = kept
                if on_text:
                    await on_text(c.get("name", "stdout"), c.get("text", ""))
            elif t in ("display_data", "execute_result", "update_display_data"):
                _collect_rich(res, c.get("data", {}), t == "execute_result")
                if t == "execute_result":
                    res.execution_count = c.get("execution_count")
            elif t == "error":
                tb = ANSI.sub("", "\n".join(c.get("traceback", [])))
                res.success = False
                if res.timed_out and c.get("ename") == "KeyboardInterrupt":
                    continue
                res.error = f"{c.get('ename')}: {c.get('evalue')}"
                err.append(tb + "\n")
                if on_text:
                    await on_text("stderr", tb + "\n")
            elif t == "status" and c.get("execution_state") == "idle":
                idle = True
        res.stdout, res.stderr = "".join(out), "".join(err)
        if res.timed_out:
            res.success = False
            res.error = f"Execution timed out after {timeout:g}s (kernel interrupted, state kept)"
            if res.restarted:
                res.error = f"Execution timed out after {timeout:g}s (kernel restarted, state lost)"
            res.stderr += res.error + "\n"
        self.state, self.last_activity = "idle", now_iso()
        if not silent:
            self.executions += 1
        return res

    def session(self) -> dict:
        return {"kernel_id": self.kernel_id, "id": self.kernel_id, "name": "python3",
                "execution_state": self.state if self.alive() else "dead", "connections": 1,
                "last_activity": self.last_activity, "pid": self.proc.pid if self.proc else None,
                "execution_count": self.executions}


def _uid(user: User | None) -> int | None:
    return None if user is None else user.uid


def _remove_stale_dirs() -> None:
    """Kernel dirs of agents that were killed without cleaning up (SIGKILL), found by their pid."""
    import glob
    import shutil
    import tempfile

    for d in glob.glob(os.path.join(tempfile.gettempdir(), "sandboxd-kernel-*-*")):
        pid = os.path.basename(d).split("-")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(d, ignore_errors=True)


def _collect_rich(res: KernelResult, data: dict, is_result: bool) -> None:
    keys = {"image/png": "png", "text/html": "html", "application/json": "json",
            "application/vnd.dataframe+json": "dataframe", "image/svg+xml": "svg", "text/markdown": "markdown",
            "image/jpeg": "jpeg", "text/latex": "latex"}
    for mime, key in keys.items():
        if mime in data:
            value = data[mime]
            if key in ("png", "jpeg") and isinstance(value, str):
                value = value.replace("\n", "")
            res.rich.setdefault(key, value)  # the first of each kind is the contract's top-level key
    if is_result and "text/plain" in data:
        res.rich["result"] = data["text/plain"]
    res.outputs.append({"type": "execute_result" if is_result else "display_data",
                        "data": {k: (v.replace("\n", "") if k.startswith("image/") and isinstance(v, str) else v)
                                 for k, v in data.items() if not k.startswith("e2b/")}})  # E2B's own kinds


class KernelManager:
    """Owns at most one kernel (one notebook per sandbox, like HopX); restarts it when it dies."""

    def __init__(self) -> None:
        self.kernel: Kernel | None = None
        self._starting = asyncio.Lock()

    async def get(self, python: str, env: dict[str, str], cwd: str | None, user: User | None = None) -> Kernel:
        """The kernel, running as user (None: the agent's own); started (again) when it is not."""
        async with self._starting:
            if self.kernel is None or not self.kernel.alive() or _uid(self.kernel.user) != _uid(user):
                if self.kernel is not None:
                    await self.kernel.shutdown()
                k = Kernel()
                await k.start(python, env, cwd, user)
                self.kernel = k
            return self.kernel

    async def execute(self, python: str, code: str, *, env: dict[str, str], cwd: str | None, timeout: float,
                      on_text: OnText = None, user: User | None = None) -> KernelResult:
        kernel = await self.get(python, env, cwd, user)
        async with kernel.lock:
            sync = f"__sandboxd_sync({env!r}, {cwd!r})"
            if kernel.synced != sync:  # a second kernel round trip only when env/cwd changed
                await kernel.execute(sync, 30, silent=True)
                kernel.synced = sync
            try:
                res = await kernel.execute(code, timeout, on_text)
            except BaseException:
                kernel.interrupt()  # cancelled (client went away): stop the code, keep the state
                kernel.state = "idle"
                raise
            if res.restarted:
                await kernel.shutdown()
                self.kernel = None
        return res

    def take_unused(self, python: str) -> Kernel | None:
        """Hand over the kernel if no user code ever ran in it (a warm pool's pre-started one), so an E2B
        context starts in milliseconds instead of paying the ~1 s kernel start again."""
        k = self.kernel
        if (k is None or not k.alive() or k.executions or k.lock.locked() or self._starting.locked()
                or k.python != python or k.user is not None):
            return None
        self.kernel = None
        return k

    def sessions(self) -> list[dict]:
        return [self.kernel.session()] if self.kernel and self.kernel.alive() else []

    async def shutdown(self) -> None:
        if self.kernel:
            await self.kernel.shutdown()
            self.kernel = None

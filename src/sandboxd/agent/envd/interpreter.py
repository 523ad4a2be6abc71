"""The E2B code interpreter (port 49999 semantics): `POST /execute` streams NDJSON, `/contexts` CRUD.

Python contexts are Jupyter kernels started with the agent's kernel launcher (agent/kernel.py); this
module reads the kernel's iopub messages itself because E2B streams every output as it happens
(results with their MIME bundle, errors split into name/value/traceback, the execution count).
bash contexts are bash_kernel kernels (what E2B runs), driven the same way; where the template has no
bash_kernel, each bash cell runs one-shot. JavaScript and TypeScript contexts keep their state in one Node
process each (jsrepl.py), Java contexts in one JVM each (javarepl.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, AsyncGenerator, AsyncIterator, Callable

from sandboxd.errors import SandboxdError

from ..env import find_user_python
from ..kernel import Kernel, KernelManager, KernelUnavailable
from ..server import Request, Response, StreamResponse
from . import users

if TYPE_CHECKING:
    from .repl import Repl

MIME_KEYS = {
    "text/plain": "text", "text/html": "html", "text/markdown": "markdown", "image/svg+xml": "svg",
    "image/png": "png", "image/jpeg": "jpeg", "application/pdf": "pdf", "text/latex": "latex",
    "application/json": "json", "application/javascript": "javascript", "e2b/data": "data", "e2b/chart": "chart",
}
HOPX_DATAFRAME = "application/vnd.dataframe+json"  # the kernel's kind for the HopX dialect, not E2B's
LANGUAGES = {"python": "python", "python3": "python", "py": "python", "bash": "bash", "sh": "bash",
             "shell": "bash", "javascript": "js", "js": "js", "node": "js", "typescript": "ts", "ts": "ts",
             "r": "r", "java": "java"}
CONTEXT_LANGUAGE = {"js": "javascript", "ts": "typescript"}  # the name a context reports, as E2B's do
DEFAULT_TIMEOUT = 3600.0
BASH_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def line(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def result_from_bundle(data: dict, is_main: bool) -> dict:
    out: dict = {"type": "result", "is_main_result": is_main}
    extra = {}
    for mime, value in data.items():
        if mime == HOPX_DATAFRAME:
            continue
        key = MIME_KEYS.get(mime)
        if key is None:
            extra[mime] = value
            continue
        if key in ("png", "jpeg") and isinstance(value, str):
            value = value.replace("\n", "")
        if key == "text" and isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] in "'\"":
            value = value[1:-1]  # a string's repr in any language: E2B's clients read the string itself
        out[key] = value
    if extra:
        out["extra"] = extra
    return out


DEFAULT_CONTEXTS = ("python", "javascript")


class Context:
    def __init__(self, cid: str, language: str, cwd: str):
        self.id, self.language, self.cwd = cid, language, cwd
        self.kernel: Kernel | None = None
        self.repl: Repl | None = None  # of a javascript or java context, started on its first cell
        self.one_shot = False  # a bash context where bash_kernel is not installed: each cell on its own
        self.lock = asyncio.Lock()

    async def stop(self) -> None:
        kernel, self.kernel = self.kernel, None  # detached first: a running cell sees why its kernel went
        if kernel:
            await kernel.shutdown()
        if self.repl:
            await self.repl.shutdown()
            self.repl = None

    def wire(self) -> dict:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}


class Interpreter:
    def __init__(self, base_env: Callable[[dict | None], dict] | None = None,
                 warm_kernels: Callable[[], KernelManager | None] | None = None):
        self.base_env = base_env
        self.warm_kernels = warm_kernels  # the agent's own kernel manager, if it was ever built
        self.contexts: dict[str, Context] = {}
        self.defaults: dict[str, str] = {}  # language -> id of its default context

    def _env(self, user: users.User) -> dict[str, str]:
        env = dict(self.base_env(None)) if self.base_env else {
            k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_AGENT_")}
        env.setdefault("HOME", user.home)
        return env

    def _cwd(self, cwd: str | None, user: users.User) -> str:
        path = users.expand(cwd, user, default=users.default_cwd(user))
        return path if os.path.isdir(path) else "/"

    # ---- contexts -----------------------------------------------------------------------------------

    def create(self, language: str | None, cwd: str | None, user: users.User) -> Context:
        lang = LANGUAGES.get((language or "python").lower())
        if lang is None:
            raise ValueError(f"unsupported language: {language!r}")
        ctx = Context(str(uuid.uuid4()), CONTEXT_LANGUAGE.get(lang, lang), self._cwd(cwd, user))
        self.contexts[ctx.id] = ctx
        return ctx

    def default(self, language: str | None, user: users.User) -> Context:
        lang = LANGUAGES.get((language or "python").lower())
        if lang is None:
            raise ValueError(f"unsupported language: {language!r}")
        cid = self.defaults.get(lang)
        if cid in self.contexts:
            return self.contexts[cid]
        ctx = self.create(lang, None, user)
        self.defaults[lang] = ctx.id
        return ctx

    def listed(self, user: users.User) -> list[Context]:
        """Every context, the defaults first: they are there from the start, as in E2B (their kernels start on
        a first cell); the contexts a caller made follow in the order it made them."""
        defaults = [self.default(language, user) for language in DEFAULT_CONTEXTS]
        return [*defaults, *(c for c in self.contexts.values() if c not in defaults)]

    async def remove(self, cid: str) -> bool:
        ctx = self.contexts.pop(cid, None)
        if ctx is None:
            return False
        await ctx.stop()
        return True

    async def restart(self, cid: str) -> bool:
        """A fresh kernel for the context, now: a cell it is running ends with ContextStopped (as when the
        context is deleted) instead of the restart waiting for it; the next cell starts the new kernel."""
        ctx = self.contexts.get(cid)
        if ctx is None:
            return False
        await ctx.stop()
        return True

    async def shutdown(self) -> None:
        for ctx in list(self.contexts.values()):
            await ctx.stop()

    # ---- execution -----------------------------------------------------------------------------------

    async def execute(self, ctx: Context, code: str, env_vars: dict | None, user: users.User
                      ) -> AsyncIterator[bytes]:
        if ctx.language in ("python", "r") or (ctx.language == "bash" and not ctx.one_shot):
            run = self._jupyter
        elif ctx.language in ("javascript", "typescript", "java"):
            run = self._repl
        else:
            run = self._bash
        async with ctx.lock:
            # Closed here, not whenever it is collected: a cell whose client went away is interrupted by the
            # runner's `finally`, which must happen before the next cell of the context takes the lock.
            async with contextlib.aclosing(run(ctx, code, env_vars or {}, user)) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def _kernel(self, ctx: Context, user: users.User) -> Kernel:
        if ctx.kernel is None or not ctx.kernel.alive():
            if ctx.kernel is not None:
                await ctx.kernel.shutdown()
            env = self._env(user)
            python = find_user_python(env)
            if python is None and ctx.language != "r":  # bash_kernel is a Python kernel too
                raise KernelUnavailable("no python found on PATH for the code interpreter")
            k = await self._adopt(python, env) if python is not None and ctx.language == "python" else None
            if k is None:
                k = Kernel(ctx.language)
                await k.start(python, env, ctx.cwd)
            ctx.kernel = k
            k.synced = None
        return ctx.kernel

    async def _adopt(self, python: str, env: dict[str, str]) -> Kernel | None:
        """The kernel a warm pool started before this sandbox was claimed, if no code ran in it yet: its
        environment is the pool's, so it is brought to this sandbox's before the first cell."""
        manager = self.warm_kernels() if self.warm_kernels else None
        k = manager.take_unused(python) if manager else None
        if k is not None:
            gone = sorted(set(k.start_env) - set(env))
            await k.execute(f"(lambda o: ([o.environ.pop(k, None) for k in {gone!r}], o.environ.update({env!r})))"
                            "(__import__('os'))", 30, silent=True)
        return k

    async def _jupyter(self, ctx: Context, code: str, env_vars: dict, user: users.User
                       ) -> AsyncGenerator[bytes, None]:
        try:
            kernel = await self._kernel(ctx, user)
        except Exception as e:  # noqa: BLE001 - reported in-band, like the upstream server
            if not (isinstance(e, KernelUnavailable) and ctx.language == "bash"):
                yield line({"type": "error", "name": type(e).__name__, "value": str(e), "traceback": str(e)})
                yield line({"type": "unexpected_end_of_execution"})
                return
            kernel = None
        if kernel is None:  # a template without bash_kernel: bash cells still run, without shared state
            ctx.one_shot = True
            async for chunk in self._bash(ctx, code, env_vars, user):
                yield chunk
            return
        env = {str(k): str(v) for k, v in env_vars.items()}
        if kernel.interrupted:
            await kernel.settle()
        # The context's cwd is entered once (a cell's own chdir then holds, as in E2B); the cell's env vars
        # replace the last cell's, a round trip paid only when they differ.
        last = kernel.synced if isinstance(kernel.synced, dict) else None  # KernelManager's is reset on adoption
        if last is None or last != env:
            cwd = ctx.cwd if last is None else None
            await kernel.execute(_sync_code(kernel.language, env, cwd, last or {}, self._env(user)), 30, silent=True)
            kernel.synced = env
        kc = kernel.started_client()
        # stop_on_error=False: an error in this cell does not abort a cell sent right after it.
        msg_id = kc.execute(code, silent=False, store_history=True, allow_stdin=False, stop_on_error=False)
        kernel.state = "busy"
        finished = False
        try:
            while True:
                try:
                    msg = await kc.get_iopub_msg(timeout=1.0)
                except asyncio.CancelledError:
                    # A DELETE or restart of the context closes the kernel's channels under this read, which
                    # cancels it; only a cancellation of this task itself (the client left) goes on up.
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    msg = None
                except Exception:
                    msg = None
                if msg is None:
                    if ctx.kernel is not kernel:
                        yield line({"type": "error", "name": "ContextStopped", "traceback": "",
                                    "value": "the context was deleted or restarted while this cell ran"})
                        yield line({"type": "unexpected_end_of_execution"})
                        finished = True
                        return
                    if not kernel.alive():
                        yield line({"type": "error", "name": "KernelDied",
                                    "value": f"the {kernel.language} kernel died (out of memory?) and will be restarted",
                                    "traceback": ""})
                        yield line({"type": "unexpected_end_of_execution"})
                        finished = True
                        return
                    # A line the SDK ignores: writing it is how a client that went away (its timeout)
                    # is noticed, so the cell is interrupted instead of holding the context.
                    yield line({"type": "keepalive"})
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                t, c = msg["msg_type"], msg["content"]
                ts = _timestamp(msg)
                if t == "stream":
                    yield line({"type": "stdout" if c.get("name") == "stdout" else "stderr",
                                "text": c.get("text", ""), "timestamp": ts})
                elif t in ("display_data", "execute_result"):
                    yield line(result_from_bundle(c.get("data", {}), t == "execute_result"))
                elif t == "error":
                    yield line({"type": "error", "name": c.get("ename", ""), "value": c.get("evalue", ""),
                                "traceback": "\n".join(c.get("traceback", []))})
                elif t == "execute_input":
                    yield line({"type": "number_of_executions", "execution_count": c.get("execution_count")})
                elif t == "status" and c.get("execution_state") == "idle":
                    yield line({"type": "end_of_execution"})
                    finished = True
                    return
        finally:
            kernel.state = "idle"
            if not finished:
                # The client went away (its timeout, or a disconnect): stop the cell, keep the state.
                kernel.interrupt()
                kernel.interrupted = msg_id

    async def _repl(self, ctx: Context, code: str, env_vars: dict, user: users.User
                    ) -> AsyncGenerator[bytes, None]:
        # The context's process, held for this cell: a DELETE of the context (no lock) drops it from `ctx`.
        repl = ctx.repl
        java = ctx.language == "java"
        name = "Java" if java else "JavaScript"
        if repl is None or not await repl.settle():
            if java:
                from .javarepl import JavaRepl

                repl, program = JavaRepl(), "java"
            else:
                from .jsrepl import JsRepl

                repl, program = JsRepl(), "node"
            ctx.repl = repl
            try:
                await repl.start(self._env(user), ctx.cwd, typescript=ctx.language == "typescript")
            except FileNotFoundError:
                ctx.repl = None
                yield line({"type": "error", "name": "RuntimeNotFound", "value": f"{program} is not installed",
                            "traceback": ""})
                yield line({"type": "end_of_execution"})
                return
        finished = False
        try:
            # The process's events are already in the wire's shape, but for a result's MIME bundle and the time.
            async for event in repl.execute(code, {str(k): str(v) for k, v in env_vars.items()}):
                kind = event["type"]
                if kind == "died":
                    yield line({"type": "error", "name": "ContextDied", "traceback": "",
                                "value": f"the {name} context's process ended; the next cell starts a new one"})
                    yield line({"type": "unexpected_end_of_execution"})
                    finished = True
                    return
                if kind == "display":
                    event = result_from_bundle(event.get("data") or {}, True)
                elif kind in ("stdout", "stderr"):
                    event["timestamp"] = now_iso()
                yield line(event)
            yield line({"type": "end_of_execution"})
            finished = True
        finally:
            if not finished:  # the client went away (its timeout): stop the cell, keep the context
                repl.interrupt()

    async def _bash(self, ctx: Context, code: str, env_vars: dict, user: users.User
                    ) -> AsyncGenerator[bytes, None]:
        argv = ["/bin/bash", "-c", code]
        env = {**self._env(user), **{str(k): str(v) for k, v in env_vars.items()}}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=ctx.cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except FileNotFoundError:
            yield line({"type": "error", "name": "RuntimeNotFound", "value": f"{argv[0]} is not installed",
                        "traceback": ""})
            yield line({"type": "end_of_execution"})
            return
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(stream, name):
            while True:
                chunk = await stream.read(65536)
                if not chunk:
                    break
                await queue.put((name, chunk.decode("utf-8", "replace")))
            await queue.put((name, None))

        tasks = [asyncio.create_task(pump(proc.stdout, "stdout")), asyncio.create_task(pump(proc.stderr, "stderr"))]
        open_streams = 2
        try:
            while open_streams:
                name, text = await queue.get()
                if text is None:
                    open_streams -= 1
                    continue
                yield line({"type": name, "text": text, "timestamp": now_iso()})
            code_ = await proc.wait()
            if code_ != 0:
                yield line({"type": "error", "name": "ExitError", "value": f"exit status {code_}", "traceback": ""})
            yield line({"type": "end_of_execution"})
        finally:
            if proc.returncode is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
            for t in tasks:
                t.cancel()


def _sync_code(language: str, env: dict[str, str], cwd: str | None, last: dict[str, str],
               base: dict[str, str]) -> str:
    """The silent cell that gives a kernel this cell's env vars and, once, its cwd. A variable the last cell set
    and this one does not goes back to its value in the sandbox's environment (`base`), or away."""
    if language == "python":
        return f"__sandboxd_sync({env!r}, {cwd!r})"
    gone = sorted(set(last) - set(env))
    back = {k: base[k] for k in gone if k in base}
    if language == "r":  # JSON string literals are R string literals
        unset = [json.dumps(k) for k in gone if k not in back]
        lines = [f"Sys.unsetenv(c({', '.join(unset)}))"] if unset else []
        if env or back:
            pairs = {**back, **env}
            lines.append(f"do.call(Sys.setenv, list({', '.join(f'{json.dumps(k)} = {json.dumps(v)}' for k, v in pairs.items())}))")
        if cwd:
            lines.append(f"setwd({json.dumps(cwd)})")
        return "\n".join(lines) or "invisible(NULL)"
    import shlex

    names = [k for k in gone if k not in back and BASH_NAME.fullmatch(k)]
    lines = [f"unset {' '.join(names)}"] if names else []
    lines += [f"export {k}={shlex.quote(v)}" for k, v in {**back, **env}.items() if BASH_NAME.fullmatch(k)]
    if cwd:
        lines.append(f"cd {shlex.quote(cwd)}")
    return "\n".join(lines) or ":"


def _timestamp(msg: dict) -> str:
    date = msg.get("header", {}).get("date")
    if isinstance(date, datetime):
        return date.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(date) if date else now_iso()


# ---- HTTP handlers (thin) -------------------------------------------------------------------------------

def _json(data, status: int = 200) -> Response:
    return Response(status, json.dumps(data).encode())


def _err(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message, "message": message, "code": status}).encode())


def _interp(req: Request) -> Interpreter:
    return req.app.services.envd.interpreter


async def execute(req: Request):
    interp = _interp(req)
    try:
        body = json.loads(await req.body() or b"{}")
    except ValueError:
        return _err(400, "invalid JSON body")
    code = body.get("code")
    if not isinstance(code, str):
        return _err(400, "code (string) is required")
    if body.get("context_id") and body.get("language"):
        return _err(400, "only one of context_id and language may be set")
    try:
        user = users.for_request(req)
        if body.get("context_id"):
            ctx = interp.contexts.get(body["context_id"])
            if ctx is None:
                return _err(404, f"context {body['context_id']} not found")
        else:
            ctx = interp.default(body.get("language"), user)
    except ValueError as e:
        return _err(400, str(e))
    except SandboxdError as e:  # the user named by the request cannot be resolved or acted as
        return _err(401, e.message)
    env_vars = body.get("env_vars") or {}
    if not isinstance(env_vars, dict):
        return _err(400, "env_vars must be an object")
    return StreamResponse(interp.execute(ctx, code, env_vars, user), content_type="application/x-ndjson")


async def create_context(req: Request):
    interp = _interp(req)
    try:
        body = json.loads(await req.body() or b"{}")
        ctx = interp.create(body.get("language"), body.get("cwd"), users.for_request(req))
    except ValueError as e:
        return _err(400, str(e))
    return _json(ctx.wire())


async def list_contexts(req: Request):
    interp = _interp(req)
    try:
        user = users.for_request(req)
    except SandboxdError as e:
        return _err(401, e.message)
    return _json([c.wire() for c in interp.listed(user)])


async def delete_context(req: Request):
    if not await _interp(req).remove(req.path_params["cid"]):
        return _err(404, f"context {req.path_params['cid']} not found")
    return Response(204, b"")


async def restart_context(req: Request):
    if not await _interp(req).restart(req.path_params["cid"]):
        return _err(404, f"context {req.path_params['cid']} not found")
    return Response(204, b"")


async def health(req: Request):
    return _json({"status": "ok", "time": time.time()})


# Paths under the code interpreter's prefix.
ROUTES = [
    ("GET", "/health", health),
    ("POST", "/execute", execute),
    ("POST", "/contexts", create_context),
    ("GET", "/contexts", list_contexts),
    ("DELETE", "/contexts/{cid}", delete_context),
    ("POST", "/contexts/{cid}/restart", restart_context),
]

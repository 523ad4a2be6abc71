"""The official `e2b-code-interpreter` SDK, unmodified: run_code with text/png/html results, errors, contexts."""
from __future__ import annotations

import base64
import json

import pytest


def test_run_code_text_and_state(ci_sandbox):
    first = ci_sandbox.run_code("x = 41\nprint('hi')\nx + 1")
    assert first.logs.stdout == ["hi\n"]
    assert first.text == "42"
    assert first.error is None
    assert ci_sandbox.run_code("x").text == "41"  # state persists between calls
    assert ci_sandbox.run_code("x").execution_count > first.execution_count


def test_run_code_streaming_callbacks(ci_sandbox):
    out, results = [], []
    ci_sandbox.run_code("import sys\nprint('a')\nprint('b', file=sys.stderr)\n7", on_stdout=out.append,
                        on_result=results.append)
    assert [m.line for m in out] == ["a\n"]
    assert results and results[0].text == "7"


def test_run_code_png_and_html(ci_sandbox):
    ex = ci_sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    pngs = [r.png for r in ex.results if r.png]
    assert pngs and base64.b64decode(pngs[0])[:8] == b"\x89PNG\r\n\x1a\n"
    ex = ci_sandbox.run_code("from IPython.display import HTML\nHTML('<b>bold</b>')")
    assert ex.results[0].html == "<b>bold</b>" and ex.results[0].is_main_result


def test_run_code_error(ci_sandbox):
    ex = ci_sandbox.run_code("def f():\n    raise ValueError('boom')\nf()")
    assert ex.error is not None
    assert ex.error.name == "ValueError" and ex.error.value == "boom"
    assert "ValueError" in ex.error.traceback


def test_contexts(ci_sandbox):
    ctx = ci_sandbox.create_code_context(cwd="/tmp")
    assert ctx.cwd == "/tmp" and ctx.language == "python"
    ci_sandbox.run_code("y = 5", context=ctx)
    assert ci_sandbox.run_code("y", context=ctx).text == "5"
    assert ci_sandbox.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    other = ci_sandbox.run_code("'y' in dir()")
    assert other.text == "False"  # the default context does not see another context's state
    assert ctx.id in [c.id for c in ci_sandbox.list_code_contexts()]
    ci_sandbox.restart_code_context(ctx)
    assert ci_sandbox.run_code("'y' in dir()", context=ctx).text == "False"
    ci_sandbox.remove_code_context(ctx)
    assert ctx.id not in [c.id for c in ci_sandbox.list_code_contexts()]


def test_run_code_env_vars_and_bash(ci_sandbox):
    assert ci_sandbox.run_code("import os; os.environ['ONLY_NOW']", envs={"ONLY_NOW": "v"}).text == "v"
    ex = ci_sandbox.run_code("echo from-bash", language="bash")
    assert ex.logs.stdout == ["from-bash\n"]


def test_run_code_timeout_interrupts(ci_sandbox):
    from e2b.exceptions import TimeoutException

    ci_sandbox.run_code("z = 3")
    code = "import time\ninterrupted = False\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    interrupted = True"
    with pytest.raises(TimeoutException):
        ci_sandbox.run_code(code, timeout=2)
    # The client's timeout interrupted the cell (not left it running), and the kernel kept its state.
    assert ci_sandbox.run_code("interrupted").text == "True"
    assert ci_sandbox.run_code("z").text == "3"


def test_async_sdk_run_code(e2b_env):
    import asyncio

    from e2b_code_interpreter import AsyncSandbox

    async def run():
        sbx = await AsyncSandbox.create(timeout=60)
        try:
            seen = []
            ex = await sbx.run_code("print('async')\n2 ** 10", on_stdout=seen.append)
            return ex.text, ex.logs.stdout, [m.line for m in seen]
        finally:
            await sbx.kill()

    text, stdout, streamed = asyncio.run(run())
    assert text == "1024" and stdout == ["async\n"] and streamed == ["async\n"]


def test_dataframe_chart_and_json_results(ci_sandbox):
    """What E2B's template gives: `data` for a DataFrame, a `chart` next to the PNG of a figure, `json`."""
    ex = ci_sandbox.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert ex.results[0].data == {"a": [1, 2], "b": ["x", "y"]}
    assert set(ex.results[0].formats()) == {"text", "html", "data"}
    ex = ci_sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 5, 6], label='up')\n"
                             "plt.title('rise')\nplt.xlabel('time (s)')\nplt.show()")
    chart = ex.results[0].chart
    assert ex.results[0].png and chart is not None
    assert chart.type.value == "line" and chart.title == "rise" and chart.x_unit == "s"
    assert chart.elements[0].label == "up" and chart.elements[0].points == [(1, 4), (2, 5), (3, 6)]
    assert ci_sandbox.run_code("{'k': [1, 2]}").results[0].json == {"k": [1, 2]}


def test_javascript_context_keeps_state_and_is_interrupted(ci_sandbox):
    from e2b.exceptions import TimeoutException

    ctx = ci_sandbox.create_code_context(language="js")
    ex = ci_sandbox.run_code("const n = 41; const inc = (x) => x + 1; console.log('set')", context=ctx)
    assert ex.logs.stdout == ["set\n"] and ex.error is None
    assert ci_sandbox.run_code("inc(n)", context=ctx).text == "42"
    assert ci_sandbox.run_code("await new Promise(r => setTimeout(() => r(n), 10))", context=ctx).text == "41"
    assert ci_sandbox.run_code("n.toFixed(", context=ctx).error.name == "SyntaxError"
    with pytest.raises(TimeoutException):
        ci_sandbox.run_code("while (true) {}", context=ctx, timeout=2)
    # The client's timeout interrupted the loop, and the context kept its state.
    assert ci_sandbox.run_code("inc(n) + 1", context=ctx).text == "43"
    assert ci_sandbox.run_code("typeof n", language="javascript").text == "undefined"  # default JS context


def test_typescript_cells_run_with_their_types(ci_sandbox):
    ctx = ci_sandbox.create_code_context(language="ts")
    assert ctx.language == "typescript"
    ex = ci_sandbox.run_code("type Point = { x: number; y: number }\n"
                             "const norm = (p: Point): number => Math.hypot(p.x, p.y);\nnorm({ x: 3, y: 4 })",
                             context=ctx)
    assert ex.text == "5" and ex.error is None
    assert ci_sandbox.run_code("norm({ x: 6, y: 8 } as Point)", context=ctx).text == "10"
    assert ci_sandbox.run_code("let n: = 1", context=ctx).error.name == "SyntaxError"
    assert ci_sandbox.run_code("const s: string = 'ts'; s", language="typescript").text == "ts"


def test_r_context_keeps_state_and_is_interrupted(ci_sandbox):
    from e2b.exceptions import TimeoutException

    ctx = ci_sandbox.create_code_context(language="r")
    assert ctx.language == "r"
    assert ci_sandbox.run_code("x <- 41; f <- function(v) v + 1", context=ctx).error is None
    ex = ci_sandbox.run_code("f(x)", context=ctx)
    assert ex.results[0].text == "[1] 42" and ex.results[0].html == "42"
    df = ci_sandbox.run_code("data.frame(a = 1:2, b = c('u', 'v'))", context=ctx).results[0]
    assert "<table" in df.html and "a" in df.text
    err = ci_sandbox.run_code("stop('boom')", context=ctx).error
    assert err is not None and "boom" in err.value
    with pytest.raises(TimeoutException):
        ci_sandbox.run_code("Sys.sleep(60)", context=ctx, timeout=2)
    # The client's timeout interrupted the cell, and the session kept its state.
    assert ci_sandbox.run_code("f(f(x))", context=ctx).results[0].text == "[1] 43"
    assert ci_sandbox.run_code("exists('x')", language="r").results[0].text == "[1] FALSE"  # default R context


def test_bash_context_keeps_state_and_is_interrupted(ci_sandbox):
    from e2b.exceptions import TimeoutException

    ctx = ci_sandbox.create_code_context(language="bash", cwd="/tmp")
    ex = ci_sandbox.run_code("cd /; N=41; inc() { echo $(( $1 + 1 )); }; echo set", context=ctx)
    assert ex.logs.stdout == ["set\n"] and ex.error is None
    assert ci_sandbox.run_code("inc $N; pwd", context=ctx).logs.stdout == ["42\n", "/\n"]
    failed = ci_sandbox.run_code("ls /nowhere 2>/dev/null", context=ctx)
    assert failed.error is not None and failed.error.value == "2"  # bash_kernel's error: the exit status
    with pytest.raises(TimeoutException):
        ci_sandbox.run_code("sleep 60", context=ctx, timeout=2)
    # The client's timeout interrupted the command, and the shell kept its state.
    assert ci_sandbox.run_code("inc $(inc $N)", context=ctx).logs.stdout == ["43\n"]
    home = ci_sandbox.run_code("import os; print(os.getcwd())").logs.stdout  # where default contexts start
    assert ci_sandbox.run_code('echo "[$N] $PWD"', language="bash").logs.stdout == [f"[] {home[0]}"]


def test_first_run_code_after_a_pool_claim_uses_the_warmed_kernel(e2b_env):
    """A pool member's kernel was started before the claim: the first run_code runs in it (no second kernel
    start), with the claimed sandbox's env vars and the context's cwd."""
    import time

    import httpx
    from e2b_code_interpreter import Sandbox

    pools = httpx.Client(base_url=e2b_env["api"], headers={"X-API-Key": e2b_env["key"]}, timeout=30)

    def wait_pool(ready: int) -> dict:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            row = pools.get("/v1/pools/code-interpreter").json()
            if row["ready"] == ready and row["filling"] == 0:
                return row
            time.sleep(0.3)
        raise AssertionError(f"pool did not reach {ready}: {row}")

    assert pools.put("/v1/pools/code-interpreter", json={"size": 1}).status_code == 200
    try:
        assert wait_pool(1)["kernel_warm"] == 1
        hits = pools.get("/v1/pools/code-interpreter").json()["hits"]
        created = time.time()
        sbx = Sandbox.create(envs={"WHO": "bob"}, timeout=120)
        try:
            assert pools.get("/v1/pools/code-interpreter").json()["hits"] == hits + 1
            ex = sbx.run_code("import os, time\nboot = float(open('/proc/stat').read().split('btime ')[1].split()[0])\n"
                              "start = int(open('/proc/self/stat').read().rsplit(')', 1)[1].split()[19])\n"
                              "print(boot + start / os.sysconf('SC_CLK_TCK'), os.environ.get('WHO'), os.getcwd())")
            started, who, cwd = ex.logs.stdout[0].split()
            assert float(started) < created - 0.05  # the kernel predates this sandbox's create
            fresh = sbx.run_code("import os; os.getcwd()", context=sbx.create_code_context()).text
            assert (who, cwd) == ("bob", fresh)  # where a context started afterwards starts too
            assert sbx.run_code("x = 1; x + 1").text == "2"
        finally:
            sbx.kill()
    finally:
        pools.put("/v1/pools/code-interpreter", json={"size": 0})
        wait_pool(0)
        pools.close()


def test_the_interpreter_answers_inside_its_sandbox(ci_sandbox, e2b_env):
    """Code in the sandbox reaches the interpreter on 127.0.0.1:49999 (a health check, or a tool calling it),
    as E2B's templates serve it there; only the interpreter's routes, and a user named there is ignored."""
    if e2b_env["backend"] == "fake":
        pytest.skip("the fake backend runs agents on the host, which keep the host's ports free")
    health = ci_sandbox.commands.run('curl -s -o /dev/null -w "%{http_code}" http://0.0.0.0:49999/health')
    assert health.stdout.strip() == "200"
    expected = ci_sandbox.run_code("import getpass; getpass.getuser()").text
    nobody = base64.b64encode(b"nobody:").decode()
    cell = ci_sandbox.commands.run(
        "curl -s -H 'Authorization: Basic " + nobody + "' -H 'Content-Type: application/json' "
        "-d '{\"code\": \"import getpass; getpass.getuser()\", \"language\": \"python\"}' "
        "http://127.0.0.1:49999/execute")
    results = [json.loads(line) for line in cell.stdout.splitlines() if line.strip()]
    assert [r["text"] for r in results if r["type"] == "result"] == [expected]
    # The agent's other routes (HopX's) are not reachable through that port.
    other = ci_sandbox.commands.run('curl -s -o /dev/null -w "%{http_code}" http://127.0.0.1:49999/commands/run')
    assert other.stdout.strip() == "404"
    # CONNECT tunnels are the host's: through this port they are only unknown routes.
    tunnel = ci_sandbox.commands.run(
        "curl -s -o /dev/null -w '%{http_code}' -X CONNECT http://127.0.0.1:49999/ --request-target 127.0.0.1:22")
    assert tunnel.stdout.strip() in ("404", "405")


def test_java_cells_as_e2b_runs_them(e2b_env):
    """`language="java"`: one JVM per context through JShell; println's text and line end are two stdout
    events, a String result reads as itself, env vars are system properties (the sandbox's, and a cell's own
    for that cell), user.dir is the user's home."""
    from e2b_code_interpreter import Sandbox

    sbx = Sandbox.create(envs={"TEST_ENV_VAR": "supertest"}, timeout=180)
    try:
        hello = sbx.run_code('System.out.println("Hello, World!")', language="java")
        assert hello.logs.stdout[0] == "Hello, World!" and hello.error is None
        assert sbx.run_code('System.getProperty("TEST_ENV_VAR")', language="java").text == "supertest"
        assert sbx.run_code('System.getProperty("FOO")', envs={"FOO": "bar"}, language="java").text == "bar"
        assert sbx.run_code('System.getProperty("FOO", "default")', language="java").text == "default"
        over = sbx.run_code('System.getProperty("TEST_ENV_VAR")', envs={"TEST_ENV_VAR": "overwrite"}, language="java")
        assert over.text == "overwrite"
        assert sbx.run_code('System.getProperty("TEST_ENV_VAR")', language="java").text == "supertest"
        if e2b_env["backend"] != "fake":
            assert sbx.run_code('System.getProperty("user.dir")', language="java").text == "/home/user"
        ctx = sbx.create_code_context(language="java")
        sbx.run_code("var words = new java.util.ArrayList<String>(); words.add(\"a\");", context=ctx)
        assert sbx.run_code("words.size() + 1", context=ctx).text == "2"
        failed = sbx.run_code('Integer.parseInt("x")', context=ctx)
        assert failed.error is not None and failed.error.name == "java.lang.NumberFormatException"
    finally:
        sbx.kill()

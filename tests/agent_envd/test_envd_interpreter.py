"""The code interpreter's NDJSON /execute and /contexts on the real agent (a real ipykernel)."""
from __future__ import annotations

import asyncio
import json

import pytest

J = "/e2b/49999"


async def _execute(client, body) -> list[dict]:
    lines = []
    async with client.stream("POST", f"{J}/execute", json=body) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            if line.strip():
                lines.append(json.loads(line))
    return lines


async def test_execute_ndjson_order_and_types(agent):
    client, _, _ = agent
    lines = await _execute(client, {"code": "print('out')\n6 * 7"})
    types = [x["type"] for x in lines]
    assert types[0] == "number_of_executions" and types[-1] == "end_of_execution"
    assert {"type": "stdout", "text": "out\n"}.items() <= next(x for x in lines if x["type"] == "stdout").items()
    result = next(x for x in lines if x["type"] == "result")
    assert result["text"] == "42" and result["is_main_result"] is True
    err = await _execute(client, {"code": "1/0"})
    e = next(x for x in err if x["type"] == "error")
    assert e["name"] == "ZeroDivisionError" and e["value"] == "division by zero" and "ZeroDivisionError" in e["traceback"]


async def test_contexts_crud(agent):
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"cwd": str(tmp)})).json()
    assert ctx["language"] == "python" and ctx["cwd"] == str(tmp)
    await _execute(client, {"code": "k = 1", "context_id": ctx["id"]})
    lines = await _execute(client, {"code": "k", "context_id": ctx["id"]})
    assert next(x for x in lines if x["type"] == "result")["text"] == "1"
    # The context's cwd is where it starts; a cell's own chdir holds for the next cells, as in a notebook.
    await _execute(client, {"code": "import os; os.chdir('/')", "context_id": ctx["id"], "env_vars": {"A": "1"}})
    lines = await _execute(client, {"code": "os.getcwd(), os.environ.get('A')", "context_id": ctx["id"]})
    assert next(x for x in lines if x["type"] == "result")["text"] == "('/', None)"
    assert ctx["id"] in [c["id"] for c in (await client.get(f"{J}/contexts")).json()]
    r = await client.post(f"{J}/execute", json={"code": "1", "context_id": ctx["id"], "language": "python"})
    assert r.status_code == 400
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 404
    r = await client.post(f"{J}/execute", json={"code": "1", "context_id": ctx["id"]})
    assert r.status_code == 404
    r = await client.post(f"{J}/contexts", json={"language": "cobol"})
    assert r.status_code == 400


async def test_rich_results_as_e2b_reads_them(agent):
    """A DataFrame gives `data` (columns as lists), a matplotlib figure `chart` (E2B's extractor), a dict
    `json`; HopX's own DataFrame kind stays out of E2B's results."""
    client, _, _ = agent
    lines = await _execute(client, {"code": "import pandas as pd\npd.DataFrame({'a': [1, 2], "
                                             "'t': pd.to_datetime(['2024-01-01', '2024-01-02'])})"})
    df = next(x for x in lines if x["type"] == "result")
    assert df["data"] == {"a": [1, 2], "t": ["2024-01-01T00:00:00", "2024-01-02T00:00:00"]}
    assert "html" in df and "extra" not in df
    lines = await _execute(client, {"code": "import matplotlib.pyplot as plt\nplt.bar(['x', 'y'], [3, 5])\n"
                                             "plt.title('bars')\nplt.show()"})
    fig = next(x for x in lines if x["type"] == "result")
    assert fig["png"] and fig["chart"]["type"] == "bar" and fig["chart"]["title"] == "bars"
    assert [(e["label"], e["value"]) for e in fig["chart"]["elements"]] == [("x", 3), ("y", 5)]
    lines = await _execute(client, {"code": "import numpy as np\n{'k': [1, 2], 'n': np.arange(2)}"})
    assert next(x for x in lines if x["type"] == "result")["json"] == {"k": [1, 2], "n": [0, 1]}
    lines = await _execute(client, {"code": "1 + 1"})  # nothing but text for a plain value
    assert {k for k in next(x for x in lines if x["type"] == "result")} == {"type", "is_main_result", "text"}


async def test_javascript_context_keeps_state(agent):
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "js", "cwd": str(tmp)})).json()
    assert ctx["language"] == "javascript"

    async def run(code, **extra):
        return await _execute(client, {"code": code, "context_id": ctx["id"], **extra})

    lines = await run("const base = 40; function add(x) { return base + x }; console.log('ready')")
    assert [x["text"] for x in lines if x["type"] == "stdout"] == ["ready\n"]
    assert not [x for x in lines if x["type"] == "result"] and lines[-1]["type"] == "end_of_execution"
    lines = await run("const later = await new Promise(r => setTimeout(() => r(2), 20)); add(later)")
    assert next(x for x in lines if x["type"] == "result")["text"] == "42"
    assert next(x for x in (await run("later * 3")) if x["type"] == "result")["text"] == "6"
    lines = await run("process.cwd() + ' ' + process.env.ONLY_NOW", env_vars={"ONLY_NOW": "v"})
    assert next(x for x in lines if x["type"] == "result")["text"] == f"{tmp} v"
    lines = await run("process.env.ONLY_NOW")  # env vars last one execution
    assert not [x for x in lines if x["type"] == "result"]
    err = next(x for x in (await run("undefinedName + 1")) if x["type"] == "error")
    assert err["name"] == "ReferenceError" and err["value"] == "undefinedName is not defined"
    assert "node:" not in err["traceback"] and "jsrepl" not in err["traceback"]  # the user's frames only
    syntax = next(x for x in (await run("function (")) if x["type"] == "error")
    assert syntax["name"] == "SyntaxError"
    other = (await client.post(f"{J}/contexts", json={"language": "javascript"})).json()
    lines = await _execute(client, {"code": "typeof base", "context_id": other["id"]})
    assert next(x for x in lines if x["type"] == "result")["text"] == "undefined"  # contexts are apart
    lines = await run("process.exit(0)")
    assert [x["type"] for x in lines][-2:] == ["error", "unexpected_end_of_execution"]
    lines = await run("typeof base")  # a new process: the context starts over
    assert next(x for x in lines if x["type"] == "result")["text"] == "undefined"
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204


async def test_default_python_context_adopts_the_pools_unused_kernel(agent):
    """A warm pool starts the agent's kernel before the sandbox is claimed; E2B's first cell takes it over
    (no second ~1 s kernel start), brought to the claimed sandbox's env, and only while no code ran in it."""
    client, tmp, _ = agent
    await client.put("/env", json={"env_vars": {"POOL_ONLY": "1"}})
    warm = (await client.post("/jupyter/warm")).json()
    assert warm["success"] is True
    pid = warm["sessions"][0]["pid"]
    await client.put("/env", json={"env_vars": {"WHO": "bob"}})  # the claim: the user's env replaces the pool's
    lines = await _execute(client, {"code": "import os\nprint(repr((os.getpid(), os.environ.get('WHO'), "
                                             "os.environ.get('POOL_ONLY'), os.getcwd())))"})
    assert next(x for x in lines if x["type"] == "stdout")["text"] == repr((pid, "bob", None, str(tmp))) + "\n"
    assert (await client.get("/jupyter/sessions")).json()["count"] == 0  # the kernel is the context's now
    # The HopX dialect gets a kernel of its own, which has not seen the E2B context's names.
    hopx = (await client.post("/execute", json={"code": "print(os.getpid())"})).json()
    assert "NameError" in (hopx.get("stderr") or "") + str(hopx.get("error"))
    await client.post("/execute", json={"code": "alice_var = 41"})
    # A kernel user code already ran in is never handed to another context.
    ctx = (await client.post(f"{J}/contexts", json={})).json()
    lines = await _execute(client, {"code": "alice_var", "context_id": ctx["id"]})
    assert next(x for x in lines if x["type"] == "error")["name"] == "NameError"
    assert (await client.get("/jupyter/sessions")).json()["count"] == 1


async def test_bash_context_keeps_state(agent):
    """bash contexts are bash_kernel kernels, as in E2B: variables, functions and the cwd live on; a failing
    cell is an error whose value is the exit status; a cell's env vars last that cell."""
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "bash", "cwd": str(tmp)})).json()
    assert ctx["language"] == "bash"

    async def run(code, **extra):
        return await _execute(client, {"code": code, "context_id": ctx["id"], **extra})

    def out(lines):
        return "".join(x["text"] for x in lines if x["type"] == "stdout")

    assert out(await run("pwd")) == f"{tmp}\n"
    await run("mkdir -p sub && cd sub; X=5; export Y=6; twice() { echo $(( $1 * 2 )); }")
    assert out(await run('echo "$X $Y $(basename $PWD)"; twice 21')) == "5 6 sub\n42\n"
    assert out(await run("echo $ONLY", env_vars={"ONLY": "v", "bad-name": "x"})) == "v\n"
    assert out(await run("echo \"[$ONLY]\"")) == "[]\n"
    lines = await run("echo before; false")
    err = next(x for x in lines if x["type"] == "error")
    assert (err["name"], err["value"]) == ("", "1") and out(lines) == "before\n"
    other = (await client.post(f"{J}/contexts", json={"language": "bash"})).json()
    lines = await _execute(client, {"code": 'echo "[$X]"', "context_id": other["id"]})
    assert out(lines) == "[]\n"  # contexts are apart
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204


async def test_typescript_context_strips_types_and_keeps_state(agent):
    """TypeScript cells lose their types (esbuild) and run in a stateful Node context, as JavaScript ones."""
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "ts", "cwd": str(tmp)})).json()
    assert ctx["language"] == "typescript"

    async def result(code):
        lines = await _execute(client, {"code": code, "context_id": ctx["id"]})
        return next(x for x in lines if x["type"] in ("result", "error"))

    first = await result("interface P { x: number }\nconst p: P = { x: 41 };\n"
                         "function inc<T extends number>(v: T): number { return v + 1 }\ninc(p.x)")
    assert first["text"] == "42"
    assert (await result("await Promise.resolve(inc(p.x) as number) + 1"))["text"] == "43"
    err = await result("const broken: = 1")
    assert err["type"] == "error" and err["name"] == "SyntaxError" and "(1:14)" in err["value"]
    assert (await result("p.x"))["text"] == "41"  # a cell that did not compile changed nothing
    lines = await _execute(client, {"code": "const n: number = 2; n * 21", "language": "typescript"})
    assert next(x for x in lines if x["type"] == "result")["text"] == "42"  # the default TypeScript context


async def test_r_context_keeps_state(agent):
    """R contexts are IRkernel kernels, as in E2B: values live on, the last value is the cell's result,
    errors carry R's message, a cell's env vars last that cell."""
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "r", "cwd": str(tmp)})).json()
    assert ctx["language"] == "r"

    async def run(code, **extra):
        return await _execute(client, {"code": code, "context_id": ctx["id"], **extra})

    lines = await run("x <- c(1, 2, 3)\ncat('ready\\n')")
    assert [x["text"] for x in lines if x["type"] == "stdout"] == ["ready\n"]
    result = next(x for x in (await run("sum(x) * 7")) if x["type"] == "result")
    # IRkernel displays values (display_data), so E2B's own server reports them as not the main result too.
    assert result["text"] == "[1] 42" and result["html"] == "42" and result["is_main_result"] is False
    lines = await run("cat(getwd(), Sys.getenv('ONLY'), sep = '|')", env_vars={"ONLY": "v", "A B": "odd name"})
    assert [x["text"] for x in lines if x["type"] == "stdout"] == [f"{tmp}|v"]
    lines = await run("cat(Sys.getenv('ONLY'), Sys.getenv('A B'), sep = '|')")
    assert [x["text"] for x in lines if x["type"] == "stdout"] == ["|"]
    err = next(x for x in (await run("stop('boom')")) if x["type"] == "error")
    assert "boom" in err["value"]
    assert next(x for x in (await run("length(x)")) if x["type"] == "result")["text"] == "[1] 3"


async def _long_cell(client, cid: str) -> tuple[asyncio.Task, list[dict]]:
    """A cell that sleeps ten minutes, once it has started; its lines as they come."""
    lines: list[dict] = []

    async def run():
        async with client.stream("POST", f"{J}/execute", json={
                "code": "import time\nprint('started', flush=True)\ntime.sleep(600)", "context_id": cid}) as r:
            async for line in r.aiter_lines():
                if line.strip():
                    lines.append(json.loads(line))

    cell = asyncio.create_task(run())
    while not any(x.get("text") == "started\n" for x in lines):
        await asyncio.sleep(0.05)
    return cell, lines


async def test_restarting_a_context_ends_its_running_cell_at_once(agent):
    """A restart does not wait for a running cell: the cell ends with an error, and the context's next cell
    runs on a fresh kernel."""
    client, _, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={})).json()
    await _execute(client, {"code": "kept = 1", "context_id": ctx["id"]})
    cell, lines = await _long_cell(client, ctx["id"])
    assert (await client.post(f"{J}/contexts/{ctx['id']}/restart")).status_code == 204
    await cell
    assert lines[-1]["type"] == "unexpected_end_of_execution", lines
    assert next(x for x in lines if x["type"] == "error")["name"] == "ContextStopped"
    after = await _execute(client, {"code": "'kept' in globals()", "context_id": ctx["id"]})
    assert [x["text"] for x in after if x["type"] == "result"] == ["False"]


async def test_deleting_a_context_ends_its_running_cell_with_an_error(agent):
    """The cell's stream ends properly (an error, then the end line), instead of being cut off."""
    client, _, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={})).json()
    cell, lines = await _long_cell(client, ctx["id"])
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204
    await asyncio.wait_for(cell, 30)
    assert lines[-1]["type"] == "unexpected_end_of_execution", lines
    err = next(x for x in lines if x["type"] == "error")
    assert "deleted" in err["value"], err


async def test_string_results_read_as_the_string_and_default_contexts_are_listed(agent):
    client, _, _ = agent
    for language, code in (("python", "'it' + \"'s\""), ("javascript", "'a' + 'b'")):
        lines = await _execute(client, {"code": code, "language": language})
        assert next(x for x in lines if x["type"] == "result")["text"] in ("it's", "ab"), lines
    listed = {c["language"] for c in (await client.get(f"{J}/contexts")).json()}
    assert {"python", "javascript"} <= listed


async def test_javascript_cells_may_use_static_imports(agent):
    client, _, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "javascript"})).json()
    code = "import { readFileSync } from 'fs'\nimport * as path from 'path'\nimport os, { EOL } from 'os'\n" \
           "console.log(typeof readFileSync, path.sep, typeof os.cpus, JSON.stringify(EOL))"
    for _ in range(2):  # the same imports in a later cell of the context
        lines = await _execute(client, {"code": code, "context_id": ctx["id"]})
        assert [x["text"] for x in lines if x["type"] == "stdout"] == ['function / function "\\n"\n'], lines


async def test_a_cells_env_vars_give_way_to_the_sandboxs_afterwards(agent, monkeypatch):
    """A variable a cell overrides reads as the sandbox's own value again in the next cell, in every kernel."""
    client, _, _ = agent
    for language, read in (("python", "import os; print(os.environ.get('HOME'))"), ("bash", "echo $HOME")):
        home = [x["text"] for x in await _execute(client, {"code": read, "language": language})
                if x["type"] == "stdout"]
        over = [x["text"] for x in await _execute(client, {"code": read, "language": language,
                                                            "env_vars": {"HOME": "/elsewhere"}})
                if x["type"] == "stdout"]
        again = [x["text"] for x in await _execute(client, {"code": read, "language": language})
                 if x["type"] == "stdout"]
        assert over == ["/elsewhere\n"] and again == home and home and home != over, (language, home, again)
    ctx = (await client.get(f"{J}/contexts")).json()
    made = (await client.post(f"{J}/contexts", json={})).json()
    assert (await client.get(f"{J}/contexts")).json()[-1]["id"] == made["id"]  # the defaults come first
    assert [c["language"] for c in ctx[:2]] == ["python", "javascript"]


async def test_pillow_images_shown_or_saved_are_results(agent, tmp_path):
    client, _, _ = agent
    make = "from PIL import Image\nim = Image.new('RGB', (8, 8), 'red')\n"
    for code in (make + "im.show()\nprint('shown')", make + f"im.save({str(tmp_path / 'x.png')!r})"):
        lines = await _execute(client, {"code": code})
        assert [x for x in lines if x["type"] == "result" and x.get("png")], lines
    assert (tmp_path / "x.png").stat().st_size > 0


async def test_java_context_keeps_state_and_reads_env_as_properties(agent, monkeypatch):
    """Java cells run in one JVM per context through JShell, as E2B's Java kernel: each write is its own
    stdout event, the last expression's value is the result (a String as itself), environment variables are
    system properties too, a cell's own ones for that cell only, and user.dir is the context's cwd."""
    client, tmp, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "java", "cwd": str(tmp)})).json()
    assert ctx["language"] == "java"

    async def run(code, **extra):
        return await _execute(client, {"code": code, "context_id": ctx["id"], **extra})

    def result(lines):
        return [x["text"] for x in lines if x["type"] == "result"]

    lines = await run('System.out.println("Hello, World!")')
    assert [x["text"] for x in lines if x["type"] == "stdout"] == ["Hello, World!", "\n"]
    assert result(lines) == []
    assert result(await run("int x = 41;\nint twice(int a) { return 2 * a; }\ntwice(x) + 0")) == ["82"]
    assert result(await run("x + 1")) == ["42"]
    assert result(await run('String s = "a\\"b"; s')) == ['a"b']
    assert result(await run('System.getProperty("user.dir")')) == [str(tmp)]
    assert result(await run('System.getProperty("FOO")', env_vars={"FOO": "bar"})) == ["bar"]
    assert result(await run('System.getProperty("FOO", "default")')) == ["default"]
    home = result(await run('System.getProperty("HOME")'))
    assert home and result(await run('System.getProperty("HOME")', env_vars={"HOME": "/elsewhere"})) == ["/elsewhere"]
    assert result(await run('System.getProperty("HOME")')) == home
    err = next(x for x in await run('Integer.parseInt("nope")') if x["type"] == "error")
    assert err["name"] == "java.lang.NumberFormatException" and "nope" in err["value"]
    assert "NumberFormatException" in err["traceback"] and "jdk.jshell" not in err["traceback"]
    bad = next(x for x in await run('int y = "s";') if x["type"] == "error")
    assert bad["name"] == "CompilationException" and "incompatible types" in bad["value"]
    assert result(await run("x")) == ["41"]  # an error leaves the context as it was
    lines = await run("System.exit(3)")
    assert [x["type"] for x in lines][-2:] == ["error", "unexpected_end_of_execution"]
    assert next(x for x in await run("x") if x["type"] == "error")["name"] == "CompilationException"  # a new JVM
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204


async def test_a_java_cell_is_interrupted_when_its_client_goes(agent):
    """A client that stops reading (its timeout) interrupts the running cell; the context keeps its state."""
    client, _, _ = agent
    ctx = (await client.post(f"{J}/contexts", json={"language": "java"})).json()
    await _execute(client, {"code": "long n = 5;", "context_id": ctx["id"]})

    async def forever():
        async with client.stream("POST", f"{J}/execute", json={"code": "while (true) { n++; }",
                                                                "context_id": ctx["id"]}) as r:
            async for _ in r.aiter_lines():
                pass

    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(forever(), 3)
    lines = await _execute(client, {"code": "n > 5", "context_id": ctx["id"]})
    assert [x["text"] for x in lines if x["type"] == "result"] == ["true"]

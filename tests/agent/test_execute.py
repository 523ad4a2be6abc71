"""POST /execute and friends: the stateful kernel, other languages, rich outputs, timeouts, jobs, async."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from PIL import Image

from .conftest import assert_error


def run(client, code, **kw):
    r = client.post("/execute", json={"code": code, **kw})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return r.json()


def test_python_state_persists_between_calls(client):
    assert run(client, "counter = 41")["success"] is True
    r = run(client, "counter += 1\nprint(counter)")
    assert r["success"] is True and r["stdout"] == "42\n" and r["exit_code"] == 0
    assert isinstance(r["execution_time"], float)


def test_python_error_is_a_200_result_with_traceback(client):
    r = run(client, "def f():\n    raise ValueError('boom')\nf()")
    assert r["success"] is False and r["exit_code"] == 1
    assert "ValueError" in r["stderr"] and "boom" in r["stderr"] and "Traceback" in r["stderr"]
    assert r["error"] == "ValueError: boom"


def test_sys_exit_gives_its_code_and_the_kernel_lives_on(client):
    assert run(client, "import sys\nsys.exit(3)")["exit_code"] == 3
    r = run(client, "import sys\nprint('bye')\nsys.exit(0)")
    assert (r["exit_code"], r["success"], r["stdout"]) == (0, True, "bye\n")
    assert run(client, "sys.exit('no')")["exit_code"] == 1
    assert run(client, "print(1 + 1)")["stdout"] == "2\n"


def test_timeout_interrupts_kernel_and_keeps_state(client):
    run(client, "kept = 'still here'")
    t0 = time.monotonic()
    r = run(client, "import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=1)
    assert time.monotonic() - t0 < 10
    assert r["success"] is False and r["timed_out"] is True and r["exit_code"] == 124
    assert "timed out" in r["error"] and r["stdout"] == "started\n"
    assert run(client, "print(kept)")["stdout"] == "still here\n"


def test_env_precedence_request_over_env_api_over_template(client):
    client.patch("/env", json={"env_vars": {"PRECEDENCE": "from-env-api", "ONLY_API": "api"}, "merge": True})
    try:
        code = "import os\nprint(os.environ['PRECEDENCE'], os.environ['ONLY_API'], os.environ['AGENT_TEMPLATE_VAR'])"
        assert run(client, code)["stdout"] == "from-env-api api from-template\n"
        r = run(client, code, env={"PRECEDENCE": "from-request"})
        assert r["stdout"] == "from-request api from-template\n"
        # the request env does not stick
        assert run(client, code)["stdout"] == "from-env-api api from-template\n"
        r = run(client, "echo $PRECEDENCE $ONLY_API", language="bash", env={"ONLY_API": "req"})
        assert r["stdout"] == "from-env-api req\n"
    finally:
        client.delete("/env")
    assert run(client, "import os\nprint(os.environ.get('ONLY_API'))")["stdout"] == "None\n"


def test_workdir(client, workspace):
    sub = workspace / "wd"
    sub.mkdir(exist_ok=True)
    assert run(client, "import os\nprint(os.getcwd())", workdir=str(sub))["stdout"] == f"{sub}\n"
    assert run(client, "pwd", language="sh", workdir=str(sub))["stdout"] == f"{sub}\n"


def test_matplotlib_png_is_a_real_image_of_the_figure_size(client):
    code = ("import matplotlib.pyplot as plt\nfig = plt.figure(figsize=(4, 3), dpi=50)\n"
            "plt.plot([1, 3, 2])\nplt.show()")
    r = run(client, code)
    assert r["success"] is True, r
    img = Image.open(io.BytesIO(base64.b64decode(r["png"])))
    assert img.format == "PNG"
    w, h = img.size  # 200x150 before the inline backend's tight bounding box trims the margins
    assert 0.7 * 200 <= w <= 200 and 0.7 * 150 <= h <= 150


def test_dataframe_html_and_structured_form(client):
    r = run(client, "import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    assert "<table" in r["html"]
    assert r["dataframe"] == {"columns": ["a", "b"], "index": [0, 1], "data": [[1, "x"], [2, "y"]]}


def test_json_display_data(client):
    r = run(client, "from IPython.display import JSON, display\ndisplay(JSON({'k': [1, 2]}))")
    assert r["json"] == {"k": [1, 2]}


@pytest.mark.parametrize("language", ["bash", "sh", "shell"])
def test_shell_languages(client, language):
    r = run(client, "echo out; echo err >&2; exit 3", language=language)
    assert (r["stdout"], r["stderr"], r["exit_code"], r["success"]) == ("out\n", "err\n", 3, False)


@pytest.mark.parametrize("language", ["python", "python3", "py"])
def test_python_aliases(client, language):
    assert run(client, "print(6*7)", language=language)["stdout"] == "42\n"


@pytest.mark.parametrize("language", ["javascript", "js", "node", "nodejs"])
def test_javascript(client, language):
    r = run(client, "console.log(6*7)", language=language)
    if shutil.which("node") or shutil.which("nodejs"):
        assert r["stdout"] == "42\n" and r["success"] is True
    else:
        assert r["success"] is False and r["missing_dependencies"] == ["node"] and "Node.js" in r["error"]


def test_go(client):
    r = run(client, 'package main\nimport "fmt"\nfunc main() { fmt.Println(42) }', language="go", timeout=120)
    if shutil.which("go"):
        assert r["stdout"] == "42\n"
    else:
        assert r["success"] is False and r["missing_dependencies"] == ["go"] and "go" in r["error"]


def test_unknown_language_is_400(client):
    assert_error(client.post("/execute", json={"code": "x", "language": "cobol"}), 400, "INVALID_REQUEST")


def test_missing_code_and_bad_json(client):
    assert_error(client.post("/execute", json={"language": "python"}), 400, "INVALID_REQUEST")
    assert_error(client.post("/execute", content=b"{nope", headers={"content-type": "application/json"}),
                 400, "INVALID_JSON")


def test_shell_timeout_kills_process_group(client, workspace):
    marker = workspace / "grandchild-survived"
    r = run(client, f"(sleep 3; touch {marker}) & sleep 30", language="bash", timeout=1)
    assert r["timed_out"] is True and r["exit_code"] == 124 and r["success"] is False
    time.sleep(3.5)
    assert not marker.exists()


def test_rich_alias_and_ipython(client):
    r = client.post("/execute/rich", json={"code": "1 + 1"}).json()
    assert r["result"] == "2" and r["success"] is True
    r = client.post("/execute/ipython", json={"code": "%time x = 1\nprint('ok')"}).json()
    assert r["success"] is True and "ok" in r["stdout"]


def test_cache_opt_in_counts_hits_and_misses(client):
    client.post("/cache/clear")
    before = client.get("/cache/stats").json()
    code = "import random\nprint(random.random())"
    a = run(client, code, cache=True)
    b = run(client, code, cache=True)
    assert b["stdout"] == a["stdout"] and b["cached"] is True
    c = run(client, code)  # not opted in: runs again
    assert c["stdout"] != a["stdout"]
    d = run(client, code, cache=True, env={"X": "1"})  # env is part of the key
    assert d["stdout"] != a["stdout"]
    stats = client.get("/cache").json()
    assert stats["hits"] == before["hits"] + 1 and stats["misses"] == before["misses"] + 2
    assert stats["count"] == 2 and stats["size"] > 0 and 0 < stats["hit_rate"] <= 1
    cleared = client.post("/cache/clear").json()
    assert cleared["entries_removed"] == 2 and client.get("/cache/stats").json()["count"] == 0


@pytest.mark.parametrize("kill", ["post_execute_kill_id", "delete_execute_kill_id", "delete_execute_kill_query",
                                  "post_processes_kill"])
def test_background_list_and_kill_every_spelling(client, kill):
    r = client.post("/execute/background", json={"code": "import time\nprint('bg', flush=True)\ntime.sleep(60)",
                                                 "name": f"job-{kill}"})
    assert r.status_code == 200
    pid = r.json()["process_id"]
    assert r.json()["status"] == "running" and r.json()["execution_id"] == pid
    listed = {p["process_id"]: p for p in client.get("/execute/processes").json()["processes"]}
    assert listed[pid]["status"] == "running" and listed[pid]["name"] == f"job-{kill}"
    assert listed[pid]["language"] == "python" and listed[pid]["pid"] > 0
    resp = {"post_execute_kill_id": lambda: client.post(f"/execute/kill/{pid}"),
            "delete_execute_kill_id": lambda: client.delete(f"/execute/kill/{pid}"),
            "delete_execute_kill_query": lambda: client.delete("/execute/kill", params={"process_id": pid}),
            "post_processes_kill": lambda: client.post(f"/processes/{pid}/kill")}[kill]()
    assert resp.status_code == 200 and resp.json()["status"] == "killed"
    info = client.get(f"/execute/processes/{pid}").json()
    assert info["status"] == "killed" and info["end_time"]
    assert_error(client.post("/execute/kill/proc_nope"), 404, "PROCESS_NOT_FOUND")


def test_background_completes(client):
    pid = client.post("/execute/background", json={"code": "echo done", "language": "bash"}).json()["process_id"]
    for _ in range(100):
        info = client.get(f"/execute/processes/{pid}").json()
        if info["status"] != "running":
            break
        time.sleep(0.05)
    assert info["status"] == "completed" and info["exit_code"] == 0 and info["stdout"] == "done\n"


class _Hook(BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        if _Hook.fail_first > 0:
            _Hook.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Hook.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_async_execution_posts_signed_callback_with_retry(client):
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received, _Hook.fail_first = [], 1
    try:
        r = client.post("/execute/async", json={
            "code": "print('async hi')", "callback_url": f"http://127.0.0.1:{server.server_port}/hook",
            "callback_headers": {"X-Custom": "yes"}, "callback_signature_secret": "s3cret"})
        assert r.status_code == 200 and r.json()["status"] == "queued"
        exec_id = r.json()["execution_id"]
        deadline = time.monotonic() + 20
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _Hook.received, "callback never arrived"
        headers, body = _Hook.received[0]
        payload = json.loads(body)
        assert payload["execution_id"] == exec_id and payload["status"] == "completed"
        assert payload["stdout"] == "async hi\n" and payload["exit_code"] == 0
        assert headers["X-Custom"] == "yes"
        ts = headers["X-HOPX-Timestamp"]
        expected = hmac.new(b"s3cret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        assert headers["X-HOPX-Signature"] == f"sha256={expected}"
    finally:
        server.shutdown()


def test_kernel_death_is_a_result_and_the_next_call_gets_a_new_kernel(client):
    run(client, "doomed = 1")
    r = run(client, "import os\nos._exit(3)", timeout=30)
    assert r["success"] is False and r["kernel_restarted"] is True and "died" in r["error"]
    r = run(client, "print('doomed' in globals())")
    assert r["success"] is True and r["stdout"] == "False\n"

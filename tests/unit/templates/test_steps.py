"""The HopX builder's wire format (both clients' dialects) → BuildRecipe."""
import pytest

from sandboxd.errors import Invalid
from sandboxd.templates.steps import parse_build_request, parse_ready, parse_step

# Captured from hopx_ai 0.5.0 on the wire (docs/clients/hopx.md §4).
PY_PAYLOAD = {
    "name": "smoke-tpl", "from_image": "python:3.12",
    "steps": [{"type": "COPY", "args": ["app.py", "/app/"], "filesHash": "99ae0b74"},
              {"type": "ENV", "args": ["A", "1"]},
              {"type": "RUN", "args": ["/usr/local/bin/pip3 install --no-cache-dir requests"]}],
    "startCmd": "python /app/app.py",
    "readyCmd": {"type": "port", "timeout": 30000, "interval": 2000, "port": 8000},
    "cpu": 2, "memory": 2048, "diskGB": 10, "skipCache": False, "update": False,
}


def test_python_client_payload():
    r = parse_build_request(PY_PAYLOAD)
    assert (r.name, r.from_image, r.start_cmd) == ("smoke-tpl", "python:3.12", "python /app/app.py")
    assert [s.kind for s in r.steps] == ["COPY", "ENV", "RUN"]
    assert r.steps[0].args == ("app.py", "/app/") and r.steps[0].files_hash == "99ae0b74"
    assert r.steps[1].args == ("A", "1")
    assert r.ready_check.kind == "port" and r.ready_check.value == "8000" and r.ready_check.timeout_seconds == 30
    assert (r.resources.vcpu, r.resources.memory_mb, r.resources.disk_mb) == (2.0, 2048, 10240)


def test_js_client_dialect():
    r = parse_build_request({
        "name": "js", "from_image": "node:20-slim",
        "steps": [{"type": "env", "key": "K", "value": "v w"}, {"type": "workdir", "path": "/app"},
                  {"type": "COPY", "args": ["a,b", "/x/"], "filesHash": "h", "owner": "user", "permissions": "755"},
                  {"type": "RUN", "args": ["echo hi"], "skipCache": True}],
        "readyCmd": {"type": "process", "name": "node"},
    })
    assert r.steps[0].args == ("K", "v w") and r.steps[1].args == ("/app",)
    assert r.steps[2].owner == "user" and r.steps[2].permissions == "755"
    assert r.steps[3].skip_cache is True
    assert r.ready_check.kind == "process" and r.ready_check.value == "node"
    assert r.start_cmd is None


@pytest.mark.parametrize("raw,kind,value", [
    ({"type": "file", "path": "/tmp/ready"}, "file", "/tmp/ready"),
    ({"type": "process", "processName": "uvicorn"}, "process", "uvicorn"),
    ({"type": "command", "command": "test -e /x"}, "command", "test -e /x"),
    ({"type": "url", "url": "http://localhost:8000/health"}, "command",
     "curl -fsS -o /dev/null http://localhost:8000/health"),
])
def test_ready_checks(raw, kind, value):
    rc = parse_ready(raw)
    assert (rc.kind, rc.value) == (kind, value)


@pytest.mark.parametrize("raw", [
    {"type": "FROBNICATE", "args": ["x"]},
    {"type": "RUN", "args": []},
    {"type": "ENV", "args": ["1-bad", "x"]},
    {"type": "COPY", "args": ["only-src"]},
    {"type": "COPY", "args": ["a", "/b"], "permissions": "rwx"},
    {"type": "RUN", "args": "echo not a list"},
])
def test_bad_steps_are_invalid(raw):
    with pytest.raises(Invalid):
        parse_step(raw, 0)


@pytest.mark.parametrize("doc", [
    {"from_image": "base", "steps": []},
    {"name": "x", "steps": []},
    {"name": "x", "from_image": "base", "readyCmd": {"type": "port", "port": "eighty"}},
    {"name": "x", "from_image": "base", "readyCmd": {"type": "telepathy"}},
])
def test_bad_requests_are_invalid(doc):
    with pytest.raises(Invalid):
        parse_build_request(doc)


def test_exec_form_run_is_joined_safely():
    step = parse_step({"type": "RUN", "args": ["echo", "a b", "$HOME"]}, 0)
    assert step.args == ("echo 'a b' '$HOME'",)

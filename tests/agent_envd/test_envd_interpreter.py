"""The code interpreter's NDJSON /execute and /contexts on the real agent (a real ipykernel)."""
from __future__ import annotations

import json

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
    assert ctx["id"] in [c["id"] for c in (await client.get(f"{J}/contexts")).json()]
    r = await client.post(f"{J}/execute", json={"code": "1", "context_id": ctx["id"], "language": "python"})
    assert r.status_code == 400
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 204
    assert (await client.delete(f"{J}/contexts/{ctx['id']}")).status_code == 404
    r = await client.post(f"{J}/execute", json={"code": "1", "context_id": ctx["id"]})
    assert r.status_code == 404
    r = await client.post(f"{J}/contexts", json={"language": "cobol"})
    assert r.status_code == 400

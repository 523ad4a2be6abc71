"""The gateway hook's path rewrite (the resolver's routing and token checks run in tests/compat/e2b)."""
from __future__ import annotations

import pytest

from sandboxd.gateway.e2b import rewrite
from sandboxd.gateway.proxy import GatewayError, parse_head


def _head(target: str):
    raw = f"POST {target} HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: sb1\r\n\r\n".encode()
    return parse_head(raw, request=True)


def test_rewrite_prefixes_path_and_raw_bytes():
    head = _head("/process.Process/Start")
    rewrite(head, 49983)
    assert head.target == "/e2b/49983/process.Process/Start"
    assert head.raw.startswith(b"POST /e2b/49983/process.Process/Start HTTP/1.1\r\nHost: x\r\n")
    head = _head("/files?path=%2Ftmp%2Fa&username=user")
    rewrite(head, 49983)
    assert head.target == "/e2b/49983/files?path=%2Ftmp%2Fa&username=user"
    head = _head("/execute")
    rewrite(head, 49999)
    assert head.raw.split(b"\r\n")[0] == b"POST /e2b/49999/execute HTTP/1.1"


@pytest.mark.parametrize("target", ["/init", "/upgrade", "/e2b/49999/execute"])
def test_rewrite_refuses_internal_and_prefixed_paths(target):
    with pytest.raises(GatewayError) as exc:
        rewrite(_head(target), 49983)
    assert exc.value.status == 404

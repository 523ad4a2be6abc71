"""The lifecycle's Protocols name every method the lifecycle and reconcile call on the catalog and the pool,
and the services it is given implement each of them with the same parameters."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from sandboxd.core import catalog, lifecycle, pool

CORE = Path(lifecycle.__file__).parent


def _members(proto: type) -> list[str]:
    return [n for n, v in vars(proto).items() if inspect.isfunction(v) and not n.startswith("_")]


def _called_on(attr: str) -> set[str]:
    """Methods called as `<x>.<attr>.<name>(...)` in the lifecycle and reconcile sources."""
    names = set()
    for src in ("lifecycle.py", "reconcile.py"):
        for node in ast.walk(ast.parse((CORE / src).read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Attribute) and owner.attr == attr:
                    names.add(node.func.attr)
    return names


@pytest.mark.parametrize("proto,impl,attr", [
    (lifecycle.Catalog, catalog.CatalogService, "catalog"),
    (lifecycle.WarmPool, pool.WarmPoolService, "pool"),
])
def test_protocol_is_complete_and_implemented(proto, impl, attr):
    names = _members(proto)
    assert _called_on(attr) <= set(names)
    for name in names:
        want = list(inspect.signature(getattr(proto, name)).parameters)
        assert list(inspect.signature(getattr(impl, name)).parameters) == want, name

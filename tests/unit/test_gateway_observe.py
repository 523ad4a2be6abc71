"""The gateway's route labels cover every route of the in-sandbox agent and nothing a client makes up."""
from __future__ import annotations

import importlib
import pkgutil

import sandboxd.agent.routes as agent_routes
from sandboxd.gateway.observe import OTHER, PORT, route_label


def agent_paths() -> list[str]:
    paths = []
    for mod in pkgutil.iter_modules(agent_routes.__path__):
        routes = getattr(importlib.import_module(f"{agent_routes.__name__}.{mod.name}"), "ROUTES", [])
        paths += [path for _method, path, *_ in routes]
    return paths


def test_every_agent_route_has_a_family_label():
    paths = agent_paths()
    assert len(paths) > 20
    for path in paths:
        label = route_label(path.replace("{", "").replace("}", ""), None)
        assert label != OTHER and label == "/" + path.split("/")[1], path


def test_e2b_prefixes_ids_and_made_up_paths():
    assert route_label("/e2b/49983/files?path=/x", None) == "/e2b/49983"
    assert route_label("/e2b/49999/execute", None) == "/e2b/49999"
    assert route_label("/e2b/1234/x", None) == OTHER
    assert route_label("/files/read?path=/etc/passwd", None) == "/files"
    assert route_label("/processes/4242/kill", None) == "/processes"
    assert route_label("/anything/else", None) == OTHER
    assert route_label("/", None) == OTHER
    assert route_label("/any/path/of/an/app", 3000) == PORT

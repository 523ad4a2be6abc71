"""The routing table the lifecycle writes and the gateway reads."""
from __future__ import annotations

from pathlib import Path

from sandboxd.core.routes import RouteTable, SandboxRoute


def test_put_get_drop_and_status():
    table = RouteTable()
    route = SandboxRoute(Path("/s/a.sock"), "running", 1)
    table.put("sb1", route)
    assert table.get("sb1") is route and "sb1" in table and table["sb1"] is route and len(table) == 1
    table.set_status("sb1", "paused")
    table.set_status("nobody", "paused")  # a sandbox without a route has no status to follow
    assert table.get("sb1").status == "paused"
    assert table.drop("sb1") is route
    assert table.get("sb1") is None and "sb1" not in table and table.drop("sb1") is None
    table.put("sb1", route)  # a failed kill puts the route back: the lookup sees it again
    assert table.get("sb1") is route


def test_items_is_a_snapshot():
    table = RouteTable()
    table.put("a", SandboxRoute(Path("/a"), "running", 1))
    table.put("b", SandboxRoute(Path("/b"), "running", 1))
    seen = []
    for sid, _ in table.items():
        table.drop("b")
        seen.append(sid)
    assert seen == ["a", "b"] and list(table) == ["a"]


def test_gone_tells_every_subscriber_the_socket():
    table, heard = RouteTable(), []
    table.subscribe_gone(lambda sid, sock: heard.append(("first", sid, sock)))
    table.gone_listeners.append(lambda sid, sock: heard.append(("second", sid, sock)))
    route = SandboxRoute(Path("/s/b.sock"), "running", 3)
    table.put("sb2", route)
    table.gone("sb2", table.drop("sb2"))
    assert heard == [("first", "sb2", Path("/s/b.sock")), ("second", "sb2", Path("/s/b.sock"))]

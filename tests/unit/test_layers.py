"""The layer rule, read from the source: no module imports a layer above its own, and no two modules import
each other (imports under `if TYPE_CHECKING:` are for types only and do not count). docs/architecture.md
draws the layers."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "sandboxd"
TOP = {"api", "gateway", "monitor", "cli", "sdk", "wiring"}
# What each package may NOT import. The ground floor (errors, config) imports no other package of ours;
# the agent runs inside sandboxes and needs nothing of the host side.
FORBIDDEN = {
    "errors": TOP | {"core", "runtime", "templates", "agent", "config"},
    "config": TOP | {"core", "runtime", "templates", "agent"},
    "runtime": TOP | {"core", "agent", "templates"},
    "templates": TOP | {"core", "agent"},
    "agent": TOP | {"core", "runtime", "templates"},
    "core": TOP,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}


def resolve(name: str) -> str | None:
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


class Imports(ast.NodeVisitor):
    def __init__(self) -> None:
        self.found: set[tuple[str, int]] = set()

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            for alias in node.names:
                self._add(f"{node.module}.{alias.name}", node.lineno)

    def _add(self, name: str, line: int) -> None:
        if name.split(".")[0] == "sandboxd":
            target = resolve(name)
            if target:
                self.found.add((target, line))


def imports_of(module: str) -> set[tuple[str, int]]:
    v = Imports()
    v.visit(ast.parse(MODULES[module].read_text()))
    return {(t, line) for t, line in v.found if t != module}


def package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


GRAPH = {m: imports_of(m) for m in MODULES}


def test_no_module_imports_a_layer_above_its_own():
    wrong = [f"{m}:{line} imports {t}" for m, found in sorted(GRAPH.items()) for t, line in sorted(found)
             if package(t) in FORBIDDEN.get(package(m), set())]
    assert wrong == []


def test_no_import_cycles():
    edges = {m: {t for t, _ in found if not m.startswith(t + ".")} for m, found in GRAPH.items()}
    cycles, index, low, stack, on_stack = [], {}, {}, [], set()

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for m in sorted(edges):
        if m not in index:
            visit(m)
    assert cycles == []


def test_type_only_imports_do_not_count_and_imports_inside_functions_do():
    v = Imports()
    v.visit(ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sandboxd.api.app\n"
                      "def f():\n    from sandboxd.core import lifecycle\n"))
    assert {t for t, _ in v.found} == {"sandboxd.core.lifecycle"}

"""No import circles in src/threadline: each module's imports form a graph without cycles.

Every import statement is an edge: module level, inside functions (deferred imports hide a
circle from Python, not from the design), and inside `if TYPE_CHECKING:`. Type-only imports
are not runtime edges, but each type-only circle this test once let through was a real
layering inversion: a lower module written against an upper module's class
(`context.incremental` against the renderer's pass, `composition` against `Runtime`, the
email receiver against `EmailChannel`). The lower module now declares the Protocol it needs
(`incremental.RenderPass`, `composition.Host`, `email_inbound.Mailbox`), so no exception
is needed and none is made."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "threadline"


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it stands (see the module docstring)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the package modules it imports (of the package `PACKAGE` under `src`)."""
    files = {_module_name(p, src): p for p in (src / PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                prefix = node.module or ""
                targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                # A package's own __init__ and the modules it contains are not a circle.
                inside = target in (mod, PACKAGE) or mod.startswith(target + ".")
                if target and not inside:
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, todo = work[-1]
            if todo:
                nxt = todo.pop()
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_src_has_no_import_cycles() -> None:
    graph = import_graph()
    assert "threadline.runtime" in graph and graph["threadline.runtime"]
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_check_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_deferred_and_type_only_imports_count(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .high import High\n"
    )
    (pkg / "high.py").write_text("def run() -> None:\n    from . import low\n")
    (pkg / "apart.py").write_text("import threadline.low\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.apart"] == {f"{PACKAGE}.low"}
    assert cycles(graph) == [[f"{PACKAGE}.high", f"{PACKAGE}.low"]]


def test_context_knows_no_agent_and_replay_only_the_reducer() -> None:
    graph = import_graph()
    for mod, targets in graph.items():
        if mod.startswith("threadline.context"):
            assert "threadline.agent" not in targets, mod
            assert "threadline.runtime" not in targets, mod
            assert not any(t.startswith("threadline.stores") for t in targets), mod
    assert not {"threadline.runtime", "threadline.context"} & graph["threadline.replay"]
    assert "threadline.reducer" in graph["threadline.replay"]
    assert not any(t.startswith("threadline.context") for t in graph["threadline.replay"])

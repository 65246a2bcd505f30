"""The package's layers (CONTRIBUTING.md, "Layout"): libraries → stages → cli, and no import cycle, counting
imports inside functions too (type-checking-only imports aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import smfa

ROOT = Path(smfa.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = ["smfa", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph() -> dict[str, set[str]]:
    """module → the smfa modules it imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}

    def owner(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            edges |= {t for t in map(owner, targets) if t and t != name}
        graph[name] = edges
    return graph


def test_the_import_graph_has_no_cycle() -> None:
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_libraries_import_no_stage_and_nothing_imports_the_cli() -> None:
    graph = _import_graph()
    entry_points = {"smfa.__main__", "smfa.cli.__main__"}
    bad = [f"{m} imports {t}" for m, targets in graph.items() for t in targets
           if (t.startswith("smfa.cli") and not m.startswith("smfa.cli") and m not in entry_points)
           or (t.startswith("smfa.stages") and not m.startswith(("smfa.stages", "smfa.cli")) and m not in entry_points)]
    assert not bad, "; ".join(sorted(bad))

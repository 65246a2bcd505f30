"""README.md stays true for a new user: it opens with the two commands of a fresh machine, and its "Use it from
Python" example compiles, imports names that exist and calls them with arguments their signatures take (the
example is not run: it trains)."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
# The README's two commands, verbatim (.ci/run runs the second one's test command).
DEMO_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . -c constraints-cpu.txt "
                "&& smfa demo --out smfa-demo")
TEST_COMMAND = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[dev]' -c constraints-cpu.txt "
                "&& python -m pytest -q")


def python_example(text: str) -> str:
    """The one ```python block of the README's "## Use it from Python" section."""
    section = re.search(r"^## Use it from Python\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Use it from Python' section"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.S | re.M)
    assert len(blocks) == 1, f"'## Use it from Python' holds {len(blocks)} python blocks, not 1"
    return blocks[0]


def imported_names(tree: ast.Module) -> dict[str, Any]:
    """Every name the example imports, imported: a module or name that does not exist fails here."""
    names: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.module and node.level == 0, "the example imports from smfa by absolute module names"
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name)
    return names


def test_the_readme_opens_with_the_two_commands() -> None:
    head = [line.strip() for line in README.read_text(encoding="utf-8").splitlines()[:30]]
    assert DEMO_COMMAND in head, "the install + demo command is not in README.md's first 30 lines"
    assert TEST_COMMAND in head, "the install + tests command is not in README.md's first 30 lines"


def test_the_python_example_compiles_imports_and_calls_what_exists() -> None:
    source = python_example(README.read_text(encoding="utf-8"))
    tree = ast.parse(source, filename="README.md")
    compile(tree, "README.md (Use it from Python)", "exec")
    names = imported_names(tree)
    assert any(getattr(obj, "__module__", "").startswith("smfa.stages") for obj in names.values())
    calls = [node for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names]
    assert calls, "the example calls none of the names it imports"
    for call in calls:
        assert not any(isinstance(a, ast.Starred) for a in call.args), "no *args: the call is checked as written"
        assert all(k.arg for k in call.keywords), "no **kwargs: the call is checked as written"
        # A config dataclass's fields and a stage's parameters: an unknown keyword or a missing argument fails.
        inspect.signature(names[call.func.id]).bind(*call.args, **{k.arg: None for k in call.keywords})

"""The shape of the code: small modules, no import cycles, task facts only in the task table, docs derived."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fiftyone_florence2.core.options import options_table
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.training.options import TRAIN_OPTIONS, options_doc

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*(ROOT / "fiftyone_florence2").glob("*.py"), *(ROOT / "operators").glob("*.py")])
# The demo picks the tasks it shows, and the random checkpoint's tokenizer learns the task questions.
TASK_LITERALS_ALLOWED = {"tasks.py", "demo.py", "random_checkpoint.py"}
MAX_LINES = 400


def _name(path: Path) -> str:
    return f"{path.parent.name}.{path.stem}"


def imports_of(path: Path) -> set[str]:
    """The project modules a module imports, inside functions too."""
    package = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package if node.level else (node.module or "").split(".")[0]
            if base not in ("fiftyone_florence2", "operators") and not node.level:
                continue
            module = node.module or ""
            if not node.level:
                module = module.split(".", 1)[1] if "." in module else ""
            targets = [module] if module else [alias.name for alias in node.names]
            found |= {f"{base}.{target.split('.')[0]}" for target in targets}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fiftyone_florence2.")}
    return {name for name in found if name != _name(path) and not name.endswith(".__init__")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first search, as the modules on it."""
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_counting_imports_inside_functions():
    graph = {_name(path): imports_of(path) for path in MODULES if path.stem != "__init__"}
    assert graph["fiftyone_florence2.cli"] >= {"fiftyone_florence2.demo"}  # the scan sees function-level imports
    assert cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({}, []),
        ({"a": {"b"}, "b": set()}, []),
        ({"a": {"a"}}, [["a", "a"]]),
        ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, [["b", "c", "b"]]),
    ],
)
def test_the_cycle_finder_itself(graph, expected):
    assert cycles(graph) == expected


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_no_module_over_400_lines(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", [p for p in MODULES if p.name not in TASK_LITERALS_ALLOWED], ids=_name)
def test_no_task_named_by_a_string_literal_outside_the_task_table(path):
    names = {task.name for task in TASKS} | {task.token for task in TASKS}
    literals = [
        node.value
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip() in names
    ]
    assert literals == []


def test_options_doc_is_generated_from_the_declarations():
    """docs/OPTIONS.md holds the options table exactly as the declarations render it."""
    doc = (ROOT / "docs" / "OPTIONS.md").read_text()
    assert doc.strip() == options_doc().strip(), (
        "regenerate with: python -m fiftyone_florence2.training.options > docs/OPTIONS.md"
    )


def test_readme_lists_every_option():
    readme = (ROOT / "README.md").read_text()
    table = options_table() + "\n" + options_table(TRAIN_OPTIONS)
    missing = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| `")]
    assert [name for name in missing if name not in readme] == []

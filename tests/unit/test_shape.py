"""The shape of the code: small modules, no import cycles, task facts only in the task table, docs derived."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from fiftyone_florence2.core.options import options_table
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.training.options import TRAIN_OPTIONS, options_doc

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted([*(ROOT / "fiftyone_florence2").rglob("*.py"), *(ROOT / "operators").rglob("*.py")])
# The demo picks the tasks it shows, and the random checkpoint's tokenizer learns the task questions.
TASK_LITERALS_ALLOWED = {"tasks.py", "demo.py", "random_checkpoint.py"}
MAX_LINES = 400


def _name(path: Path) -> str:
    """The dotted module name of ``path`` (a package's ``__init__`` is the package)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


_NAMES = {_name(path) for path in MODULES}


def _project_module(dotted: str) -> str | None:
    """The longest project module that ``dotted`` names or lies in (``a.b.c`` -> ``a.b`` when only that
    exists)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in _NAMES:
            return ".".join(parts[:end])
    return None


def imports_of(path: Path, project: bool = True) -> set[str]:
    """The modules a module imports, inside functions too: the project's (``project``), or the top-level
    names of every other package."""
    here = _name(path)
    package = here if path.stem == "__init__" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names] + [module]
            found |= set(names)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    if not project:
        return {name.split(".")[0] for name in found if _project_module(name) is None and name}
    modules = {_project_module(name) for name in found}
    return {name for name in modules if name and name != here}


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


# What each layer may import, besides the standard library. A module is ruled by the longest prefix of its
# name in the table. None: anything.
_HEAVY = {"fiftyone", "bson", "pymongo", "torch", "transformers", "numpy", "PIL", "cv2", "supervision",
          "accelerate", "peft", "safetensors", "tokenizers", "huggingface_hub", "tqdm", "psutil"}  # fmt: skip
LAYERS = {
    "fiftyone_florence2.core": {"project": {"fiftyone_florence2.core"}, "packages": set()},
    "fiftyone_florence2.engine": {
        "project": {"fiftyone_florence2.core", "fiftyone_florence2.engine"},
        "packages": {"torch", "transformers", "numpy", "PIL", "safetensors", "tokenizers", "huggingface_hub"},
    },
    "fiftyone_florence2.labels": {
        "project": {"fiftyone_florence2.core", "fiftyone_florence2.labels"},
        "packages": {"fiftyone", "numpy", "supervision"},
    },
    "fiftyone_florence2.runs": {
        "project": {"fiftyone_florence2.core", "fiftyone_florence2.engine", "fiftyone_florence2.labels",
                    "fiftyone_florence2.runs", "fiftyone_florence2.quiet"},
        "packages": {"fiftyone", "bson", "pymongo", "numpy", "PIL", "torch", "cv2", "huggingface_hub"},
    },
    "fiftyone_florence2.autolabel": {
        "project": {"fiftyone_florence2.core", "fiftyone_florence2.labels", "fiftyone_florence2.runs",
                    "fiftyone_florence2.autolabel"},
        "packages": {"fiftyone", "bson", "numpy", "matplotlib"},
    },
    "fiftyone_florence2.training": None,
    "fiftyone_florence2": None,  # the facade and the adapters (cli, app, demo)
    "operators": None,
}  # fmt: skip


def test_training_never_imports_the_autolabel_layer():
    training = [path for path in MODULES if _name(path).startswith("fiftyone_florence2.training")]
    assert training and [path for path in training if any(_layer(name) == "fiftyone_florence2.autolabel"
                                                          for name in imports_of(path))] == []  # fmt: skip


def _layer(name: str) -> str:
    return max((key for key in LAYERS if name == key or name.startswith(key + ".")), key=len)


def _standard(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_each_module_imports_only_what_its_layer_may(path):
    rule = LAYERS[_layer(_name(path))]
    if rule is None:
        return
    project = {name for name in imports_of(path) if _layer(name) not in rule["project"]}
    outside = {name for name in imports_of(path, project=False) if not _standard(name)} - rule["packages"]
    assert (project, outside) == (set(), set())


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("fiftyone_florence2.core.tasks", "fiftyone_florence2.core"),
        ("fiftyone_florence2.engine.runner", "fiftyone_florence2.engine"),
        ("fiftyone_florence2.training", "fiftyone_florence2.training"),
        ("fiftyone_florence2.cli", "fiftyone_florence2"),
        ("operators.form", "operators"),
    ],
)
def test_the_layer_of_a_module_is_its_longest_prefix(name, layer):
    assert _layer(name) == layer


def test_the_import_scan_sees_packages_and_project_modules():
    runner = ROOT / "fiftyone_florence2" / "engine" / "runner.py"
    assert {"torch", "transformers"} <= imports_of(runner, project=False)
    assert "fiftyone_florence2.core.tasks" in imports_of(runner)
    assert {"fiftyone_florence2.core", "fiftyone_florence2.engine"} >= {_layer(n) for n in imports_of(runner)}


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

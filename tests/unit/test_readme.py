"""The README's task table is the task table."""

from __future__ import annotations

import re
from pathlib import Path

from fiftyone_florence2.core.tasks import TASKS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_task_table_matches_the_task_table():
    text = README.read_text()
    table = re.search(r"<!-- task-table.*?-->\n(.*?)<!-- /task-table -->", text, re.S).group(1)
    rows = [[cell.strip().strip("`") for cell in line.strip("|").split("|")] for line in table.strip().splitlines()[2:]]
    assert rows == [[t.name, t.shown_token, t.input, t.label_type] for t in TASKS]


def test_readme_holds_the_two_commands():
    text = README.read_text()
    assert "bash scripts/test.sh" in text
    assert "florence2 demo" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def _stated(value: str):
    """A default as the README writes it, as a Python value; ``...`` where the prose describes it instead."""
    value = value.strip().removeprefix("default ").strip("`")
    words = {"True": True, "False": False, "off": None, "auto": "auto"}
    if value in words:
        return words[value]
    try:
        return float(value)
    except ValueError:
        return value if re.fullmatch(r"[a-z][a-z0-9_]*", value) else ...


def test_readme_states_each_options_default_as_declared():
    """Defaults written in the README's option lists are the declarations' (as the task table is the table)."""
    from fiftyone_florence2.core.options import OPTIONS
    from fiftyone_florence2.training.options import TRAIN

    text = README.read_text()
    checked = []
    for title, declared in (("Options", OPTIONS), ("Fine-tune", TRAIN)):
        for name, value in re.findall(r"`([a-z_]+)` \(([^;,)]*)", _section(text, title)):
            if name not in declared or (stated := _stated(value)) is ...:
                continue
            default = declared[name].default
            if stated == "auto":
                assert default in (None, "auto"), name
            elif isinstance(stated, float) and not isinstance(default, bool):
                assert default is not None and float(default) == stated, name
            else:
                assert stated == default, name
            checked.append(name)
    assert len(checked) >= 12, checked

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
    assert rows == [[t.name, t.token, t.input, t.label_type] for t in TASKS]


def test_readme_holds_the_two_commands():
    text = README.read_text()
    assert "bash scripts/test.sh" in text
    assert "florence2 demo" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci

"""The README's code blocks, and a runner that executes them in order as a reader would.

Run as ``python readme_blocks.py README RESULTS NOT_RUN_JSON`` in the directory the
blocks should see: each Python block in a fresh namespace, each ``florence2``
line of a bash block through the CLI's ``main``. Results go to RESULTS (JSON):
one entry per block, ``"ok"`` or the error.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
import traceback
from pathlib import Path

_BLOCK = re.compile(r"^```(python|bash)\n(.*?)^```", re.M | re.S)


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced python or bash block, in order."""
    return [(match.group(1), match.group(2)) for match in _BLOCK.finditer(markdown)]


def command_lines(code: str) -> list[str]:
    """A bash block's commands: continuations joined, comments and blank lines dropped."""
    joined = code.replace("\\\n", " ")
    lines = [" ".join(shlex.split(line, comments=True)) for line in joined.splitlines()]
    return [line for line in lines if line]


def block_name(index: int, language: str, code: str) -> str:
    first = next(line for line in code.splitlines() if line.strip() and not line.startswith(("import ", "from ")))
    return f"block {index} ({language}): {first.strip()[:60]}"


def run_block(language: str, code: str, not_run: set[str]) -> None:
    """Runs one block; a florence2 line that exits non-zero raises."""
    if language == "python":
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
        return
    from fiftyone_florence2.cli import main

    for line in command_lines(code):
        if line.startswith("florence2 ") and line not in not_run:
            status = main(shlex.split(line)[1:])
            if status != 0:
                raise RuntimeError(f"{line!r} exited with status {status}")


def run_readme(readme: Path, not_run: set[str]) -> dict[str, str]:
    results = {}
    for index, (language, code) in enumerate(code_blocks(readme.read_text())):
        started = time.monotonic()
        try:
            run_block(language, code, not_run)
            results[block_name(index, language, code)] = "ok"
            print(f"{block_name(index, language, code)}: {time.monotonic() - started:.1f} s", flush=True)
        except Exception:
            results[block_name(index, language, code)] = traceback.format_exc(limit=-3)
    return results


if __name__ == "__main__":
    readme, out, not_run = sys.argv[1:4]
    Path(out).write_text(json.dumps(run_readme(Path(readme), set(json.loads(not_run))), indent=1))

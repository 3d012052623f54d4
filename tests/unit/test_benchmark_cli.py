"""Each benchmark's command line: a whole ``--help``, examples that parse, and no file written unless asked."""

from __future__ import annotations

import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import report  # noqa: E402

MODULES = [
    "run",
    "tiles",
    "video",
    "embeddings",
    "preprocess",
    "form_latency",
    "train_speed",
    "train_tiny",
    "autolabel",
]


class _Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def _parse(monkeypatch, module: str, argv: list[str]):
    """The namespace ``module``'s own parser makes of ``argv``; the benchmark itself never runs."""
    made = report.parser

    def parser(prog, doc):
        p = made(prog, doc)
        p.parse_args = lambda args=None: (_ for _ in ()).throw(_Parsed(type(p).parse_args(p, args)))
        return p

    monkeypatch.setattr(report, "parser", parser)
    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(_Parsed) as parsed:
        main(argv)
    return parsed.value.namespace


def _examples(module: str) -> list[list[str]]:
    doc = importlib.import_module(f"benchmarks.{module}").__doc__
    lines = re.findall(rf"^python -m benchmarks\.{module}\b(.*)$", doc, re.M)
    return [shlex.split(line, comments=True) for line in lines]


@pytest.mark.parametrize("module", MODULES)
def test_help_shows_the_whole_description(module, capsys):
    with pytest.raises(SystemExit):
        importlib.import_module(f"benchmarks.{module}").main(["--help"])
    printed = " ".join(capsys.readouterr().out.split())
    doc = importlib.import_module(f"benchmarks.{module}").__doc__
    first_paragraph = " ".join(doc.split("\n\n")[0].split())
    assert first_paragraph in printed and "--write-benchmarks" in printed


@pytest.mark.parametrize(("module", "example"), [(m, e) for m in MODULES for e in _examples(m)])
def test_docstring_examples_parse_and_write_no_file(module, example, monkeypatch):
    assert _parse(monkeypatch, module, example).output is None


@pytest.mark.parametrize(
    ("module", "argv", "output"),
    [
        ("train_tiny", ["--write-benchmarks"], str(ROOT / "BENCHMARKS.md")),
        ("run", ["--quick", "--write-benchmarks"], str(ROOT / "BENCHMARKS.md")),
        ("tiles", ["--output", "elsewhere.md"], "elsewhere.md"),
        ("video", ["--output", ""], ""),
    ],
)
def test_the_report_file_is_written_only_when_asked(module, argv, output, monkeypatch):
    assert _parse(monkeypatch, module, argv).output == output

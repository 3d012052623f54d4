"""The benchmark suite runs end to end in quick mode and reports every figure. Timings are not checked."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import run as bench  # noqa: E402
from benchmarks.report import write_section  # noqa: E402

MEASURES = [
    "apply_model vs the model's own generate",
    "3 tasks in one run vs separate runs",
    "speed-up over per-sample 3-beam approach",
    "images per second (ours, end to end)",
    "labels written per second (label_samples)",
    "memory over 48 images (apply_model)",
]


@pytest.fixture(scope="module")
def quick_run(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = ["--quick", "--checkpoint", str(tiny_checkpoint), "--images", "4", "--batch-size", "2",
            "--new-tokens", "4", "--memory-images", "48", "--write-samples", "24", "--no-warmup",
            "--workdir", str(out), "--output", str(out / "BENCHMARKS.md")]  # fmt: skip
    return out, args


def test_quick_mode_prints_the_table_and_writes_the_markdown(quick_run, capsys):
    out, args = quick_run
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("measure ") :]
    for measure in MEASURES:
        assert measure in table
    assert "FAIL" not in table.split("memory over")[0]  # quick mode gives no verdict on base-size targets

    markdown = (out / "BENCHMARKS.md").read_text()
    assert markdown.startswith("# Benchmarks\n")
    assert "<!-- benchmark-run: cpu-quick -->" in markdown and "<!-- /benchmark-run: cpu-quick -->" in markdown
    assert "| measure | ours | reference | ratio | target | result |" in markdown
    for measure in MEASURES:
        assert f"| {measure} |" in markdown
    for heading in ("### Machine and versions", "### Settings", "### Where our time goes", "### Conditions"):
        assert heading in markdown
    for key in ("**CPU**", "**RAM**", "**GPU**", "**python**", "**torch**", "**transformers**", "**fiftyone**"):
        assert key in markdown

    raw = json.loads((out / "results-cpu-quick.json").read_text())
    speed = raw["results"]["speed"]
    assert speed["images"] == 4 and speed["chunks"] == 2
    assert speed["labelled"] == {"bench_ours": 4, "bench_baseline": 4}
    assert len(raw["results"]["memory"]["rss_mib"]) == 48 // 16
    assert set(raw["results"]["writes"]["paths"]) == {"label_samples", "apply_model", "sample.save"}


def test_a_run_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "B.md"
    write_section(path, "cpu-full", "## CPU full\n\nalpha-figures")
    write_section(path, "cuda-full", "## GPU full")
    write_section(path, "cpu-full", "## CPU full\n\nomega-figures")
    text = path.read_text()
    assert text.count("# Benchmarks\n") == 1
    assert "omega-figures" in text and "alpha-figures" not in text and "## GPU full" in text

"""The GPU benchmark runs where FiftyOne cannot be imported (the GPU machine has none).

It is run in quick mode on the CPU, in a subprocess whose ``import fiftyone``
fails, so that the claim "the model layer needs no FiftyOne" cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_BLOCKED = """
import sys
sys.modules["fiftyone"] = None  # any import of fiftyone now raises ImportError
sys.argv = ["benchmarks.gpu"] + sys.argv[1:]
import runpy
runpy.run_module("benchmarks.gpu", run_name="__main__")
"""


def _run_blocked(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _BLOCKED, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip


_IMPORT_ALL = """
import importlib, pkgutil, sys
sys.modules["fiftyone"] = None
import fiftyone_florence2.core as core, fiftyone_florence2.engine as engine
from fiftyone_florence2.runner import Florence2Runner  # the import path earlier releases gave it
for package in (core, engine):
    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
"""


def test_the_core_and_the_model_layer_import_without_fiftyone():
    code = _IMPORT_ALL
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_quick_mode_times_both_paths_without_fiftyone(tmp_path):
    done = _run_blocked("--quick", "--device", "cpu", "--batch-sizes", "1", "--beams", "1", "--tasks",
                        "caption,detection", "--output-dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu.json").read_text())
    rows = report["rows"]
    # 1 batch size x 1 beam count x 2 tasks x 2 paths, each measured
    assert len(rows) == 4
    assert {row["path"] for row in rows} == {"runner", "generate"}
    assert all(row["images_per_s"] and row["images_per_s"] > 0 for row in rows), rows
    table = (tmp_path / "gpu.md").read_text()
    assert "| caption | 1 |" in table and "| detection | 1 |" in table
    assert report["device"].startswith("cpu")


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--dtypes", "fp8"], "unknown dtype 'fp8'"),
        (["--budget-s", "0", "--quick", "--device", "cpu", "--batch-sizes", "1"], None),
    ],
)
def test_flags(tmp_path, flags, error):
    done = _run_blocked(*flags, "--output-dir", str(tmp_path))
    if error:
        assert done.returncode == 2 and error in done.stderr
    else:
        assert done.returncode == 0, done.stderr[-3000:]
        rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
        assert rows and all(row["note"] == "not run: time budget spent" for row in rows)

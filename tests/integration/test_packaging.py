"""A regular (non-editable) install holds the whole package: every layer folder and the shipped model."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

import pytest
from helpers import ROOT

PACKAGE = ROOT / "fiftyone_florence2"


@pytest.mark.slow
def test_the_wheel_holds_every_folder_of_the_package_and_the_shipped_model(tmp_path):
    source = tmp_path / "source"  # a copy, so that no earlier build's leftovers (build/) fill the gaps
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(PACKAGE, source / PACKAGE.name, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "wheel")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(ROOT).as_posix() for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}
    assert len(modules) > 40
    assert modules <= names, sorted(modules - names)
    assert {"fiftyone_florence2/seeing_tiny/model.safetensors", "fiftyone_florence2/seeing_tiny/config.json"} <= names

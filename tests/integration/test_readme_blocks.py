"""Every code block of the README runs as written, top to bottom, on a tiny offline checkpoint.

The default checkpoint's Hub id resolves, offline, to the tiny random
checkpoint placed in a Hugging Face cache of the test's own, as a downloaded
one would be. The dataset is named as the README names it, with the fields its
blocks read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_image
from helpers.readme_blocks import code_blocks, command_lines

from fiftyone_florence2.core.checkpoints import DEFAULT_CHECKPOINT

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
HUB_MARK = "# needs the Hugging Face Hub"
# Lines the test does not run, each with its reason.
NOT_RUN = {
    "hf download florence-community/Florence-2-base-ft --local-dir ./Florence-2-base-ft": "downloads from the Hub",
    "florence2 app my-images": "serves until Ctrl-C; tests/integration/test_app_command.py runs it",
}
# Bash lines that install or set up rather than use the product: the README's two commands and the install.
SETUP = ("python3 -m venv", "pip install", "git clone", "bash scripts/test.sh", ".venv/bin/florence2 app",
         "zoo=", "mkdir", "export ", "fiftyone plugins")  # fmt: skip
COMMIT = "0" * 40


def _hub_cache(checkpoint: Path, cache: Path) -> None:
    """The checkpoint where the Hugging Face cache keeps a download of the default Hub id."""
    repo = cache / f"models--{DEFAULT_CHECKPOINT.replace('/', '--')}"
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


def _my_images(folder: Path):
    """The README's dataset: boxes in ground_truth, captions in captions, a few reviewed, one of those for
    validation."""
    import fiftyone as fo

    from fiftyone_florence2.scenes import draw_scenes

    dataset = fo.Dataset("my-images", persistent=True)
    scenes = draw_scenes(6, seed=0)
    samples = []
    for i in range(6):  # val_fraction 0.1 holds out round(0.6) = 1
        box = fo.Detection(label="car", bounding_box=[0.05 * i, 0.2, 0.3, 0.4])
        tags = (["reviewed"] if i < 4 else []) + (["val"] if i == 0 else [])
        path = str(folder / f"img{i}.png")  # drawn shapes: the README's seeing-model block labels them
        scenes[i].image.save(path)
        caption = fo.Classification(label=f"a car at {i}")
        samples.append(
            fo.Sample(filepath=path, ground_truth=fo.Detections(detections=[box]), captions=caption, tags=tags)
        )
    dataset.add_samples(samples)
    return dataset


def test_lines_the_test_does_not_run_are_marked_or_set_up():
    lines = [line for language, code in code_blocks(README.read_text()) if language == "bash"
             for line in command_lines(code)]  # fmt: skip
    marked = {" ".join(line.split(HUB_MARK)[0].split()) for line in README.read_text().splitlines() if HUB_MARK in line}
    assert marked and marked <= set(NOT_RUN)
    unrun = [line for line in lines if not line.startswith("florence2 ")]
    assert all(line in NOT_RUN or line.startswith(SETUP) for line in unrun), unrun


@pytest.mark.slow
def test_every_readme_block_runs_as_written(tiny_checkpoint, tmp_path):
    import fiftyone as fo

    for name in ("my-images", "photos"):
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    for i in range(3):
        write_image(work / "photos" / f"p{i}.jpg", size=(56, 40), seed=10 + i)
    (tmp_path / "data").mkdir()
    dataset = _my_images(tmp_path / "data")
    _hub_cache(tiny_checkpoint, tmp_path / "hub")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}  # fmt: skip
    results = tmp_path / "results.json"
    runner = ROOT / "tests" / "helpers" / "readme_blocks.py"
    try:
        done = subprocess.run([sys.executable, str(runner), str(README), str(results), json.dumps(list(NOT_RUN))],
                              cwd=work, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        outcome = json.loads(results.read_text())
        failed = {name: error for name, error in outcome.items() if error != "ok"}
        assert not failed, "\n".join(f"{name}\n{error}" for name, error in failed.items())
        assert len(outcome) == len(code_blocks(README.read_text()))
    finally:
        dataset.delete()
        if fo.dataset_exists("photos"):
            fo.delete_dataset("photos")


USER_DOCS = ["README.md", "BENCHMARKS.md", "docs/APP.md", "docs/REFERENCE.md", "docs/ZOO.md"]
# Commands that do not work as printed, placeholders a user cannot run, and notes about how the figures were made.
NOT_FOR_USERS = ["<owner>", "huggingface-cli", "pip install fiftyone-florence2", "local changes", "re-rendered",
                 "rendered again", "tests/test_", "was not lent", "fiftyone app launch florence2-demo"]  # fmt: skip


@pytest.mark.parametrize("path", USER_DOCS)
@pytest.mark.parametrize("phrase", NOT_FOR_USERS)
def test_user_documents_hold_no_broken_command_or_team_note(path, phrase):
    text = re.sub(r"<!--.*?-->", "", (ROOT / path).read_text(), flags=re.S)  # comments are for maintainers
    assert phrase not in text


def test_the_readme_counts_the_plugins_operators():
    import yaml

    count = len(yaml.safe_load((ROOT / "fiftyone.yml").read_text())["operators"])
    words = {3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}
    for document in (README, ROOT / "docs" / "APP.md"):
        text = " ".join(document.read_text().split())
        assert f"with {words[count]} operators" in text or f"adds {words[count]} operators" in text, document

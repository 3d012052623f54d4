"""Which weights labelled: the fingerprint of a checkpoint directory, the App's runner cache reloading a
checkpoint whose files changed, and the fingerprint in every labelling run's record."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from fiftyone_florence2.core.checkpoints import CheckpointError, weights_fingerprint, weights_stat
from fiftyone_florence2.engine import runner as runner_module
from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint
from fiftyone_florence2.engine.runner import Florence2Runner

ROOT = Path(__file__).resolve().parents[2]
URI = f"{yaml.safe_load((ROOT / 'fiftyone.yml').read_text())['name']}/apply_florence2"
FAST = {"task": "caption", "num_beams": 1, "max_new_tokens": 2, "batch_size": 2}
WEIGHTS = "model.safetensors"


def _rewrite_keeping_size_and_mtime(path: Path, content: bytes) -> None:
    """Writes ``content`` over ``path`` in place and puts its mtime back: what a careless copy can leave."""
    before = path.stat()
    assert len(content) == before.st_size
    with open(path, "r+b") as f:
        f.write(content)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    _rewrite_keeping_size_and_mtime(path, bytes(data))


# (what is done to a copy of a checkpoint, whether its fingerprint changes, whether its stat changes)
CHANGES = [
    ("nothing", lambda d: None, False, False),
    ("mtime touched", lambda d: os.utime(d / WEIGHTS, ns=(1, 1)), False, True),
    ("a weight byte, size and mtime kept", lambda d: _flip_last_byte(d / WEIGHTS), True, True),
    ("config.json edited", lambda d: (d / "config.json").write_text((d / "config.json").read_text() + " "), True, True),
    ("training.json added", lambda d: (d / "training.json").write_text("{}"), False, False),
    ("a checkpoints/ folder added", lambda d: (d / "checkpoints" / "checkpoint-1").mkdir(parents=True), False, False),
    ("weights renamed into place", lambda d: os.replace(shutil.copy(d / WEIGHTS, d / "new"), d / WEIGHTS), False, True),
    ("weights removed", lambda d: (d / WEIGHTS).unlink(), True, True),
]


@pytest.mark.parametrize(("change", "fingerprint_changes", "stat_changes"), [c[1:] for c in CHANGES],
                         ids=[c[0] for c in CHANGES])  # fmt: skip
def test_the_fingerprint_follows_the_files_that_decide_answers(
    tiny_checkpoint, tmp_path, change, fingerprint_changes, stat_changes
):
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ck"))
    fingerprint, stat = weights_fingerprint(copy), weights_stat(copy)
    change(copy)
    assert (weights_fingerprint(copy) != fingerprint) == fingerprint_changes
    assert (weights_stat(copy) != stat) == stat_changes


@pytest.mark.parametrize("name", ["florence-community/Florence-2-base-ft", "", "/no/such/directory"])
def test_a_hub_id_or_missing_directory_has_no_fingerprint(name):
    assert weights_fingerprint(name) is None and weights_stat(name) is None


def test_an_empty_directory_has_a_fingerprint_of_its_own(tmp_path, tiny_checkpoint):
    assert weights_fingerprint(tmp_path) == weights_fingerprint(tmp_path / ".") != weights_fingerprint(tiny_checkpoint)


def test_a_checkpoint_that_changes_while_it_loads_is_refused(tiny_checkpoint, tmp_path, monkeypatch):
    copy = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ck"))
    real = runner_module.weights_fingerprint

    def fingerprint_then_a_writer_strikes(path):
        value = real(path)
        _flip_last_byte(copy / WEIGHTS)
        return value

    monkeypatch.setattr(runner_module, "weights_fingerprint", fingerprint_then_a_writer_strikes)
    with pytest.raises(CheckpointError, match="changed while it loaded"):
        Florence2Runner(str(copy), device="cpu")


@pytest.fixture(scope="module")
def runners():
    """The plugin's runner cache, as the App server and delegated workers use it (emptied)."""
    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(ROOT)
    try:
        operator = foo.get_operator(URI)
        module = sys.modules[type(operator).__module__.rsplit(".", 1)[0]].runners
        yield module
        module.clear()
    finally:
        fo.config.plugins_dir = previous


def _weights_agree(runner, directory: Path) -> bool:
    """Whether the runner holds the weights of the checkpoint in ``directory`` (every tensor both name)."""
    files, loaded = load_file(str(directory / WEIGHTS)), runner.model.state_dict()
    shared = set(files) & set(loaded)
    return len(shared) > 10 and all(np.array_equal(files[name], loaded[name].numpy()) for name in shared)


def _fine_tune_again(path: Path, other: Path) -> None:
    """What training with ``overwrite`` does: the directory goes, and a new checkpoint is written there."""
    shutil.rmtree(path)
    shutil.copytree(other, path)


def _replace_in_place(path: Path, other: Path) -> None:
    """Copies ``other``'s files over ``path``'s in place, each keeping its size and mtime."""
    for source in other.iterdir():
        _rewrite_keeping_size_and_mtime(path / source.name, source.read_bytes())


# (how the directory changes between two labelling runs, whether the second run loads again)
RELABELS = [
    ("unchanged", lambda path, other: None, False),
    ("fine-tuned again with overwrite", _fine_tune_again, True),
    ("replaced in place, sizes and mtimes kept", _replace_in_place, True),
]


@pytest.mark.parametrize(("change", "reloads"), [r[1:] for r in RELABELS], ids=[r[0] for r in RELABELS])
def test_the_app_labels_with_the_weights_now_in_the_directory(
    runners, dataset, tiny_checkpoint, tmp_path, monkeypatch, change, reloads
):
    path = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ck"))
    other = build_random_checkpoint(tmp_path / "other", "tiny", seed=1)
    runners.clear()
    loads = []
    real = runners.load_runner
    monkeypatch.setattr(runners, "load_runner", lambda config: loads.append(real(config)) or loads[-1])
    first = foo.execute_operator(URI, ctx={"dataset": dataset, "params": {"model": str(path), "label_field": "a",
                                                                          **FAST}}).result  # fmt: skip
    change(path, other)
    second = foo.execute_operator(URI, ctx={"dataset": dataset, "params": {"model": str(path), "label_field": "b",
                                                                           **FAST}}).result  # fmt: skip
    assert len(loads) == (2 if reloads else 1)
    assert len(runners.loaded_keys()) == 1  # the stale runner is gone
    assert _weights_agree(loads[-1], path) and _weights_agree(loads[-1], tiny_checkpoint) != reloads
    assert loads[-1].weights_sha256 == weights_fingerprint(path)
    dataset.reload()
    recorded = [dataset.get_run_info(r["run_key"]).config.weights_sha256 for r in (first, second)]
    expected = weights_fingerprint(other) if reloads else recorded[0]
    assert recorded[1] == expected and (recorded[0] != recorded[1]) == reloads
    assert dataset.count("a") == dataset.count("b") == len(dataset)


def test_a_hub_checkpoint_records_the_commit_its_files_came_from(tiny_checkpoint, tmp_path, monkeypatch, dataset):
    import huggingface_hub.constants

    from fiftyone_florence2.runs.labelling import label_samples
    from fiftyone_florence2.runs.model import Florence2Model, Florence2ModelConfig
    from fiftyone_florence2.runs.records import short_weights

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-florence2"
    shutil.copytree(tiny_checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = Florence2ModelConfig({"task": "caption", "model": "someone/tiny-florence2", "max_new_tokens": 2})
    model = Florence2Model(config)
    assert (model.runner.revision, model.runner.weights_sha256) == (commit, None)
    summary = label_samples(dataset, model, "cap")
    record = dataset.get_run_info(summary.run_key).config
    assert (record.revision, record.weights_sha256, short_weights(record)) == (commit, None, "revision 0123456789ab")

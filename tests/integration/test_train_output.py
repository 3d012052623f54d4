"""Fine-tuning's output directory: only what a run wrote is replaced, and only once its successor is complete;
one run at a time; refusals before any weights load, in each route's own words."""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import pytest
from helpers import write_image

import fiftyone_florence2.training.trainer as training
from fiftyone_florence2 import load_model, train
from fiftyone_florence2.cli import main
from fiftyone_florence2.core.errors import OptionError, for_route
from fiftyone_florence2.core.swap import STAGED_MODEL, finish_swap
from fiftyone_florence2.training.output import (
    MANIFEST,
    STAGING,
    OutputDirLock,
    check_output_dir,
    locked_output,
)

FAST = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "progress": False}


@pytest.fixture
def boxes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    ds = fo.Dataset()
    box = fo.Detection(label="car", bounding_box=[0.1, 0.2, 0.3, 0.4])
    ds.add_samples(
        [
            fo.Sample(filepath=write_image(images / f"b{i}.png", size=(64, 64), seed=i),
                      ground_truth=fo.Detections(detections=[box.copy()]))
            for i in range(4)
        ]
    )  # fmt: skip
    yield ds
    ds.delete()


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture
def finished(boxes, tiny_checkpoint, tmp_path) -> Path:
    """An output directory holding a finished run's checkpoint, and the user's notes beside it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    train(boxes, output_dir=str(out), model=str(tiny_checkpoint), save_steps=1, **FAST)
    return out


def test_overwrite_replaces_only_what_the_last_run_wrote(boxes, tiny_checkpoint, finished):
    first = _bytes(finished)
    train(boxes, output_dir=str(finished), model=str(tiny_checkpoint), overwrite=True, seed=3, **FAST)
    second = _bytes(finished)
    assert second["notes.txt"] == b"mine" and second["model.safetensors"] != first["model.safetensors"]
    assert not (finished / STAGING).exists()
    assert load_model("<OD>", model=str(finished)).runner.checkpoint == str(finished)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: (d / "checkpoints").mkdir(), "holds checkpoints, which no training run wrote"),
        (lambda d: (d / "training.json").write_text("{}"), "holds training.json, which no training run wrote"),
        (lambda d: (d / "config.json").write_text("{}"), "holds config.json, which no training run wrote"),
    ],
    ids=["project-checkpoints-folder", "stray-training-json", "foreign-config"],
)
def test_files_no_run_wrote_are_named_and_kept(boxes, tiny_checkpoint, tmp_path, make, message):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("mine")
    make(project)
    before = sorted(os.listdir(project))
    with pytest.raises(ValueError, match=message):
        train(boxes, output_dir=str(project), model=str(tiny_checkpoint), overwrite=True, **FAST)
    assert sorted(os.listdir(project)) == before and (project / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("where", ["images", "parent", "images-with-training-json"])
def test_a_folder_holding_the_media_is_never_trained_into(boxes, tiny_checkpoint, tmp_path, where):
    images = tmp_path / "images"
    if where == "images-with-training-json":
        (images / "training.json").write_text("{}")
    out = tmp_path if where == "parent" else images
    before = sorted(os.listdir(images))
    with pytest.raises(ValueError, match="holds the images being trained on"):
        train(boxes, output_dir=str(out), model=str(tiny_checkpoint), overwrite=True, **FAST)
    assert sorted(os.listdir(images)) == before


@pytest.mark.parametrize(
    ("route", "flag"), [("python", "overwrite=True"), ("cli", "--overwrite"), ("app", '"Overwrite" ticked')]
)
def test_refusals_name_the_routes_own_controls(finished, route, flag):
    with pytest.raises(OptionError) as refused:
        check_output_dir(str(finished), overwrite=False, resume=False)
    assert f"pass {flag} to replace it" in for_route(refused.value, route)


@pytest.mark.parametrize("under", ["a-file", "a-file/deeper/still"])
def test_an_output_dir_under_a_file_is_a_one_line_refusal(boxes, tiny_checkpoint, tmp_path, capsys, under):
    (tmp_path / "a-file").write_text("x")
    boxes.persistent = True
    args = ["train", "--dataset", boxes.name, "--output-dir", str(tmp_path / under), "--model", str(tiny_checkpoint)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--output-dir" in err and "a-file" in err and err.count("\n") == 1


def _failing_train(*args, **kwargs):
    raise RuntimeError("the run died half way")


@pytest.mark.parametrize("failure", ["crash", "nan", "bad-device"])
def test_a_failed_run_leaves_the_previous_checkpoint_loadable(boxes, tiny_checkpoint, finished, monkeypatch, failure):
    before = _bytes(finished)
    options = {"output_dir": str(finished), "model": str(tiny_checkpoint), "overwrite": True, **FAST}
    if failure == "crash":
        monkeypatch.setattr(training.FlorenceTrainer, "training_step", _failing_train)
        expected = (RuntimeError, "half way")
    elif failure == "nan":
        real = training.FlorenceTrainer.compute_loss
        monkeypatch.setattr(training.FlorenceTrainer, "compute_loss", lambda *a, **k: real(*a, **k) * float("nan"))
        expected = (training.TrainingDiverged, "stopped being finite")
    else:
        options["device"] = "cuda:1"
        expected = (ValueError, "CUDA_VISIBLE_DEVICES")
    with pytest.raises(expected[0], match=expected[1]):
        train(boxes, **options)
    assert _bytes(finished) == before
    assert load_model("<OD>", model=str(finished)).runner.checkpoint == str(finished)
    boxes.reload()
    statuses = [boxes.get_run_info(key).config.status for key in boxes.list_runs()]
    assert sorted(statuses) == (["completed"] if failure == "bad-device" else ["completed", "failed"])
    if failure == "nan":
        assert not (finished / STAGING).exists()  # no non-finite checkpoint to resume from


def test_a_swap_cut_short_is_finished_by_the_next_run(boxes, tiny_checkpoint, finished, monkeypatch):
    calls = []
    real = os.replace

    def replace_then_die(source, target):
        calls.append(Path(target).name)
        if Path(target).name == "model.safetensors":
            raise KeyboardInterrupt  # as a kill between two renames
        real(source, target)

    monkeypatch.setattr("fiftyone_florence2.training.output.os.replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(boxes, output_dir=str(finished), model=str(tiny_checkpoint), overwrite=True, seed=5, **FAST)
    monkeypatch.setattr("fiftyone_florence2.training.output.os.replace", real)
    assert "config.json" in calls and (finished / "model.safetensors").exists()
    assert (finished / STAGING).exists()  # cut short: the new weights wait in the staging directory
    staged = (finished / STAGING / STAGED_MODEL / "model.safetensors").read_bytes()
    # Loading finishes the swap first: the directory loads as the new run's checkpoint, whole.
    assert load_model("<OD>", model=str(finished)).runner.checkpoint == str(finished)
    assert not (finished / STAGING).exists() and (finished / MANIFEST).exists()
    assert (finished / "model.safetensors").read_bytes() == staged
    finish_swap(finished)  # nothing left to do, and no harm in asking again
    assert load_model("<OD>", model=str(finished)).runner.checkpoint == str(finished)


@pytest.mark.parametrize("route", ["python", "cli"])
def test_a_second_run_into_a_locked_directory_is_refused(boxes, tiny_checkpoint, finished, capsys, route):
    holder = r"output.dir '.*' is being written by training run 'florence2_train_other_run' \(host " + re.escape(
        f"{socket.gethostname()}, pid {os.getpid()}"
    )
    before = _bytes(finished)
    with locked_output(finished, "florence2_train_other_run"):
        if route == "python":
            with pytest.raises(ValueError, match=holder):
                train(boxes, output_dir=str(finished), model=str(tiny_checkpoint), overwrite=True, **FAST)
        else:
            boxes.persistent = True
            args = ["--dataset", boxes.name, "--output-dir", str(finished), "--model", str(tiny_checkpoint)]
            assert main(["train", *args, "--overwrite", "--max-steps", "2"]) == 2
            assert re.search("--" + holder, capsys.readouterr().err)
    assert _bytes(finished) == before


def test_a_lock_whose_holder_is_dead_is_taken_over(boxes, tiny_checkpoint, finished):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = OutputDirLock(finished.resolve(), "florence2_train_killed")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    lock._me = lambda: {"host": socket.gethostname(), "pid": int(dead.stdout), "heartbeat": now}
    lock.acquire()
    lock._stop.set()  # the dead run's heartbeat stops with it
    result = train(boxes, output_dir=str(finished), model=str(tiny_checkpoint), overwrite=True, **FAST)
    assert result.steps == 2


def _refuse_weights(*args, **kwargs):
    raise AssertionError("weights were loaded")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lora": True}, "lora was False and is now True"),
        ({"freeze_vision": True}, "freeze_vision was False and is now True"),
        ({"model": "other"}, "model was"),
    ],
)
def test_a_resume_that_changes_the_weights_options_is_refused_before_loading(
    boxes, tiny_checkpoint, finished, monkeypatch, tmp_path, change, message
):
    if change.get("model") == "other":
        change = {"model": str(finished)}  # another checkpoint that exists: the finished run's own
    monkeypatch.setattr(training, "Florence2Runner", _refuse_weights)
    options = {"output_dir": str(finished), "model": str(tiny_checkpoint), "resume": True, **FAST, **change}
    with pytest.raises(ValueError, match=message):
        train(boxes, **options)


def test_a_resume_with_a_new_schedule_goes_on_and_notes_it(boxes, tiny_checkpoint, finished):
    options = {**FAST, "max_steps": 3, "learning_rate": 2e-3, "save_steps": 1}
    result = train(boxes, output_dir=str(finished), model=str(tiny_checkpoint), resume=True, **options)
    assert result.steps == 3
    assert result.resume_changes == {"max_steps": [2, 3], "learning_rate": [1e-3, 2e-3]}
    config = boxes.get_run_info(result.run_key).config
    assert config.resume_changes == result.resume_changes and config.resumed_from.endswith("checkpoint-2")

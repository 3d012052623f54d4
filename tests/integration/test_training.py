"""Fine-tuning: refusals before any work, skipped samples with reasons, the native checkpoint, LoRA and a
frozen vision tower, validation in FiftyOne's terms, the CLI end to end, resume after SIGKILL, torchrun."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import fiftyone as fo
import pytest
from helpers import write_image
from safetensors.torch import load_file

from fiftyone_florence2 import load_model, train
from fiftyone_florence2.cli import main
from fiftyone_florence2.core.checkpoints import weights_fingerprint
from fiftyone_florence2.core.tasks import TASKS, get_task
from fiftyone_florence2.training.record import METHOD, list_training_runs

DETECTION = get_task("detection").name
CAPTION = get_task("caption").name
GROUNDING = get_task("phrase_grounding").name
FAST = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3}
ROOT = Path(__file__).resolve().parents[2]


def _box(x: float) -> fo.Detections:
    return fo.Detections(detections=[fo.Detection(label="car", bounding_box=[x, 0.2, 0.3, 0.4])])


@pytest.fixture
def boxes(tmp_path):
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(
                filepath=write_image(tmp_path / f"b{i}.png", size=(64, 64), seed=i),
                ground_truth=_box(0.1 * i),
                caption=fo.Classification(label=f"a car number {i}"),
                tags=["val"] if i == 0 else [],
            )
            for i in range(5)
        ]
    )
    yield ds
    ds.delete()


def _runs(ds) -> list[str]:
    ds.reload()
    return ds.list_runs(method=METHOD)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label_field": "caption"}, "learns from Detections labels, but 'caption' holds Classification"),
        ({"label_field": "nothing_here"}, "no field 'nothing_here'"),
        ({"view": "empty"}, "the view is empty"),
        ({"val_tag": "no_such_tag"}, "has no samples"),
        ({"val_tag": "all"}, "takes every sample"),
        ({"output_dir": "full"}, "holds a training run's output: pass overwrite=True"),
        ({"output_dir": "foreign", "overwrite": True}, "holds config.json, which no training run wrote"),
        ({"resume": True}, "Nothing to resume"),
        ({"output_dir": None}, "output_dir is required"),
        ({"epochs": 0}, "epochs must be a whole number"),
        ({"learning_rate": -1}, "learning_rate must be a number above 0"),
        ({"lr_schedule": "sideways"}, "lr_schedule must be one of"),
        ({"lora_rank": 4}, "read only with lora=True"),
        ({"val_tag": "val", "val_fraction": 0.2}, "one way"),
        ({"task": GROUNDING}, "pass prompt_field"),
        ({"task": [DETECTION, CAPTION]}, "task=field pairs"),
        ({"bogus": 1}, "Unknown training option"),
        ({"label_field": "unset"}, "None of the 5 training samples can be learnt: not learnt: it has no 'unset'"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(boxes, tiny_checkpoint, tmp_path, change, message):
    out = tmp_path / "out"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "florence2-manifest.json").write_text('{"files": []}')
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("mine")
    (tmp_path / "foreign" / "config.json").write_text("mine")
    boxes.add_sample_field("unset", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    if change.get("val_tag") == "all":
        boxes.tag_samples("all")
    options = {"output_dir": str(out), "model": str(tiny_checkpoint), **FAST, **change}
    if change.get("output_dir") in ("full", "foreign"):
        options["output_dir"] = str(tmp_path / change["output_dir"])
    samples = boxes.limit(0) if options.pop("view", None) == "empty" else boxes
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(samples, progress=False, **options)
    assert not out.exists()
    assert _runs(boxes) == []
    assert (tmp_path / "foreign" / "thesis.tex").read_text() == "mine"


def test_unlearnable_samples_and_unreadable_images_are_skipped_with_reasons(boxes, tiny_checkpoint, tmp_path):
    first, second, third = boxes.select(boxes.values("id")[1:4], ordered=True)
    Path(first.filepath).write_bytes(b"not an image")
    second.ground_truth = None
    second.save()
    third.ground_truth = fo.Detections(detections=[fo.Detection(label="car", bounding_box=[0.9, 0.2, 0.5, 0.4])])
    third.save()
    result = train(boxes, output_dir=str(tmp_path / "out"), model=str(tiny_checkpoint), progress=False, **FAST)
    assert set(result.skips) == {first.id, second.id, third.id}
    assert "not an image" in result.skips[first.id]
    assert "no 'ground_truth' label" in result.skips[second.id]
    assert "off the image" in result.skips[third.id] or "outside" in result.skips[third.id]
    assert result.train_samples == 2
    record = json.loads((tmp_path / "out" / "training.json").read_text())
    assert set(record["skips"]) == set(result.skips)
    results = boxes.load_run_results(result.run_key, cache=False)
    assert set(results.skips) == set(result.skips) and results.status == "completed"


def _weights(path) -> dict:
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.parametrize(
    ("options", "vision_changes", "text_changes"),
    [
        ({}, True, True),
        ({"freeze_vision": True}, False, True),
        ({"lora": True, "learning_rate": 0.05}, True, True),
        ({"lora": True, "freeze_vision": True, "learning_rate": 0.05}, False, True),
    ],
    ids=["full", "frozen-vision", "lora", "lora-text-only"],
)
def test_the_saved_checkpoint_is_native_and_holds_what_was_trained(
    boxes, tiny_checkpoint, tmp_path, options, vision_changes, text_changes
):
    out = tmp_path / "out"
    train(boxes, output_dir=str(out), model=str(tiny_checkpoint), progress=False, **{**FAST, **options})
    before, after = _weights(tiny_checkpoint), _weights(out)
    assert set(after) == set(before)  # LoRA merged: no adapter weights, no missing ones
    vision = [name for name in before if "vision_tower" in name]
    text = [name for name in before if "language_model.decoder.layers" in name]
    assert any(not (before[n] == after[n]).all() for n in vision) == vision_changes
    assert any(not (before[n] == after[n]).all() for n in text) == text_changes
    assert not (out / "adapter_config.json").exists()
    assert load_model(DETECTION, model=str(out)).runner.checkpoint == str(out)


def test_validation_is_scored_in_fiftyones_terms_each_epoch_and_leaves_the_dataset_alone(
    boxes, tiny_checkpoint, tmp_path
):
    datasets_before = set(fo.list_datasets())
    fields_before = set(boxes.get_field_schema())
    options = {"task": [DETECTION, CAPTION], "label_field": f"{DETECTION}=ground_truth,{CAPTION}=caption"}
    result = train(boxes, output_dir=str(tmp_path / "o"), model=str(tiny_checkpoint), progress=False,
                   val_tag="val", epochs=2, batch_size=2, **options)  # fmt: skip
    evals = [entry for entry in result.history if "eval_score" in entry]
    assert [entry["epoch"] for entry in evals] == [1.0, 2.0]
    for key in ("eval_detection_map", "eval_detection_f1", "eval_caption_text_similarity", "eval_caption_exact"):
        assert all(0 <= entry[key] <= 1 for entry in evals), key
    assert result.best in evals and result.val_samples == 1 and result.train_samples == 4
    boxes.reload()
    assert set(boxes.get_field_schema()) == fields_before
    assert set(fo.list_datasets()) == datasets_before
    config = boxes.get_run_info(result.run_key).config
    assert config.val_tag == "val" and config.label_field == {DETECTION: "ground_truth", CAPTION: "caption"}
    results = boxes.load_run_results(result.run_key, cache=False)
    assert [e["eval_score"] for e in results.history if "eval_score" in e] == [e["eval_score"] for e in evals]


def test_cli_trains_then_labels_with_the_checkpoint(boxes, tiny_checkpoint, tmp_path, capsys):
    boxes.persistent = True
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    boxes.add_sample(fo.Sample(filepath=str(broken), ground_truth=_box(0.2)))
    out = tmp_path / "ck"
    args = ["train", "--dataset", boxes.name, "--output-dir", str(out), "--model", str(tiny_checkpoint)]
    assert main([*args, "--max-steps", "2", "--batch-size", "2", "--val-fraction", "0.4"]) == 0
    printed = capsys.readouterr().out
    assert f"Checkpoint: {out}" in printed and "best validation score" in printed
    # The reason itself, by file path, not only where the reasons are kept.
    assert f"1 sample(s) were left out (all reasons: {out}/training.json):\n  {broken}: not an image file" in printed
    command = printed.split("Label with it:  ", 1)[1].strip()
    assert command == f"florence2 label --dataset {boxes.name} --model {out} --task {DETECTION}"
    assert main([*args, "--max-steps", "2"]) == 2  # the directory is now taken
    assert "holds a training run's output: pass --overwrite" in capsys.readouterr().err
    # The printed command runs as it is.
    assert main([*shlex.split(command)[1:], "--label-field", "pred", "--num-beams", "1", "--max-new-tokens", "8"]) == 0
    boxes.reload()
    assert len(boxes.exists("pred")) == len(boxes) - 1
    capsys.readouterr()
    assert main(["runs", "--dataset", boxes.name]) == 0
    listed = capsys.readouterr().out
    start, written = weights_fingerprint(tiny_checkpoint)[:12], weights_fingerprint(out)[:12]
    assert (
        f"completed   trains {DETECTION} from ground_truth -> {out}  from weights {start}, wrote weights {written}"
        in listed
    )
    # the labels came from the weights it wrote; each run shows its start and its counts
    assert re.search(
        rf" \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  completed   {DETECTION} -> pred  weights {written}  "
        r"labelled 5, skipped 0, failed 1",
        listed,
    )


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fiftyone_florence2.cli", "train", *args]


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint_and_finishes(boxes, tiny_checkpoint, tmp_path):
    boxes.persistent = True
    out = tmp_path / "out"
    args = ["--dataset", boxes.name, "--output-dir", str(out), "--model", str(tiny_checkpoint), "--batch-size", "2",
            "--max-steps", "400", "--save-steps", "10", "--learning-rate", "1e-3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(_cli(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    staged = out / ".florence2-staging" / "checkpoints"  # a run's checkpoints until it finishes
    while not (staged / "checkpoint-20").is_dir():
        assert first.poll() is None, first.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (out / "model.safetensors").exists()
    assert [boxes.get_run_info(key).config.status for key in list_training_runs(boxes)] == ["interrupted"]
    saved = sorted(int(p.name.split("-")[1]) for p in staged.glob("checkpoint-*"))
    half_written = staged / f"checkpoint-{saved[-1] + 5}"  # as a kill in the middle of a save leaves
    half_written.mkdir()
    (half_written / "model.safetensors").write_bytes(b"\0" * 10)
    done = subprocess.run(_cli(*args, "--resume"), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((out / "checkpoints" / "checkpoint-400" / "trainer_state.json").read_text())
    assert state["global_step"] == 400
    logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged == sorted(set(logged)) and logged[-1] > 390  # one history, no step trained twice
    assert (out / "model.safetensors").exists() and saved[-1] >= 20
    assert "half-written" in done.stdout and not half_written.exists() and not staged.exists()
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 400


def test_torchrun_trains_with_two_processes_on_gloo(boxes, tiny_checkpoint, tmp_path):
    boxes.persistent = True
    out = tmp_path / "out"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "fiftyone_florence2.cli", "train", "--dataset", boxes.name, "--output-dir", str(out),
               "--model", str(tiny_checkpoint), "--batch-size", "2", "--max-steps", "3", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((out / "training.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 3
    assert len(_runs(boxes)) == 1  # one record, written by the first process
    assert load_model(DETECTION, model=str(out)).runner.checkpoint == str(out)


def _labels_for(task) -> fo.Label:
    """Labels of the type ``task`` learns from, one instance each."""
    if task.label_type == "Classification":
        return fo.Classification(label="a red car")
    if task.label_type == "Polylines":
        ring = [(0.1, 0.1), (0.6, 0.15), (0.5, 0.7)]
        return fo.Polylines(polylines=[fo.Polyline(label="the car", points=[ring], closed=True, filled=True)])
    return fo.Detections(detections=[fo.Detection(label="car", bounding_box=[0.1, 0.2, 0.3, 0.4])])


# A free prompt is refused for training (test_free_prompt.py): its answers have no fixed shape.
@pytest.mark.parametrize("task", [t for t in TASKS if not t.free], ids=lambda t: t.name)
def test_every_task_trains_from_its_labels_and_is_validated(task, tiny_checkpoint, tmp_path):
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(
                filepath=write_image(tmp_path / f"{i}.png", size=(64, 64), seed=i),
                gt=_labels_for(task),
                caption="a car on the road",
                tags=["val"] if i == 0 else [],
            )
            for i in range(3)
        ]
    )
    extra = {"prompt_field": "caption"} if task.input == "text" and not task.takes_classes else {}
    result = train(ds, task=task.name, label_field="gt", output_dir=str(tmp_path / "out"), val_tag="val",
                   model=str(tiny_checkpoint), progress=False, **FAST, **extra)  # fmt: skip
    assert result.skips == {} and result.train_samples == 2
    main_metric = "text_similarity" if task.answer == "text" else "map"
    assert 0 <= result.best[f"eval_{task.name}_{main_metric}"] <= 1
    assert result.best["eval_score"] == result.best[f"eval_{task.name}_{main_metric}"]
    ds.delete()


def test_the_split_is_a_view_a_tag_or_a_seeded_fraction(boxes):
    from fiftyone_florence2.training.data import split_ids

    ids = boxes.values("id")
    assert split_ids(boxes) == (ids, [])
    assert split_ids(boxes, val_tag="val") == (ids[1:], ids[:1])
    assert split_ids(boxes, val_view=boxes.select(ids[3:])) == (ids[:3], ids[3:])
    drawn = split_ids(boxes, val_fraction=0.4, seed=1)
    assert drawn == split_ids(boxes, val_fraction=0.4, seed=1) and len(drawn[1]) == 2
    assert sorted(drawn[0] + drawn[1]) == sorted(ids)
    other = fo.Dataset()
    with pytest.raises(ValueError, match="a view of the dataset being trained on"):
        split_ids(boxes, val_view=other.view())  # another dataset
    other.delete()


def test_the_best_validated_checkpoint_is_the_one_saved(boxes, tiny_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = train(boxes, output_dir=str(out), model=str(tiny_checkpoint), progress=False, val_tag="val",
                   epochs=3, batch_size=2, learning_rate=1e-3)  # fmt: skip
    best = json.loads((out / "training.json").read_text())["best_checkpoint"]
    scores = [entry["eval_score"] for entry in result.history if "eval_score" in entry]
    assert len(scores) == 3 and Path(best).name == f"checkpoint-{result.best['step']}"
    assert result.best["eval_score"] == max(scores)
    saved, kept, last = _weights(out), _weights(best), _weights(out / "checkpoints" / f"checkpoint-{result.steps}")
    assert all((saved[name] == kept[name]).all() for name in kept)
    if Path(best).name != f"checkpoint-{result.steps}":
        assert any(not (saved[name] == last[name]).all() for name in last)


def test_the_progress_bar_shows_loss_and_samples_per_second(boxes, tiny_checkpoint, tmp_path, capsys):
    train(boxes, output_dir=str(tmp_path / "out"), model=str(tiny_checkpoint), progress=True, **FAST)
    shown = capsys.readouterr().err
    assert "florence2 train" in shown and "loss=" in shown and "samples/s=" in shown


def test_a_caption_too_long_to_read_skips_its_sample(boxes, tiny_checkpoint, tmp_path):
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(
                filepath=write_image(tmp_path / f"g{i}.png", size=(64, 64), seed=i),
                gt=fo.Detections(detections=[fo.Detection(label="car", bounding_box=[0.1, 0.2, 0.3, 0.4])]),
                caption="a car" + (" and a very long road" * 400 if i == 0 else ""),
            )
            for i in range(3)
        ]
    )
    first = ds.first().id
    result = train(ds, task=GROUNDING, label_field="gt", prompt_field="caption", output_dir=str(tmp_path / "o"),
                   model=str(tiny_checkpoint), progress=False, **FAST)  # fmt: skip
    assert list(result.skips) == [first] and "too long" in result.skips[first]
    assert result.train_samples == 2
    ds.delete()


@pytest.mark.parametrize("change", [{}, {"freeze_vision": True}, {"lora": True}], ids=["full", "frozen", "lora"])
def test_a_validated_run_reloads_its_best_checkpoint_quietly(boxes, tiny_checkpoint, tmp_path, capfd, change):
    import logging

    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)  # transformers' loggers do not reach the root
    try:
        result = train(boxes, output_dir=str(tmp_path / "o"), model=str(tiny_checkpoint), val_tag="val", epochs=2,
                       batch_size=2, **change)  # fmt: skip
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert result.best is not None
    assert not [w for w in warnings if "missing keys" in w or "unexpected keys" in w], warnings
    err = capfd.readouterr().err
    during = err[err.index("florence2 train") : err.rindex("florence2 train")]
    assert "Writing model shards" not in during and "Loading weights" not in during
    saved = load_file(str(tmp_path / "o" / "model.safetensors"))
    assert "model.language_model.shared.weight" in saved  # the tied tensor is saved once, under its own name

"""The auto-labelling loop end to end on a tiny random checkpoint with forced answers: label a pool, review a
slice, queue the rest, gather the training labels, fine-tune, relabel; through Python, then the CLI's steps."""

from __future__ import annotations

import fiftyone as fo
import pytest
from helpers import force, write_image

import fiftyone_florence2 as f2
from fiftyone_florence2.cli import main
from fiftyone_florence2.core.tasks import get_task

DETECTION = get_task("detection").name
ANSWER = "car<loc_100><loc_200><loc_500><loc_900>dog<loc_600><loc_100><loc_900><loc_400>"


@pytest.fixture
def pool(tmp_path):
    dataset = fo.Dataset(persistent=True)
    for index in range(6):
        write_image(tmp_path / f"{index}.jpg", size=(64, 48), seed=index)
    dataset.add_samples([fo.Sample(filepath=str(tmp_path / f"{index}.jpg")) for index in range(6)])
    yield dataset
    dataset.delete()


def label(pool, tiny_checkpoint, tokenizer, field: str) -> None:
    model = f2.load_model(DETECTION, model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, ANSWER))
    f2.label_samples(pool, model, field, progress=False)


def review_slice(pool, count: int = 2) -> None:
    """A person checks ``count`` samples: their checked boxes go in ``ground_truth``, the samples get tagged."""
    for sample in pool.limit(count):
        sample["ground_truth"] = fo.Detections(
            detections=[fo.Detection(label="car", bounding_box=[0.1, 0.2, 0.4, 0.7])]
        )
        sample.tags.append("reviewed")
        sample.save()


def test_the_loop_runs_from_python(pool, tiny_checkpoint, tokenizer, tmp_path):
    label(pool, tiny_checkpoint, tokenizer, "predictions")
    review_slice(pool)
    confidences = [c for cs in pool.values("predictions.detections.confidence") for c in cs]
    assert len(confidences) == 12
    # A threshold between the two boxes' confidences, so that some are accepted and some are not.
    cut = sorted(confidences)[6]
    queue = f2.review_queue(pool, "predictions", thresholds=cut, key="first_queue")
    assert queue.left_alone == 4 and sum(queue.counts.values()) == 8
    # Each unreviewed sample has one box accepted and one not: left out by default, kept with partial=True.
    view = f2.training_labels(pool, "predictions", "train_labels", gt_field="ground_truth")
    assert view.values("train_labels.detections.label") == [["car"], ["car"]]
    assert pool.get_field("train_labels").info["partly_vouched_left_out"] == 4
    view = f2.training_labels(pool, "predictions", "train_labels", gt_field="ground_truth", overwrite=True,
                              partial=True)  # fmt: skip
    learnt = view.values("train_labels.detections.label")
    assert learnt[:2] == [["car"], ["car"]]  # the slice gives its checked labels
    assert sum(map(len, learnt[2:])) == queue.counts["accepted"]  # the rest, their accepted predictions
    result = f2.train(view, task=DETECTION, label_field="train_labels", output_dir=str(tmp_path / "ft"),
                      model=str(tiny_checkpoint), max_steps=2, batch_size=2, progress=False)  # fmt: skip
    assert result.train_samples == len(view)
    label(pool, result.output_dir, tokenizer, "predictions_ft")  # relabel with the fine-tuned checkpoint
    second = f2.review_queue(pool, "predictions_ft", thresholds=cut, key="second_queue")
    assert sum(second.counts.values()) == 8
    assert pool.get_field("train_labels").info["pred_field"] == "predictions"
    runs = pool.list_runs()
    assert {"first_queue", "second_queue", result.run_key} <= set(runs)
    assert pool.get_run_info(result.run_key).config.label_field == {DETECTION: "train_labels"}


def test_the_loop_runs_from_the_cli(pool, tiny_checkpoint, tokenizer, capsys):
    label(pool, tiny_checkpoint, tokenizer, "predictions")
    review_slice(pool)
    name = pool.name
    assert main(["review", "--dataset", name, "--field", "predictions", "--thresholds", "car=0.0,*=1.0",
                 "--key", "cli_queue"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "accepted        4 label(s)  saved view 'predictions-accepted'" in printed
    assert "left 4 reviewed label(s) alone" in printed
    assert main(["training-labels", "--dataset", name, "--field", "predictions", "--into", "train_labels",
                 "--gt-field", "ground_truth"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Copied 2 label(s) on 2 sample(s) into 'train_labels'" in printed
    assert "Left out 4 sample(s) with only some labels accepted or reviewed (--partial keeps them)." in printed
    assert main(["training-labels", "--dataset", name, "--field", "predictions", "--into", "train_labels",
                 "--gt-field", "ground_truth", "--partial", "--overwrite"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Copied 6 label(s) on 6 sample(s) into 'train_labels'" in printed and "Left out" not in printed
    assert f"florence2 train --dataset {name} --view train_labels --label-field train_labels" in printed
    assert main(["runs", "--dataset", name]) == 0
    listed = capsys.readouterr().out
    assert "cli_queue" in listed and "queues predictions with typed thresholds" in listed
    assert "accepted 4, review 0, skim 0, rejected 4" in listed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["review", "--field", "predictions"], "Give --thresholds (e.g."),
        (["review", "--field", "predictions", "--thresholds", "car=0.5"], "No threshold for class(es) 'dog'"),
        (["review", "--field", "predictions", "--thresholds", "0.5", "--bands", "a=0.5-1,b=0-0.4"], "--bands leave"),
        (["review", "--field", "predictions", "--calibration", "nope"], "No calibration 'nope'"),
        (["review", "--field", "filepath", "--thresholds", "0.5"], "--field: field 'filepath' holds"),
        (["review", "--field", "predictions", "--thresholds", "0.5", "--view", "nope"], "no saved view 'nope'"),
        (["training-labels", "--field", "predictions", "--into", "predictions"], "--into must be a new field"),
        (["training-labels", "--field", "predictions", "--into", "t"], "Nothing to learn from"),
    ],
)
def test_the_cli_refuses_in_one_line_naming_its_flags(pool, argv, message, capsys):
    sample = pool.first()
    sample["predictions"] = fo.Detections(detections=[fo.Detection(label="dog", confidence=0.4)])
    sample.save()
    runs, views = pool.list_runs(), pool.list_saved_views()
    assert main([argv[0], "--dataset", pool.name, *argv[1:]]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    pool.reload()
    assert (pool.list_runs(), pool.list_saved_views(), pool.first().predictions.detections[0].tags) == (runs, views, [])

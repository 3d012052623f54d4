"""What a training run learns from: the labels the view shows, and every sample it leaves out has its reason."""

from __future__ import annotations

import fiftyone as fo
import pytest
from fiftyone import ViewField as F
from helpers import write_image

from fiftyone_florence2 import train
from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.training.data import make_split, sample_examples
from fiftyone_florence2.training.options import read_train_options
from fiftyone_florence2.training.validation import delete_copy, validation_copy

FAST = {"max_steps": 2, "batch_size": 2, "learning_rate": 1e-3, "progress": False}
OVD = get_task("open_vocabulary_detection").name
DETECTION = get_task("detection").name


def _detections(*labels: str) -> fo.Detections:
    return fo.Detections(
        detections=[
            fo.Detection(label=label, bounding_box=[0.1 * (i % 9), 0.2, 0.1, 0.1]) for i, label in enumerate(labels)
        ]
    )


@pytest.fixture
def tagged(tmp_path):
    """Samples with a good box and a box a reviewer tagged wrong; sample 0 is tagged for validation."""
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(filepath=write_image(tmp_path / f"t{i}.png", size=(64, 64), seed=i),
                      gt=_detections("car", "ghost"), tags=["val"] if i == 0 else [])
            for i in range(4)
        ]
    )  # fmt: skip
    for sample in ds:
        sample.gt.detections[1].tags = ["wrong"]
        sample.save()
    yield ds
    ds.delete()


@pytest.mark.parametrize("split_by", ["val_tag", "val_view"])
def test_labels_a_view_filters_out_are_neither_learnt_nor_expected(tagged, tmp_path, split_by):
    view = tagged.filter_labels("gt", ~F("tags").contains("wrong"), only_matches=False)
    split_option = {"val_tag": "val"} if split_by == "val_tag" else {"val_view": view.match_tags("val")}
    options = read_train_options({"task": DETECTION, "label_field": "gt", "output_dir": str(tmp_path), **split_option})
    split = make_split(view, options)
    answers = [example.answer for example in [*split.train, *split.val]]
    assert len(split.train) == 3 and len(split.val) == 1
    assert all("car" in answer and "ghost" not in answer for answer in answers)
    copy = validation_copy(split_option.get("val_view", view), split.val_ids, {DETECTION: "gt"}, None)
    assert [[d.label for d in labels.detections] for labels in copy.values("gt")] == [["car"]]
    delete_copy(copy)


@pytest.mark.parametrize(
    ("label", "classes", "reason"),
    [
        (fo.Detections(detections=[]), None, "no instance, and no classes given to ask for"),
        (fo.Detections(), None, "no instance, and no classes given to ask for"),
        (fo.Detections(detections=[]), ["car"], None),
        (_detections("car"), None, None),
    ],
    ids=["empty-list", "no-list", "empty-with-classes", "one-instance"],
)
def test_a_sample_with_no_instance_and_no_classes_has_its_reason(label, classes, reason):
    sample = {"id": "s", "filepath": "f.png", "gt": label}
    if reason is None:
        assert sample_examples(sample, {OVD: "gt"}, None, classes)
        return
    with pytest.raises(ValueError, match=reason):
        sample_examples(sample, {OVD: "gt"}, None, classes)


@pytest.mark.parametrize("boxes", [250, 400])
def test_an_answer_longer_than_the_decoder_skips_its_sample(tiny_checkpoint, tmp_path, boxes):
    ds = fo.Dataset()
    ds.add_samples(
        [
            fo.Sample(filepath=write_image(tmp_path / f"l{i}.png", size=(64, 64), seed=i),
                      gt=_detections(*["car"] * (boxes if i == 0 else 1)))
            for i in range(3)
        ]
    )  # fmt: skip
    crowded = ds.first().id
    result = train(ds, label_field="gt", output_dir=str(tmp_path / "out"), model=str(tiny_checkpoint), **FAST)
    assert list(result.skips) == [crowded] and "answer is too long to learn" in result.skips[crowded]
    assert result.train_samples == 2
    ds.delete()

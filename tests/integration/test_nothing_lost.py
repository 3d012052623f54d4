"""Runs that said all went well while labels were lost, overwritten or silently empty: each now holds.

Every test here failed before its fix (issue "Nothing lost, round two").
"""

from __future__ import annotations

import math

import fiftyone as fo
import fiftyone.core.labels as fol
import pytest
from helpers import force

from fiftyone_florence2 import load_model
from fiftyone_florence2.runs.labelling import label_samples

BOX = "<loc_100><loc_200><loc_500><loc_900>"


def answer(task: str, question: str) -> str:
    if task == "caption":
        return "A model caption."
    if task == "detection":
        return "car" + BOX
    return "thing" + BOX  # region tasks echo a region


@pytest.fixture
def model_for(tiny_checkpoint, tokenizer):
    def make(task, **options):
        return load_model(task, model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, answer), **options)

    return make


def _add_gt(dataset, boxes_per_sample):
    dataset.add_sample_field("gt", fo.EmbeddedDocumentField, embedded_doc_type=fol.Detections)
    for sample, boxes in zip(dataset.iter_samples(autosave=True), boxes_per_sample):
        sample["gt"] = None if boxes is None else fol.Detections(
            detections=[fol.Detection(label="x", bounding_box=box) for box in boxes]
        )  # fmt: skip


# ------------------------------------------------------------------ patches and frames views


def test_the_operator_labels_a_patches_view_on_the_patches_labels(dataset, tiny_checkpoint):
    """A patches view was refused; it is now labelled crop by crop, its labels synced to the dataset."""
    import fiftyone.operators as foo
    from helpers.operators import URI

    _add_gt(dataset, [[[0.1, 0.1, 0.3, 0.3]]] * len(dataset))
    previous = fo.config.plugins_dir
    fo.config.plugins_dir = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    try:
        params = {"task": "caption", "model": str(tiny_checkpoint), "label_field": "cap", "view_target": "CURRENT_VIEW"}
        foo.execute_operator(URI, ctx={"view": dataset.to_patches("gt"), "params": params})
        dataset.reload()
        assert "cap" not in dataset.get_field_schema() and dataset.count("gt.detections.cap") == len(dataset)
    finally:
        fo.config.plugins_dir = previous


def test_a_grouped_dataset_is_refused_with_the_slice_to_label(dataset, model_for):
    grouped = fo.Dataset()
    grouped.add_group_field("group", default="left")
    group = fo.Group()
    paths = dataset.values("filepath")[:2]
    grouped.add_samples([fo.Sample(filepath=p, group=group.element(s)) for p, s in zip(paths, ("left", "right"))])
    with pytest.raises(ValueError, match=r"grouped dataset.*select_group_slices"):
        label_samples(grouped, model_for("caption"), "cap")
    assert "cap" not in grouped.get_field_schema()
    slice_summary = label_samples(grouped.select_group_slices("left"), model_for("caption"), "cap")
    assert slice_summary.labelled == 1 and grouped.select_group_slices("left").count("cap") == 1
    grouped.delete()


# ------------------------------------------------------------------ skip_existing holds per field


def test_skip_existing_with_several_tasks_keeps_a_hand_set_label_and_fills_the_rest(dataset, model_for):
    """Regression: a sample with only some of the fields had all of them rewritten."""
    ids = dataset.values("id")
    checked = fol.Classification(label="A hand-checked caption.")
    existing = fol.Detections(detections=[fol.Detection(label="mine", bounding_box=[0, 0, 0.5, 0.5])])
    for i, fields in ((0, {"f2_caption": checked}), (1, {"f2_detection": existing})):  # one of the two only
        sample = dataset[ids[i]]
        sample.update_fields({k: v.copy() for k, v in fields.items()})
        sample.save()
    both = dataset[ids[2]]
    both["f2_caption"], both["f2_detection"] = checked.copy(), existing.copy()
    both.save()

    summary = label_samples(dataset, model_for(["caption", "detection"]), "f2", skip_existing=True)
    assert (summary.targeted, summary.labelled, summary.skipped, summary.failures) == (4, 4, 1, {})
    captions, detections = dataset.values("f2_caption"), dataset.values("f2_detection")
    assert captions[0].label == "A hand-checked caption." and captions[2].label == "A hand-checked caption."
    assert [d.label for d in detections[1].detections] == ["mine"] == [d.label for d in detections[2].detections]
    assert [d.label for d in detections[0].detections] == ["car"] and captions[1].label == "A model caption."
    assert all(c.label == "A model caption." for c in captions[3:])


# ------------------------------------------------------------------ regions that cannot be used


@pytest.mark.parametrize(
    ("box", "reason"),
    [
        ([10, 20, 300, 400], "not a relative"),  # pixel coordinates
        ([math.nan, 0.1, 0.2, 0.2], "not a finite number"),
        ([0.1, 0.1, 0.0, 0.2], "no area"),
        ([0.1, 0.1, math.inf, 0.2], "not a finite number"),
    ],
    ids=["pixels", "nan", "zero-area", "infinite"],
)
def test_an_unusable_region_fails_its_sample_and_writes_nothing(dataset, model_for, box, reason):
    """Regression: such a sample got an empty Detections, counted as labelled, and a later
    skip-existing run (after the boxes were fixed) skipped it."""
    good = [0.1, 0.2, 0.4, 0.3]
    _add_gt(dataset, [[good, box]] + [[good]] * (len(dataset) - 1))
    bad = dataset.first().id
    model = model_for("region_to_category", regions_field="gt")
    summary = label_samples(dataset, model, "cat")
    assert summary.labelled == len(dataset) - 1 and list(summary.failures) == [bad]
    assert "unusable" in summary.failures[bad] and reason in summary.failures[bad]
    assert dataset[bad]["cat"] is None
    # Once the box is fixed, a skip-existing run labels the sample.
    sample = dataset[bad]
    sample["gt"] = fol.Detections(detections=[fol.Detection(label="x", bounding_box=good)])
    sample.save()
    again = label_samples(dataset, model, "cat", skip_existing=True)
    assert (again.targeted, again.labelled, again.skipped) == (1, 1, len(dataset) - 1)
    assert len(dataset[bad]["cat"].detections) == 1


@pytest.mark.parametrize("regions", [None, []], ids=["none", "empty"])
def test_a_sample_with_no_regions_is_skipped_with_a_reason(dataset, model_for, regions):
    _add_gt(dataset, [regions] + [[[0.1, 0.2, 0.4, 0.3]]] * (len(dataset) - 1))
    first = dataset.first().id
    summary = label_samples(dataset, model_for("region_to_description", regions_field="gt"), "desc")
    assert summary.labelled == len(dataset) - 1 and summary.failures == {}
    assert summary.skips == {first: "region_to_description: no regions in field 'gt'"}
    assert dataset[first]["desc"] is None  # no empty label that a later skip-existing run would take as done
    assert summary.targeted == summary.labelled + len(summary.failures) + len(summary.skips) + summary.deleted


# ------------------------------------------------------------------ prompts that cannot fit


def test_an_over_long_fixed_prompt_is_refused_when_the_model_loads(model_for):
    """Regression: it passed every check, then failed every sample with 'index out of range in self'."""
    with pytest.raises(ValueError, match="the prompt is too long"):
        model_for("phrase_grounding", prompt="a red car " * 400)
    with pytest.raises(ValueError, match="open_vocabulary_detection: the prompt is too long"):
        model_for("open_vocabulary_detection", classes=["car", "bus " * 1200])


def test_an_over_long_prompt_field_value_fails_its_sample_with_the_reason(dataset, model_for):
    for i, sample in enumerate(dataset.iter_samples(autosave=True)):
        sample["caption"] = "a red car " * (300 if i == 0 else 1)
    first = dataset.first().id
    summary = label_samples(dataset, model_for("phrase_grounding", prompt_field="caption"), "ground")
    assert summary.labelled == len(dataset) - 1 and list(summary.failures) == [first]
    assert "the prompt is too long" in summary.failures[first] and "at most" in summary.failures[first]


def test_the_cli_refuses_an_over_long_prompt_before_creating_a_dataset(image_dir, tiny_checkpoint, capsys):
    from fiftyone_florence2.cli import main

    name = "too-long-prompt"
    args = ["label", "--images", str(image_dir), "--dataset-name", name, "--model", str(tiny_checkpoint)]
    assert main([*args, "--task", "phrase_grounding", "--prompt", "word " * 2000]) == 2
    assert "the prompt is too long" in capsys.readouterr().err
    assert not fo.dataset_exists(name)


# ------------------------------------------------------------------ counts that add up


def test_counts_add_up_when_samples_are_deleted_during_a_run(dataset, model_for):
    """Regression: samples deleted mid-run were counted as labelled."""
    ids = dataset.values("id")
    model = model_for("caption", batch_size=2)
    real = model.runner.image_features
    calls = []

    def delete_then_compute(pixel_values):
        if not calls:  # while the first batch is in the model, two samples of later batches go
            dataset.delete_samples(ids[3:5])
        calls.append(len(pixel_values))
        return real(pixel_values)

    model.runner.image_features = delete_then_compute
    try:
        summary = label_samples(dataset, model, "cap", batch_size=2, workers=1)
    finally:
        model.runner.image_features = real
    assert summary.targeted == 5 and summary.deleted == 2 and summary.labelled == 3
    assert summary.targeted == summary.labelled + len(summary.failures) + len(summary.skips) + summary.deleted
    assert dataset.count("cap") == 3


def test_a_sample_counts_as_labelled_only_when_its_label_is_read_back(dataset, model_for, monkeypatch):
    """The write path checks what it wrote: a label that did not reach the database is a failure."""
    import fiftyone.core.dataset as fod

    ids = dataset.values("id")
    real = fod.Dataset.set_values

    def drop_one(self, field, values, *args, **kwargs):
        values = {k: v for k, v in values.items() if k != ids[1]} if isinstance(values, dict) else values
        return real(self, field, values, *args, **kwargs)

    monkeypatch.setattr(fod.Dataset, "set_values", drop_one)
    summary = label_samples(dataset, model_for("caption"), "cap")
    assert summary.labelled == 4 and summary.failures == {ids[1]: "cap: the label was not stored"}

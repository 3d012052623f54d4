"""``training_labels``: what it gathers, what it refuses with nothing written, and how it replaces its own field
(only once the new one is complete, even when a call stops half-way)."""

from __future__ import annotations

import fiftyone as fo
import pytest

import fiftyone_florence2 as f2
from fiftyone_florence2.autolabel import loop


def box(label: str, tag: str) -> fo.Detection:
    return fo.Detection(label=label, bounding_box=[0.1, 0.1, 0.3, 0.3], confidence=0.8, tags=[tag])


@pytest.fixture
def pool():
    """Four samples: the first reviewed (with checked labels), the next two with accepted and queued predictions,
    the last with every prediction accepted."""
    dataset = fo.Dataset()
    samples = [fo.Sample(filepath=f"/nowhere/{i}.jpg") for i in range(4)]
    for i, sample in enumerate(samples):
        sample["predictions"] = fo.Detections(detections=[box("car", "accepted"), box(f"dog{i}", "review")])
    samples[3]["predictions"] = fo.Detections(detections=[box("car", "accepted"), box("bus", "accepted")])
    samples[0].tags.append("reviewed")
    samples[0]["ground_truth"] = fo.Detections(detections=[box("truck", "checked")])
    samples[1]["caption"] = fo.Classification(label="a car")
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


def state(dataset) -> tuple:
    """Everything a call could change: the schema, each field's info, every value, and the saved views."""
    schema = dataset.get_field_schema()
    infos = {name: dict(getattr(field, "info", None) or {}) for name, field in schema.items()}
    values = {name: [str(v) for v in dataset.values(name)] for name in schema if name not in ("id", "filepath")}
    return sorted(schema), infos, values, dataset.list_saved_views()


@pytest.mark.parametrize(
    ("partial", "learnt", "left_out"),
    [
        (False, [["truck"], ["car", "bus"]], 2),  # samples with a label still queued are left out
        (True, [["truck"], ["car"], ["car"], ["car", "bus"]], 0),
    ],
)
def test_it_gathers_the_slice_and_the_samples_whose_labels_are_accepted(pool, partial, learnt, left_out):
    view = f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth", partial=partial)
    assert view.values("learn.detections.label") == learnt
    info = pool.get_field("learn").info
    assert info["made_by"] == loop.MADE_BY and info["partly_vouched_left_out"] == left_out
    assert pool.list_saved_views() == ["learn"]
    assert pool.values("predictions.detections.label")[1] == ["car", "dog1"]  # the source untouched


def test_a_second_call_replaces_its_own_field_and_leaves_nothing_else(pool):
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth")
    pool.untag_labels("accepted", label_fields="predictions")
    pool.tag_labels("accepted", label_fields="predictions")  # the same labels, accepted again
    sample = pool.skip(1).first()
    sample.predictions.detections[1].tags = ["accepted"]
    sample.save()
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth", overwrite=True)
    assert pool.values("learn.detections.label")[1] == ["car", "dog1"]
    fields = {"caption", "ground_truth", "learn", "predictions", "tags", "filepath", "metadata"}
    assert set(pool.get_field_schema()) - {"id", "created_at", "last_modified_at"} == fields
    assert loop.LEFTOVER_OF not in pool.get_field("learn").info


def test_a_call_stopped_after_writing_keeps_the_earlier_field_whole(pool, monkeypatch):
    """A kill between writing the new labels and putting them in place: the earlier field keeps every label, and
    the next call completes and removes what the stopped one left."""
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth")
    before = pool.values("learn.detections.label")
    written = fo.Dataset.rename_sample_field

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fo.Dataset, "rename_sample_field", stopped)
    pool.untag_labels("accepted", label_fields="predictions")
    sample = pool.skip(2).first()
    sample.predictions.detections[1].tags = ["accepted"]
    sample.save()
    with pytest.raises(KeyboardInterrupt):
        f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth", overwrite=True, partial=True)
    assert pool.values("learn.detections.label") == before
    assert pool.get_field("learn").info["made_by"] == loop.MADE_BY
    monkeypatch.setattr(fo.Dataset, "rename_sample_field", written)
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth", overwrite=True, partial=True)
    assert pool.values("learn.detections.label") == [["truck"], None, ["dog2"], None]
    assert [name for name in pool.get_field_schema() if name.startswith("learn")] == ["learn"]


def test_a_call_stopped_while_writing_keeps_the_earlier_field_whole(pool, monkeypatch):
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth")
    before = state(pool)

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fo.Dataset, "set_values", stopped)
    with pytest.raises(KeyboardInterrupt):
        f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth", overwrite=True)
    assert state(pool) == before


def _saved_view_named_learn(pool):
    pool.save_view("learn", pool.limit(1))


def _learn_written_by_a_person(pool):
    pool.add_sample_field("learn", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)


def _nothing_accepted(pool):
    pool.untag_labels("accepted", label_fields="predictions")
    pool.untag_samples("reviewed")


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (None, {"into": "predictions"}, "into must be a new field, not 'predictions'"),
        (None, {"into": "ground_truth", "gt_field": "ground_truth"}, "into must be a new field, not 'ground_truth'"),
        (None, {"into": "two words"}, "into must be a new field name"),
        (None, {"into": ""}, "into must be a new field name"),
        (None, {"gt_field": "caption"}, "gt_field 'caption' holds Classification, but pred_field"),
        (None, {"pred_field": "nothing"}, "nothing"),
        (None, {"accepted_tags": [""]}, "accepted_tags must be tag names"),
        (_saved_view_named_learn, {}, "a saved view is already named 'learn'"),
        (_learn_written_by_a_person, {}, "it holds labels this call did not write"),
        (_learn_written_by_a_person, {"overwrite": True}, "it holds labels this call did not write"),
        (_nothing_accepted, {}, "Nothing to learn from"),
    ],
)
def test_bad_inputs_are_refused_in_one_line_with_nothing_written(pool, setup, kwargs, message):
    if setup:
        setup(pool)
    before = state(pool)
    arguments = {"pred_field": "predictions", "into": "learn", "gt_field": "ground_truth", **kwargs}
    with pytest.raises(ValueError, match=message) as raised:
        f2.training_labels(pool, **arguments)
    assert "\n" not in str(raised.value)
    assert state(pool) == before


def test_a_field_of_ours_is_kept_without_overwrite(pool):
    f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth")
    before = state(pool)
    with pytest.raises(ValueError, match="pass overwrite=True to replace it"):
        f2.training_labels(pool, "predictions", "learn", gt_field="ground_truth")
    assert state(pool) == before

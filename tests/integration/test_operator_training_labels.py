"""The training-labels operator on a real dataset, as the App's server runs it: the field written, its saved
view opened, and refusals in the form's words with nothing written."""

from __future__ import annotations

import asyncio

import fiftyone as fo
import pytest
from fiftyone.operators.executor import execute_or_delegate_operator
from helpers.operators import PLUGIN

URI = f"{PLUGIN}/florence2_training_labels"


def box(label: str, tag: str) -> fo.Detection:
    return fo.Detection(label=label, bounding_box=[0.1, 0.1, 0.3, 0.3], confidence=0.9, tags=[tag])


@pytest.fixture
def queued(operator):  # the module's operator fixture points FiftyOne at this clone's plugins
    """A reviewed sample with checked labels, one fully accepted, one partly accepted, one left to review."""
    dataset = fo.Dataset()
    rows = [["accepted"], ["accepted", "accepted"], ["accepted", "review"], ["review"]]
    samples = [
        fo.Sample(filepath=f"/no/{i}.jpg",
                  predictions=fo.Detections(detections=[box(f"c{i}{j}", tag) for j, tag in enumerate(row)]))
        for i, row in enumerate(rows)
    ]  # fmt: skip
    samples[0].tags.append("reviewed")
    samples[0]["ground_truth"] = fo.Detections(detections=[box("truck", "checked")])
    dataset.add_samples(samples)
    yield dataset
    dataset.delete()


def execute(dataset, **params):
    request = {"operator_uri": URI, "dataset_name": dataset.name, "view": [], "selected": [], "params": params}
    return asyncio.run(execute_or_delegate_operator(URI, request))


@pytest.mark.parametrize(
    ("partial", "learnt", "left_out"),
    [(False, [["truck"], ["c10", "c11"]], 1), (True, [["truck"], ["c10", "c11"], ["c20"]], 0)],
)
def test_the_operator_gathers_the_labels_and_opens_them(queued, partial, learnt, left_out):
    execution = execute(queued, pred_field="predictions", into="learn", gt_field="ground_truth", partial=partial)
    assert execution.error is None, execution.error
    result = execution.to_json()["result"]
    assert (result["samples"], result["left_out"]) == (len(learnt), left_out)
    assert ("Left out 1 sample(s)" in result["message"]) == bool(left_out)
    requests = execution.to_json()["executor"]["requests"]
    assert [request["operator_uri"] for request in requests] == ["reload_dataset", "set_view"]
    opened = fo.DatasetView._build(queued, requests[1]["params"]["view"])
    assert opened.values("learn.detections.label") == learnt
    assert queued.list_saved_views() == ["learn"]


def _learn_exists(dataset):
    dataset.add_sample_field("learn", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)


def _nothing_accepted(dataset):
    dataset.untag_labels("accepted", label_fields="predictions")
    dataset.untag_samples("reviewed")


@pytest.mark.parametrize(
    ("setup", "params", "message"),
    [
        (None, {"into": "predictions"}, '"Into field" must be a new field'),
        (None, {"into": "two words"}, '"Into field" must be a new field name'),
        (_learn_exists, {}, "it holds labels this call did not write"),
        (_nothing_accepted, {}, "Nothing to learn from"),
    ],
)
def test_the_operator_refuses_in_the_forms_words_writing_nothing(queued, setup, params, message):
    if setup:
        setup(queued)
    schema = sorted(queued.get_field_schema())
    execution = execute(queued, **{"pred_field": "predictions", "into": "learn", "gt_field": "ground_truth", **params})
    assert message in str(execution.error)
    assert "into" not in str(execution.error).replace("Into", "")
    assert (sorted(queued.get_field_schema()), queued.list_saved_views()) == (schema, [])

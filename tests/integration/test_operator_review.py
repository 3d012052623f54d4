"""The review queue operator on a real dataset, as the App's server runs it: tags set, the queue opened."""

from __future__ import annotations

import asyncio

import fiftyone as fo
import pytest
from fiftyone import ViewField as F
from fiftyone.operators.executor import execute_or_delegate_operator
from helpers.operators import PLUGIN

URI = f"{PLUGIN}/florence2_review_queue"
CONFIDENCES = [[0.9, 0.6], [0.55], [0.2]]


@pytest.fixture
def predicted(operator):  # the module's operator fixture points FiftyOne at this clone's plugins
    dataset = fo.Dataset()
    dataset.add_samples([
        fo.Sample(filepath=f"/no/{i}.jpg", predictions=fo.Detections(detections=[
            fo.Detection(label="car", confidence=c, bounding_box=[0.1, 0.1, 0.2, 0.2]) for c in row]))
        for i, row in enumerate(CONFIDENCES)
    ])  # fmt: skip
    yield dataset
    dataset.delete()


def execute(dataset, view=None, **params):
    request = {"operator_uri": URI, "dataset_name": dataset.name, "view": view or [], "selected": [],
               "params": params}  # fmt: skip
    return asyncio.run(execute_or_delegate_operator(URI, request))


@pytest.mark.parametrize(("open_band", "opened"), [(None, [[0.55], [0.6]]), ("rejected", [[0.2]])])
def test_the_operator_tags_the_labels_and_opens_the_queue(predicted, open_band, opened):
    execution = execute(predicted, pred_field="predictions", thresholds="0.7", open_band=open_band)
    assert execution.error is None, execution.error
    assert predicted.values("predictions.detections.tags") == [[["accepted"], ["review"]], [["review"]], [["rejected"]]]
    requests = execution.to_json()["executor"]["requests"]
    assert [request["operator_uri"] for request in requests] == ["reload_dataset", "set_view"]
    stages = requests[1]["params"]["view"]
    assert fo.DatasetView._build(predicted, stages).values("predictions.detections.confidence") == opened


def test_the_operator_honours_the_current_view(predicted):
    view = predicted.filter_labels("predictions", F("confidence") < 0.7)
    execution = execute(predicted, view=view._serialize(), pred_field="predictions", thresholds="0.7",
                        view_target="CURRENT_VIEW")  # fmt: skip
    assert execution.error is None, execution.error
    assert predicted.values("predictions.detections.tags") == [[[], ["review"]], [["review"]], [["rejected"]]]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, 'Give "Thresholds"'),
        ({"thresholds": "truck=0.5"}, "No threshold for class(es) 'car'"),
        ({"thresholds": "0.5", "bands": "a=0.5-1,b=0-0.6"}, '"Bands": bands'),
        ({"thresholds": "0.5", "reviewed_tags": "review"}, '"Reviewed tag"'),
    ],
)
def test_the_operator_refuses_in_the_forms_words_writing_nothing(predicted, params, message):
    execution = execute(predicted, pred_field="predictions", **params)
    assert message in str(execution.error)
    assert predicted.values("predictions.detections.tags") == [[[], []], [[]], [[]]]
    assert (predicted.list_runs(), predicted.list_saved_views()) == ([], [])

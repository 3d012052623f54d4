"""The review queue on real datasets: bands and order against hand-computed ones, reviewed labels left alone,
per-class thresholds, views honoured, and bad inputs refused with nothing written."""

from __future__ import annotations

import fiftyone as fo
import pytest
from helpers.operators import _snapshot

import fiftyone_florence2 as f2

# Per sample: (class, confidence) of each predicted box.
POOL = [
    [("car", 0.95), ("car", 0.45)],
    [("dog", 0.69)],
    [("car", 0.1), ("dog", 0.55)],
    [],
    [("dog", 0.31), ("car", 0.72)],
]


def make_dataset(rows=POOL, field: str = "predictions") -> fo.Dataset:
    dataset = fo.Dataset()
    samples = []
    for index, row in enumerate(rows):
        boxes = [fo.Detection(label=label, confidence=confidence, bounding_box=[0.1, 0.1, 0.2, 0.2])
                 for label, confidence in row]  # fmt: skip
        samples.append(fo.Sample(filepath=f"/no/such/{index}.jpg", **{field: fo.Detections(detections=boxes)}))
    dataset.add_samples(samples)
    return dataset


def tags_by_confidence(samples, field: str = "predictions") -> dict[float, list[str]]:
    confidences, tags = samples.values([f"{field}.detections.confidence", f"{field}.detections.tags"])
    return {c: t for cs, ts in zip(confidences, tags) for c, t in zip(cs or [], ts or [])}


@pytest.fixture
def pool():
    dataset = make_dataset()
    yield dataset
    dataset.delete()


# Hand-computed: default bands scaled by each class's threshold t (lows t, 5t/7, 3t/7, 0).
@pytest.mark.parametrize(
    ("thresholds", "expected"),
    [
        (0.7, {0.95: "accepted", 0.72: "accepted", 0.69: "review", 0.55: "review", 0.45: "skim", 0.31: "skim",
               0.1: "rejected"}),
        (0.35, {0.95: "accepted", 0.72: "accepted", 0.69: "accepted", 0.55: "accepted", 0.45: "accepted",
                0.31: "review", 0.1: "rejected"}),
        ({"car": 0.9, "*": 0.5}, {0.95: "accepted", 0.72: "review", 0.45: "skim", 0.1: "rejected",
                                  0.69: "accepted", 0.55: "accepted", 0.31: "skim"}),
        ("dog=0.7,car=0.3", {0.95: "accepted", 0.72: "accepted", 0.45: "accepted", 0.1: "rejected", 0.69: "review",
                             0.55: "review", 0.31: "skim"}),
    ],
)  # fmt: skip
def test_each_label_is_tagged_with_its_band(pool, thresholds, expected):
    queue = f2.review_queue(pool, "predictions", thresholds=thresholds)
    assert {c: tags for c, tags in tags_by_confidence(pool).items()} == {c: [b] for c, b in expected.items()}
    bands = ("accepted", "review", "skim", "rejected")
    assert queue.counts == {band: sorted(expected.values()).count(band) for band in bands}
    assert queue.left_alone == 0


def test_each_band_view_holds_its_labels_least_certain_first(pool):
    queue = f2.review_queue(pool, "predictions", thresholds=0.7)
    assert queue.views == {band: f"predictions-{band}" for band in ("accepted", "review", "skim", "rejected")}
    expected = {"accepted": [[0.72], [0.95]], "review": [[0.55], [0.69]], "skim": [[0.31], [0.45]],
                "rejected": [[0.1]]}  # fmt: skip
    for band, rows in expected.items():
        view = pool.load_saved_view(queue.views[band])
        assert view.values("predictions.detections.confidence") == rows


def test_each_sample_records_how_uncertain_its_least_certain_label_is(pool):
    f2.review_queue(pool, "predictions", thresholds=0.7)
    assert pool.values("predictions_uncertainty") == pytest.approx([0.55, 0.31, 0.9, None, 0.69])
    order = pool.sort_by("predictions_uncertainty", reverse=True).values("predictions_uncertainty")
    assert order[:4] == pytest.approx([0.9, 0.69, 0.55, 0.31])


def test_a_second_run_rebands_only_what_no_person_reviewed(pool):
    f2.review_queue(pool, "predictions", thresholds=0.7)
    first = pool.first()
    first.predictions.detections[1].tags.append("reviewed")  # the 0.45 box, in skim: a person checked it
    first.save()
    third = pool.skip(2).first()
    third.tags.append("reviewed")  # a whole sample checked: its 0.1 and 0.55 boxes
    third.save()
    queue = f2.review_queue(pool, "predictions", thresholds=0.35)
    tags = tags_by_confidence(pool)
    assert tags[0.45] == ["skim", "reviewed"] and tags[0.1] == ["rejected"] and tags[0.55] == ["review"]
    assert tags[0.31] == ["review"] and tags[0.69] == ["accepted"]  # re-banded under the new threshold
    assert queue.left_alone == 3
    assert pool.values("predictions_uncertainty") == pytest.approx([0.05, 0.31, None, None, 0.69])
    assert pool.load_saved_view(queue.views["review"]).values("predictions.detections.confidence") == [[0.31]]


@pytest.mark.parametrize("where", ["sample", "label"])
def test_a_reviewed_field_keeps_what_it_marks(pool, where):
    if where == "sample":
        pool.set_values("checked_by", ["ann", None, "", None, None])
    else:
        sample = pool.first()
        sample.predictions.detections[0]["checked_by"] = "ann"
        sample.save()
    queue = f2.review_queue(pool, "predictions", thresholds=0.7, reviewed_field="checked_by")
    tags = tags_by_confidence(pool)
    assert tags[0.95] == []
    assert (tags[0.45] == []) is (where == "sample")
    assert queue.left_alone == (2 if where == "sample" else 1)


def test_only_the_views_labels_are_tagged(pool):
    from fiftyone import ViewField as F

    view = pool.skip(1).filter_labels("predictions", F("label") == "dog")
    queue = f2.review_queue(view, "predictions", thresholds=0.7)
    assert tags_by_confidence(pool) == {0.95: [], 0.45: [], 0.69: ["review"], 0.1: [], 0.55: ["review"],
                                        0.31: ["skim"], 0.72: []}  # fmt: skip
    assert queue.counts == {"accepted": 0, "review": 2, "skim": 1, "rejected": 0}
    assert pool.values("predictions_uncertainty") == pytest.approx([None, 0.31, 0.45, None, 0.69])
    assert pool.load_saved_view(queue.views["review"]).values("predictions.detections.confidence") == [[0.55], [0.69]]


def test_the_run_is_recorded_and_can_be_read_back(pool):
    queue = f2.review_queue(pool, "predictions", thresholds={"car": 0.8, "*": 0.6}, key="first_pass")
    loaded = f2.load_review_queue(pool, "first_pass")
    assert loaded == queue
    config = pool.get_run_info("first_pass").config
    assert (config.status, config.thresholds, config.calibration_key) == ("completed", {"car": 0.8, "*": 0.6}, None)
    again = f2.review_queue(pool, "predictions", thresholds=0.5, key="first_pass", overwrite=True)
    assert f2.load_review_queue(pool, "first_pass").thresholds == again.thresholds == 0.5


def test_single_classifications_are_banded_too():
    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/no/{i}.jpg", kind=fo.Classification(label="cat", confidence=c))
                         for i, c in enumerate([0.9, 0.6, 0.2])] + [fo.Sample(filepath="/no/x.jpg")])  # fmt: skip
    try:
        queue = f2.review_queue(dataset, "kind", thresholds=0.7)
        assert dataset.values("kind.tags") == [["accepted"], ["review"], ["rejected"], None]
        assert queue.counts == {"accepted": 1, "review": 1, "skim": 0, "rejected": 1}
        assert dataset.load_saved_view(queue.views["review"]).values("kind.confidence") == [0.6]
    finally:
        dataset.delete()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "Give thresholds="),
        ({"thresholds": 0.7, "calibration": "cal"}, "not both"),
        ({"calibration": "no_such_calibration"}, "no_such_calibration"),
        ({"thresholds": {"car": 0.7}}, "No threshold for class(es) 'dog'"),
        ({"thresholds": 1.5}, "thresholds must be from 0 to 1"),
        ({"thresholds": 0.7, "bands": "keep=0.5-1,drop=0-0.6"}, "overlap"),
        ({"thresholds": 0.7, "bands": "keep=0.6-1,drop=0-0.5"}, "gap"),
        ({"thresholds": 0.7, "pred_field": "filepath"}, "holds"),
        ({"thresholds": 0.7, "pred_field": "nope"}, "no field 'nope'"),
        ({"thresholds": 0.7, "reviewed_field": "checkd_by"}, "'checkd_by' is neither"),
        ({"thresholds": 0.7, "reviewed_tags": ("review",)}, "also a band's name"),
        ({"thresholds": 0.7, "key": "taken"}, "already recorded"),
        ({"thresholds": 0.7, "key": "bad key"}, "key must be"),
    ],
)
def test_bad_inputs_are_refused_in_one_line_writing_nothing(pool, kwargs, message):
    pool.register_run("taken", pool.init_run(method="someone_else"))
    before = _snapshot(pool) + str(pool.list_saved_views())
    with pytest.raises(ValueError) as error:
        f2.review_queue(pool, kwargs.pop("pred_field", "predictions"), **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert _snapshot(pool) + str(pool.list_saved_views()) == before


def test_a_calibrations_thresholds_and_key_are_used_and_recorded(pool):
    from types import SimpleNamespace

    calibration = SimpleNamespace(thresholds={"car": 0.9, "*": 0.5}, key="calibration_1")  # calibrate()'s shape
    queue = f2.review_queue(pool, "predictions", calibration=calibration)
    assert (queue.thresholds, queue.calibration_key) == ({"car": 0.9, "*": 0.5}, "calibration_1")
    assert tags_by_confidence(pool)[0.72] == ["review"] and tags_by_confidence(pool)[0.69] == ["accepted"]
    assert pool.get_run_info(queue.key).config.calibration_key == "calibration_1"

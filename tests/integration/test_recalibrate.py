"""Recalibrated confidences on real datasets: calibrate stores its mappings, recalibrate writes them beside
``confidence`` (recorded, another calibration's kept unless overwrite), and the review queue bands and orders
by them with its thresholds mapped the same way, accepting exactly what the raw thresholds accept."""

from __future__ import annotations

import fiftyone.core.labels as fol
import pytest
from helpers.calibration_data import detections_dataset, noisy_rows
from helpers.operators import _snapshot

import fiftyone_florence2 as f2
from fiftyone_florence2.autolabel.recalibrate import calibrated_confidence
from fiftyone_florence2.autolabel.report import Calibration
from fiftyone_florence2.core.review import DEFAULT_BANDS, band_of, scaled_low

PATH = "pred.detections"


@pytest.fixture(scope="module")
def calibrated():
    dataset = detections_dataset(noisy_rows(300, seed=4))
    result = f2.calibrate(dataset, "pred", "gt", target_precision=0.9, key="cal")
    yield dataset, result
    dataset.delete()


@pytest.fixture
def pool(calibrated):
    """A fresh copy of the predictions (with one label of no confidence), calibrated by ``cal``."""
    dataset, result = calibrated
    clone = dataset.clone()
    first = clone.first()
    first.pred.detections.append(fol.Detection(label="car", bounding_box=[0.5, 0.5, 0.1, 0.1]))
    first.save()
    yield clone, result
    clone.delete()


def _labels(samples):
    """``(label, confidence, calibrated_confidence, calibrated_by, tags)`` of every label, sample by sample."""
    names = ("label", "confidence", "calibrated_confidence", "calibrated_by", "tags")
    columns = samples.values([f"{PATH}.{name}" for name in names])
    return list(zip(*([item for row in column for item in row] for column in columns)))


def test_calibrate_stores_a_mapping_per_class_and_reads_it_back(calibrated):
    dataset, result = calibrated
    assert set(result.mappings) == {"car", "dog", "*"} == set(result.thresholds)
    assert f2.load_calibration(dataset, "cal").mappings == result.mappings
    assert result.overall.ece_recalibrated < result.overall.ece
    assert "(recalibrated " in result.describe()


def test_recalibrate_writes_the_mapped_confidence_beside_the_raw_one(pool):
    dataset, result = pool
    raw_before = dataset.values(f"{PATH}.confidence")
    written = f2.recalibrate(dataset.skip(1), "pred", "cal")
    assert written == len(dataset) - 1  # the first sample is not in the view
    assert dataset.values(f"{PATH}.confidence") == raw_before
    first, *rest = [_labels(dataset.select(sample_id)) for sample_id in dataset.values("id")]
    assert all(calibrated is None and by is None for _, _, calibrated, by, _ in first)
    for label, raw, calibrated, by, _ in (item for labels in rest for item in labels):
        assert (calibrated, by) == (calibrated_confidence(result.mappings, label, raw), "cal")
    assert f2.recalibrate(dataset, "pred", result) == len(dataset)  # the unscored label is left without one


def test_another_calibrations_values_are_kept_unless_overwrite(pool):
    dataset, _ = pool
    f2.recalibrate(dataset, "pred", "cal")
    second = f2.calibrate(dataset, "pred", "gt", target_precision=0.8, key="cal2")
    before = _snapshot(dataset)
    for call in (lambda: f2.recalibrate(dataset, "pred", "cal2"),
                 lambda: f2.review_queue(dataset, "pred", calibration="cal2", recalibrated=True)):  # fmt: skip
        with pytest.raises(ValueError, match="carry calibrated_confidence from calibration 'cal': pass overwrite"):
            call()
        assert _snapshot(dataset) == before
    f2.recalibrate(dataset, "pred", second, overwrite=True)
    assert {by for *_, by, _ in _labels(dataset) if by} == {"cal2"}


def test_an_old_calibration_without_a_mapping_is_refused_by_recalibrate_and_queues_on_raw(pool):
    dataset, result = pool
    old = Calibration.from_dict({**result.as_dict(), "overall": {**result.overall.as_dict(), "mapping": None}})
    with pytest.raises(ValueError, match="holds no recalibration mapping"):
        f2.recalibrate(dataset, "pred", old)
    with pytest.raises(ValueError, match="holds none \\(calibrate again\\)"):
        f2.review_queue(dataset, "pred", calibration=old, recalibrated=True)
    queue = f2.review_queue(dataset, "pred", calibration=old)
    assert (queue.confidence, queue.band_thresholds) == ("confidence", result.thresholds)
    assert {by for *_, by, _ in _labels(dataset)} == {None}


def test_a_calibrations_queue_bands_by_the_raw_confidences_unless_asked(pool):
    dataset, result = pool
    queue = f2.review_queue(dataset, "pred", calibration="cal")
    assert (queue.confidence, queue.band_thresholds) == ("confidence", result.thresholds)
    assert {by for *_, by, _ in _labels(dataset)} == {None}  # no calibrated confidence written
    for label, raw, _, _, tags in _labels(dataset):
        if raw is not None:
            assert tags == [band_of(raw, result.thresholds[label], DEFAULT_BANDS)]


def test_the_queue_bands_by_the_recalibrated_confidence_and_accepts_what_the_raw_threshold_does(pool):
    dataset, result = pool
    queue = f2.review_queue(dataset, "pred", calibration="cal", recalibrated=True)
    assert queue.confidence == "calibrated_confidence"
    mapped = {name: calibrated_confidence(result.mappings, name, t) for name, t in result.thresholds.items()}
    assert queue.band_thresholds == mapped
    config = dataset.get_run_info(queue.key).config
    assert (config.confidence, config.band_thresholds, config.calibration_key) == (queue.confidence, mapped, "cal")
    for label, raw, calibrated, by, tags in _labels(dataset):
        if raw is None:
            assert (tags, calibrated) == (["review"], None)  # no confidence: reviewed, never rejected
            continue
        threshold = result.thresholds[label]
        assert (tags == ["accepted"]) == (raw >= threshold)  # exactly what confidence_thresh keeps
        lows = {band.name: scaled_low(band, DEFAULT_BANDS, mapped[label]) for band in DEFAULT_BANDS}
        if tags != ["accepted"]:
            band = next(band.name for band in DEFAULT_BANDS[1:] if calibrated >= lows[band.name])
            assert tags == [band]
        assert by == "cal"
    for band in ("review", "skim"):
        view = dataset.load_saved_view(queue.views[band])
        # A label with no confidence counts as the least certain (-1 here): its sample comes first.
        lowest = [
            min((c for c in row if c is not None), default=-1) for row in view.values(f"{PATH}.calibrated_confidence")
        ]
        assert lowest == sorted(lowest) and len(lowest) > 3
    uncertainty = dataset.values("pred_uncertainty")
    assert max(uncertainty) == 1.0  # the sample with the label of no confidence comes first
    assert f2.load_review_queue(dataset, queue.key) == queue


def test_the_cli_recalibrates_and_refuses_in_its_flags_words(pool, capsys):
    from fiftyone_florence2.cli import main

    dataset, _ = pool
    assert main(["recalibrate", "--dataset", dataset.name, "--field", "pred", "--calibration", "cal"]) == 0
    assert f"Wrote calibrated_confidence on {len(dataset)} label(s) of 'pred' from calibration 'cal'" in (
        capsys.readouterr().out)  # fmt: skip
    f2.calibrate(dataset, "pred", "gt", key="cal2")
    argv = ["recalibrate", "--dataset", dataset.name, "--field", "pred", "--calibration", "cal2"]
    assert main(argv) == 2
    assert "from calibration 'cal': pass --overwrite to replace them." in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert (
        main(["review", "--dataset", dataset.name, "--field", "pred", "--calibration", "cal2", "--recalibrated"]) == 0
    )
    out = capsys.readouterr().out
    assert "(by calibrated_confidence)" in out
    assert main(["runs", "--dataset", dataset.name]) == 0
    assert "with calibration cal2 (recalibrated confidences)" in capsys.readouterr().out


def test_the_queue_operator_refuses_another_calibrations_values_unless_overwrite_is_ticked(pool, operator):
    import asyncio

    from fiftyone.operators.executor import execute_or_delegate_operator
    from helpers.operators import PLUGIN

    dataset, _ = pool
    f2.recalibrate(dataset, "pred", "cal")
    f2.calibrate(dataset, "pred", "gt", key="cal2")
    uri = f"{PLUGIN}/florence2_review_queue"

    def execute(**params):
        request = {"operator_uri": uri, "dataset_name": dataset.name, "view": [], "selected": [],
                   "params": {"pred_field": "pred", "calibration": "cal2", "recalibrated": True, **params}}  # fmt: skip
        return asyncio.run(execute_or_delegate_operator(uri, request))

    assert 'pass "Overwrite" ticked to replace them.' in str(execute().error)
    assert execute(overwrite=True).error is None
    assert {by for *_, by, _ in _labels(dataset) if by} == {"cal2"}

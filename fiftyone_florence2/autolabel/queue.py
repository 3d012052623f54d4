"""The review queue: each predicted label tagged accepted, to review or rejected, and a view per band.

:func:`review_queue` bands every label of a predictions field that a person has
not reviewed, by its confidence and its class's threshold
(:mod:`fiftyone_florence2.core.review`), records on each sample how uncertain
its least certain label still is, saves one view per band ordered least
certain first, and records the run. Everything is checked before the first
write; a refusal writes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fiftyone import ViewField as F

from fiftyone_florence2.autolabel.reading import LabelFacts, check_reviewed_field, label_path, read_labels
from fiftyone_florence2.autolabel.recalibrate import (
    CALIBRATED,
    calibrated_confidence,
    calibrated_values,
    check_owner,
    read_calibration,
    write_calibrated,
)
from fiftyone_florence2.core.review import Band, bands_as_value, calibrated_band, label_band, read_bands, uncertainty
from fiftyone_florence2.core.thresholds import ANY_CLASS, Thresholds, read_thresholds
from fiftyone_florence2.runs.records import REVIEW_METHOD, new_run_key, now_iso, register_running, save_results

REVIEWED = ("reviewed",)


@dataclass
class ReviewQueue:
    """What a queue run did: the labels per band, the labels it left alone, and the views it saved.

    Attributes:
        key: the run key it is recorded under on the dataset
        counts: ``{band: labels tagged with it}``, every band listed
        views: ``{band: saved view name}``, each ordered least certain first
        left_alone: how many labels it did not touch because a person had reviewed them
        uncertainty_field: the sample field holding 1 - the lowest confidence of its unreviewed labels
        confidence: the label attribute banded and ordered by: ``confidence``, or ``calibrated_confidence`` when
            the calibration has a recalibration mapping (then written on each banded label)
        band_thresholds: where each class's accept band starts in that attribute's terms (the thresholds through
            the mapping; acceptance itself still needs the raw confidence to clear the raw threshold)
    """

    key: str
    pred_field: str
    counts: dict[str, int]
    views: dict[str, str]
    left_alone: int
    uncertainty_field: str
    thresholds: float | dict[str, float]
    calibration_key: str | None = None
    bands: dict[str, list[float]] = field(default_factory=dict)
    confidence: str = "confidence"
    band_thresholds: float | dict[str, float] | None = None

    def describe(self) -> str:
        """One line: the counts per band, and the labels left alone."""
        counts = ", ".join(f"{band} {count}" for band, count in self.counts.items())
        by = f" (by {self.confidence})" if self.confidence != "confidence" else ""
        return f"Review queue {self.key}{by}: {counts}; left {self.left_alone} reviewed label(s) alone."


def view_name(pred_field: str, band: str) -> str:
    """The saved view of a band: ``predictions-review`` for band ``review`` of ``predictions``."""
    return f"{pred_field}-{band}"


def uncertainty_field_of(pred_field: str) -> str:
    """The sample field holding how uncertain its least certain unreviewed label of ``pred_field`` is."""
    return f"{pred_field}_uncertainty"


def resolve_thresholds(samples: Any, thresholds: Any, calibration: Any) -> tuple[Thresholds, Any]:
    """The thresholds to band with, and the calibration they came from (None for typed thresholds)."""
    if thresholds is None and calibration is None:
        raise ValueError("Give thresholds= (e.g. 0.7 or {'car': 0.8, '*': 0.6}) or calibration= (a calibration key).")
    if thresholds is not None and calibration is not None:
        raise ValueError("Give thresholds= or calibration=, not both: a calibration brings its own thresholds.")
    if thresholds is not None:
        return read_thresholds("thresholds", thresholds), None
    found = read_calibration(samples, calibration)
    return read_thresholds("calibration thresholds", found.thresholds), found


def calibrated_thresholds(thresholds: Thresholds, mappings: dict[str, Any]) -> Thresholds:
    """Each class's threshold through its class's mapping (monotone: the same cut, in calibrated space)."""
    value = thresholds.as_value()
    mapped = {name: calibrated_confidence(mappings, name, t) for name, t in value.items()} if isinstance(
        value, dict) else {ANY_CLASS: calibrated_confidence(mappings, None, value)}  # fmt: skip
    return read_thresholds("calibrated thresholds", mapped)


def _reviewed_tags(value: Any, bands: tuple[Band, ...]) -> tuple[str, ...]:
    tags = (value,) if isinstance(value, str) else tuple(value or ())
    if not all(isinstance(tag, str) and tag for tag in tags):
        raise ValueError(f"reviewed_tags must be tag names, got {value!r}.")
    clash = sorted(set(tags) & {band.name for band in bands})
    if clash:
        raise ValueError(f"reviewed_tags {clash[0]!r} is also a band's name: name the band or the tag differently.")
    return tags


def _check_key(samples: Any, key: str | None, pred_field: str, overwrite: bool) -> str:
    if key is None:
        return new_run_key(pred_field, method=REVIEW_METHOD)
    if not isinstance(key, str) or not key.isidentifier():
        raise ValueError(f"key must be letters, digits and underscores (not starting with a digit), got {key!r}.")
    dataset = samples._root_dataset
    dataset.reload()
    if key in dataset.list_runs() and (not overwrite or key not in dataset.list_runs(method=REVIEW_METHOD)):
        raise ValueError(f"A run {key!r} is already recorded on {dataset.name!r}: pick another key, "
                         "or pass overwrite=True to replace a review queue's own run.")  # fmt: skip
    return key


def _band_filter(band: str, reviewed_tags: tuple[str, ...], reviewed_field: str | None, where: str | None) -> Any:
    """The labels of ``band`` no person has reviewed."""
    expr = F("tags").contains(band) & ~F("tags").contains(list(reviewed_tags)) if reviewed_tags else None
    expr = F("tags").contains(band) if expr is None else expr
    if where == "label":
        expr = expr & ~(F(reviewed_field).exists() & ~F(reviewed_field).is_in([False, 0, ""]))
    return expr


def band_view(samples: Any, pred_field: str, path: str, band: str, reviewed_tags: tuple[str, ...],
              reviewed_field: str | None = None, where: str | None = None,
              confidence: str = "confidence") -> Any:  # fmt: skip
    """The samples with unreviewed labels of ``band``, those labels only, the least certain first (by the label
    attribute ``confidence``: the raw one, or the recalibrated one)."""
    view = samples.match_tags(list(reviewed_tags), bool=False) if reviewed_tags else samples
    if where == "sample":
        view = view.match(~(F(reviewed_field).exists() & ~F(reviewed_field).is_in([False, 0, ""])))
    view = view.filter_labels(pred_field, _band_filter(band, reviewed_tags, reviewed_field, where))
    lowest = F(path).map(F(confidence)).min() if path != pred_field else F(f"{path}.{confidence}")
    return view.sort_by(lowest)


def _band(fact: LabelFacts, calibrated: dict[tuple[str, str], float], thresholds: Thresholds,
          band_thresholds: Thresholds, bands: tuple[Band, ...]) -> str:  # fmt: skip
    """A label's band: by its raw confidence, or by its recalibrated one (``calibrated`` has it)."""
    if not calibrated:
        return label_band(fact.confidence, fact.label, thresholds, bands)
    value = calibrated.get((fact.sample_id, fact.label_id))
    return calibrated_band(fact.confidence, value, thresholds.for_class(fact.label),
                           band_thresholds.for_class(fact.label), bands)  # fmt: skip


def review_queue(
    samples: Any,
    pred_field: str,
    thresholds: Any = None,
    bands: Any = None,
    calibration: Any = None,
    reviewed_tags: Iterable[str] | str = REVIEWED,
    reviewed_field: str | None = None,
    key: str | None = None,
    overwrite: bool = False,
    recalibrated: bool = False,
) -> ReviewQueue:
    """Tags each unreviewed label of ``pred_field`` in ``samples`` (a dataset or view) with its review band, and
    saves a view per band, least certain first.

    Args:
        samples: the dataset or view; only the labels it shows are read and tagged
        pred_field: a field of Detections, Polylines, Classifications or Keypoints (or single labels)
        thresholds (None): a number, ``{class: number, "*": default}`` or ``"car=0.8,*=0.6"``; a class's
            threshold is where its accept band starts
        bands (None): ``{name: (low, high)}`` tiling 0-1, written for a threshold equal to the top band's low
            bound; default accepted 0.7-1, review 0.5-0.7, skim 0.3-0.5, rejected 0-0.3
        calibration (None): a calibration key, or what ``calibrate()`` returned, whose thresholds to use
        reviewed_tags (("reviewed",)): label or sample tags that mark what a person has reviewed
        reviewed_field (None): a sample field or label attribute that, when set, marks reviewed
        key (None): the run key to record it under (default: a new one)
        overwrite (False): replace the review queue run already recorded under ``key``, and calibrated
            confidences another calibration wrote
        recalibrated (False): band and order the labels by their recalibrated confidence (the calibration's
            mapping, written on each as ``calibrated_confidence``), the bands scaled to the thresholds through
            the mapping; a label is still accepted exactly when its raw confidence clears its raw threshold.
            Needs a ``calibration`` that holds a mapping. Off, the raw confidences band and order the labels

    Returns:
        a :class:`ReviewQueue`
    """
    read = read_bands("bands", bands)
    thresholds_read, found = resolve_thresholds(samples, thresholds, calibration)
    calibration_key, mappings = getattr(found, "key", None), getattr(found, "mappings", None)
    if recalibrated and not mappings:
        raise ValueError(
            "recalibrated=True needs a calibration that holds a recalibration mapping"
            + (f"; calibration {calibration_key!r} holds none (calibrate again)." if found else "; pass calibration.")
        )
    mappings = mappings if recalibrated else None
    path = label_path(samples, pred_field)
    tags = _reviewed_tags(reviewed_tags, read)
    where = check_reviewed_field(samples, path, reviewed_field)
    run_key = _check_key(samples, key, pred_field, overwrite)
    ids, facts = read_labels(samples, path, tags, reviewed_field, where)
    open_labels = [fact for fact in facts if not fact.reviewed]
    unknown = thresholds_read.unknown_classes(fact.label for fact in open_labels)
    if unknown:
        raise ValueError(f"No threshold for class(es) {', '.join(map(repr, unknown))}: add them, or a default "
                         "with '*'.")  # fmt: skip
    calibrated = calibrated_values(open_labels, mappings) if mappings else {}
    if mappings:
        check_owner(samples, path, (label_id for _, label_id in calibrated), calibration_key, overwrite)
    band_thresholds = calibrated_thresholds(thresholds_read, mappings) if mappings else thresholds_read
    banded = {fact.label_id: _band(fact, calibrated, thresholds_read, band_thresholds, read) for fact in open_labels}
    # Everything is checked: the writes start here.
    queue = ReviewQueue(
        key=run_key,
        pred_field=pred_field,
        counts={band.name: 0 for band in read} | dict(Counter(banded.values())),
        views={band.name: view_name(pred_field, band.name) for band in read},
        left_alone=len(facts) - len(open_labels),
        uncertainty_field=uncertainty_field_of(pred_field),
        thresholds=thresholds_read.as_value(),
        calibration_key=calibration_key,
        bands=bands_as_value(read),
        confidence=CALIBRATED if mappings else "confidence",
        band_thresholds=band_thresholds.as_value(),
    )
    _record_start(samples, queue, tags, reviewed_field, overwrite)
    try:
        names = {band.name for band in read}
        samples.set_label_values(f"{path}.tags", [
            {"sample_id": fact.sample_id, "label_id": fact.label_id,
             "value": [tag for tag in fact.tags if tag not in names] + [banded[fact.label_id]]}
            for fact in open_labels
        ])  # fmt: skip
        if mappings:
            write_calibrated(samples, path, calibrated, calibration_key)
        confidences: dict[str, list[float | None]] = {sample_id: [] for sample_id in ids}
        for fact in open_labels:
            confidences[fact.sample_id].append(calibrated.get((fact.sample_id, fact.label_id), fact.confidence))
        scores = {sample_id: uncertainty(values) for sample_id, values in confidences.items()}
        samples.set_values(queue.uncertainty_field, scores, key_field="id")
        for band in read:
            view = band_view(samples, pred_field, path, band.name, tags, reviewed_field, where, queue.confidence)
            samples._root_dataset.save_view(queue.views[band.name], view, overwrite=True)
    except Exception:
        _record_end(samples, queue, "failed")
        raise
    _record_end(samples, queue, "completed")
    return queue


def _record_start(samples: Any, queue: ReviewQueue, tags: tuple[str, ...], reviewed_field: str | None,
                  overwrite: bool) -> None:  # fmt: skip
    dataset = samples._root_dataset
    if overwrite and queue.key in dataset.list_runs(method=REVIEW_METHOD):
        dataset.delete_run(queue.key)
    register_running(
        samples, queue.key, REVIEW_METHOD, pred_field=queue.pred_field, thresholds=queue.thresholds,
        calibration_key=queue.calibration_key, bands=queue.bands, confidence=queue.confidence,
        band_thresholds=queue.band_thresholds, reviewed_tags=list(tags),
        reviewed_field=reviewed_field, views=queue.views, uncertainty_field=queue.uncertainty_field,
    )  # fmt: skip


def _record_end(samples: Any, queue: ReviewQueue, status: str) -> None:
    results = samples.init_run_results(
        queue.key, status=status, finished_at=now_iso(), counts=queue.counts, left_alone=queue.left_alone
    )
    save_results(samples, queue.key, results)
    info = samples.get_run_info(queue.key)
    info.config.status = status
    samples.update_run_config(queue.key, info.config)


def load_review_queue(dataset: Any, key: str) -> ReviewQueue:
    """The review queue recorded under ``key``; raises ``ValueError`` naming the queues there are."""
    dataset.reload()
    keys = dataset.list_runs(method=REVIEW_METHOD)
    if key not in keys:
        raise ValueError(f"No review queue {key!r} on {dataset.name!r}; review queues: {', '.join(keys) or 'none'}.")
    config = dataset.get_run_info(key).config
    results = dataset.load_run_results(key, cache=False, load_view=False)
    return ReviewQueue(
        key=key, pred_field=config.pred_field, counts=dict(results.counts), views=dict(config.views),
        left_alone=results.left_alone, uncertainty_field=config.uncertainty_field, thresholds=config.thresholds,
        calibration_key=config.calibration_key, bands=dict(config.bands),
        confidence=getattr(config, "confidence", None) or "confidence",
        band_thresholds=getattr(config, "band_thresholds", None) or config.thresholds,
    )  # fmt: skip

"""Validation in FiftyOne's terms: label the validation samples with the model in training, then score
them with FiftyOne's own evaluation (boxes and polygons) or a text metric (captions, OCR, region text).

The validation samples are copied (file paths and the fields read) into a
temporary dataset, so that a training run never writes into the user's
dataset; the copy is deleted with the run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import fiftyone as fo

from fiftyone_florence2.core.tasks import get_tasks
from fiftyone_florence2.labels.convert import texts_from_value
from fiftyone_florence2.runs.labelling import label_samples

PRED_PREFIX = "florence2_val"
REGIONS = "florence2_val_regions"


def text_similarity(predicted: str, expected: str) -> float:
    """1 minus the edit distance between the texts over the longer one's length: 1 is identical, 0 nothing alike."""
    if predicted == expected:
        return 1.0
    previous = list(range(len(expected) + 1))
    for i, a in enumerate(predicted, 1):
        current = [i]
        for j, b in enumerate(expected, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return 1.0 - previous[-1] / max(len(predicted), len(expected))


def validation_copy(source: Any, val_ids: Sequence[str], fields: dict[str, str], prompt_field: str | None) -> Any:
    """A temporary dataset holding the validation samples' files and the fields validation reads, with the
    labels the view ``source`` shows (labels it filters out are not expected of the model)."""
    keep = list(dict.fromkeys([*fields.values(), *([prompt_field] if prompt_field else [])]))
    view = source.select(list(val_ids), ordered=True).select_fields(keep)
    return view.clone()


def label_classes(copy: Any, field: str) -> list[str]:
    """The distinct labels of a label field's instances, in order of first appearance."""
    return list(dict.fromkeys(name for value in copy.values(field) for name in texts_from_value(value)))


def regions_field(copy: Any, fields: dict[str, str]) -> str | None:
    """The Detections field whose boxes the region tasks read in the copy: their labels' own field, or
    for polylines a field of the boxes enclosing them."""
    region = [field for name, field in fields.items() if get_tasks(name)[0].input == "region"]
    if not region:
        return None
    if copy.get_field(region[0]).document_type is not fo.Polylines:
        return region[0]
    boxes = [
        fo.Detections(detections=[polyline.to_detection() for polyline in polylines.polylines]) if polylines else None
        for polylines in copy.values(region[0])
    ]
    copy.set_values(REGIONS, boxes)
    return REGIONS


def evaluate(copy: Any, model: Any, fields: dict[str, str]) -> dict[str, float]:
    """Labels ``copy`` with ``model`` (one field per task) and returns each task's metrics, and ``score``:
    the mean of each task's main metric (mAP@[.5:.95] for boxes and polygons, text similarity for text)."""
    written = label_samples(copy, model, label_field=PRED_PREFIX, overwrite=True, progress=False, workers=0)
    metrics: dict[str, float] = {}
    mains = []
    for name, gt in fields.items():
        task = get_tasks(name)[0]
        pred = written.label_fields[name]
        if task.label_type == "Classification":
            found = _text_metrics(copy.values(f"{pred}.label"), copy.values(f"{gt}.label"))
        elif task.boxes_per_region:
            found = _text_metrics(_region_texts(copy, pred), _region_texts(copy, gt))
        else:
            found = _detection_metrics(copy, pred, gt)
        metrics.update({f"{name}_{key}": value for key, value in found.items()})
        mains.append(found["map"] if "map" in found else found["text_similarity"])
    metrics["score"] = sum(mains) / len(mains)
    return metrics


def _text_metrics(predicted: Sequence[str | None], expected: Sequence[str | None]) -> dict[str, float]:
    pairs = [(p or "", e or "") for p, e in zip(predicted, expected)]
    if not pairs:
        return {"text_similarity": 0.0, "exact": 0.0}
    return {
        "text_similarity": sum(text_similarity(p, e) for p, e in pairs) / len(pairs),
        "exact": sum(p == e for p, e in pairs) / len(pairs),
    }


def _region_texts(copy: Any, field: str) -> list[str | None]:
    """Each region's text, sample by sample, in the regions' order (region tasks keep it)."""
    return [label for labels in copy.values(f"{field}.detections.label") for label in (labels or [])]


def _detection_metrics(copy: Any, pred: str, gt: str) -> dict[str, float]:
    logger = logging.getLogger("fiftyone")
    level = logger.level
    logger.setLevel(logging.WARNING)  # its "Evaluating detections..." lines would break the progress bar
    try:
        results = copy.evaluate_detections(pred, gt_field=gt, compute_mAP=True, progress=False)
    finally:
        logger.setLevel(level)
    report = results.metrics()
    return {
        "map": float(results.mAP()),
        "precision": float(report["precision"]),
        "recall": float(report["recall"]),
        "f1": float(report["fscore"]),
    }


def delete_copy(copy: Any) -> None:
    """Deletes the temporary validation dataset."""
    if copy is not None and fo.dataset_exists(copy.name):
        copy.delete()

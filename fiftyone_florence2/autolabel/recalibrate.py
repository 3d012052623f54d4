"""Recalibrated confidences: a calibration's isotonic mapping applied to a field's labels.

Each label gets ``calibrated_confidence`` (its raw ``confidence`` through its class's mapping, or the overall
one, as thresholds fall back) and ``calibrated_by`` (the calibration's key); ``confidence`` itself is never
touched. A label whose ``calibrated_confidence`` another calibration wrote is rewritten only with
``overwrite``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

from fiftyone_florence2.autolabel.reading import LabelFacts, label_path, read_labels
from fiftyone_florence2.core.calibration import apply_mapping
from fiftyone_florence2.core.thresholds import ANY_CLASS

CALIBRATED = "calibrated_confidence"
CALIBRATED_BY = "calibrated_by"


def read_calibration(samples: Any, calibration: Any) -> Any:
    """``calibration`` as what ``calibrate()`` returns: a key is loaded from the dataset."""
    dataset = samples._root_dataset
    if isinstance(calibration, str):
        try:
            module = importlib.import_module("fiftyone_florence2.autolabel.calibrate")
        except ModuleNotFoundError:  # an install without calibrate(): no key can name a calibration
            raise ValueError(f"No calibration {calibration!r} on {dataset.name!r}: calibrate first.") from None
        return module.load_calibration(dataset, calibration)
    if not hasattr(calibration, "thresholds"):
        raise ValueError(f"calibration must be a calibration key or what calibrate() returned, got {calibration!r}.")
    return calibration


def mapping_for(mappings: dict[str, Any], label: str | None) -> Any:
    """The mapping of class ``label``: its own, else the overall one."""
    return mappings[label] if label in mappings else mappings[ANY_CLASS]


def calibrated_confidence(mappings: dict[str, Any], label: str | None, confidence: float | None) -> float | None:
    """``confidence`` of a label of class ``label`` through its mapping, rounded as confidences are stored."""
    value = apply_mapping(mapping_for(mappings, label), confidence)
    return None if value is None else round(value, 6)


def check_owner(samples: Any, path: str, label_ids: Iterable[str], key: str, overwrite: bool) -> None:
    """Refuses to replace ``calibrated_confidence`` that another calibration wrote on any of ``label_ids``,
    unless ``overwrite``."""
    if overwrite:
        return
    wanted = set(label_ids)
    ids, owners = samples.values([f"{path}.id", f"{path}.{CALIBRATED_BY}"])
    flat = lambda rows: [x for row in rows for x in (row if isinstance(row, list) else [row])]  # noqa: E731
    others = sorted({owner for i, owner in zip(flat(ids), flat(owners)) if i in wanted and owner not in (None, key)})
    if others:
        raise ValueError(
            f"Labels of {path.split('.')[0]!r} carry {CALIBRATED} from calibration {others[0]!r}: pass "
            "overwrite=True to replace them."
        )


def write_calibrated(samples: Any, path: str, values: dict[tuple[str, str], float | None], key: str) -> None:
    """Writes ``calibrated_confidence`` and ``calibrated_by`` on each ``(sample id, label id)`` of ``values``."""
    for attribute, of in ((CALIBRATED, lambda v: v), (CALIBRATED_BY, lambda v: key)):
        samples.set_label_values(f"{path}.{attribute}", [
            {"sample_id": sample_id, "label_id": label_id, "value": of(value)}
            for (sample_id, label_id), value in values.items()
        ])  # fmt: skip


def calibrated_values(facts: Iterable[LabelFacts], mappings: dict[str, Any]) -> dict[tuple[str, str], float]:
    """``{(sample id, label id): calibrated confidence}`` of the labels that have a confidence."""
    return {
        (fact.sample_id, fact.label_id): calibrated_confidence(mappings, fact.label, fact.confidence)
        for fact in facts
        if fact.confidence is not None
    }


def recalibrate(samples: Any, pred_field: str, calibration: Any, overwrite: bool = False) -> int:
    """Writes each label's recalibrated confidence (``calibrated_confidence``, and ``calibrated_by``: the
    calibration's key) on the labels of ``pred_field`` that ``samples`` shows; ``confidence`` is kept.

    Args:
        samples: the dataset or view (only the labels it shows are written)
        pred_field: the predictions field (the one the calibration measured, or one the same model wrote)
        calibration: a calibration key, or what ``calibrate()`` returned
        overwrite (False): replace calibrated confidences another calibration wrote

    Returns:
        the number of labels written (labels without a confidence get none)
    """
    path = label_path(samples, pred_field)
    found = read_calibration(samples, calibration)
    mappings = getattr(found, "mappings", None)
    if not mappings:
        raise ValueError(
            f"calibration {getattr(found, 'key', None)!r} holds no recalibration mapping (recorded before "
            "calibrate fitted one, or without labels): calibrate again."
        )
    _, facts = read_labels(samples, path, (), None, None)
    values = calibrated_values(facts, mappings)
    check_owner(samples, path, (label_id for _, label_id in values), found.key, overwrite)
    write_calibrated(samples, path, values, found.key)
    return len(values)

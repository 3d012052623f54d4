"""Datasets whose predictions' rightness is known by construction, for calibration tests (no model)."""

from __future__ import annotations

import random
from collections.abc import Sequence

# One object: (class, confidence, right). right=True: a prediction on a ground-truth box of its class;
# False: a prediction where there is nothing; confidence None with right None: a ground-truth object
# with no prediction (missed).
Obj = tuple[str, float | None, bool | None]


def _box(j: int, row: float) -> list[float]:
    return [0.02 + 0.1 * (j % 9), row + 0.1 * (j // 9), 0.06, 0.05]


def detections_sample(objects: Sequence[Obj]) -> tuple[object, object]:
    """``(ground truth, predictions)`` as Detections, boxes far apart so that only what is meant matches."""
    import fiftyone.core.labels as fol

    gt, pred = [], []
    for j, (label, confidence, right) in enumerate(objects):
        if right is None or right:
            gt.append(fol.Detection(label=label, bounding_box=_box(j, 0.05)))
        if right is not None:
            box = _box(j, 0.05) if right else _box(j, 0.55)
            pred.append(fol.Detection(label=label, bounding_box=box, confidence=confidence))
    return fol.Detections(detections=gt), fol.Detections(detections=pred)


def detections_dataset(rows: Sequence[Sequence[Obj]], gt: str = "gt", pred: str = "pred"):
    """A dataset with one sample per row: Detections fields ``gt`` and ``pred`` (files need not exist)."""
    import fiftyone as fo

    dataset = fo.Dataset()
    dataset.add_samples([fo.Sample(filepath=f"/calibration/img_{i}.png") for i in range(len(rows))])
    pairs = [detections_sample(objects) for objects in rows]
    dataset.set_values(gt, [g for g, _ in pairs])
    dataset.set_values(pred, [p for _, p in pairs])
    return dataset


def noisy_rows(n: int, seed: int) -> list[list[Obj]]:
    """``n`` samples, one prediction each, of two classes whose confidences are informative but
    miscalibrated differently: a car is right with probability sigmoid(12 (q - 0.45)) at confidence
    0.6 q^0.7 (overconfident low, underconfident high), a dog at confidence sqrt(q) (overconfident)."""
    import math

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        q = rng.random()
        label = "car" if rng.random() < 0.6 else "dog"
        raw = 0.6 * q**0.7 if label == "car" else math.sqrt(q)
        confidence = round(min(1.0, max(0.01, raw + rng.gauss(0, 0.04))), 4)
        right = rng.random() < 1 / (1 + math.exp(-12 * (q - 0.45)))
        rows.append([(label, confidence, right)])
    return rows

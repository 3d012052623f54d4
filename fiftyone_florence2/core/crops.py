"""Crops of an image by relative boxes: the geometry behind labelling a patches view crop by crop.

Labels are duck-typed (anything with ``bounding_box`` or ``points``, or a list
type named ``Detections``/``Polylines``), so this module needs no FiftyOne.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

XYWH = tuple[float, float, float, float]

# The list attribute of each label-list type, by class name.
LIST_ATTRIBUTES = {"Detections": "detections", "Polylines": "polylines"}


def labels_of(value: Any) -> list[Any]:
    """The labels a patch field's value holds: one Detection/Polyline, or those of a list; none for None."""
    if value is None:
        return []
    name = LIST_ATTRIBUTES.get(type(value).__name__)
    return list(getattr(value, name) or []) if name else [value]


def label_xywh(label: Any) -> XYWH | None:
    """A Detection's box, or the box enclosing a Polyline's points, relative to the source image."""
    box = getattr(label, "bounding_box", None)
    if box is not None:
        return tuple(float(v) for v in box)
    points = [p for ring in getattr(label, "points", None) or [] for p in ring]
    if not points:
        return None
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    return min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)


def crop_xywh(labels: Sequence[Any]) -> XYWH:
    """The crop of a patch: the union of its labels' boxes, clipped to the image; ``ValueError`` with the
    reason when there is none (no box, a box of no area, or one outside the image)."""
    boxes = [box for box in map(label_xywh, labels) if box is not None]
    if not boxes:
        raise ValueError("the patch has no box to crop")
    if not all(len(b) == 4 and all(math.isfinite(v) for v in b) for b in boxes):
        raise ValueError(f"the patch's box {list(boxes[0])} is not four finite numbers")
    x1, y1 = max(0.0, min(b[0] for b in boxes)), max(0.0, min(b[1] for b in boxes))
    x2, y2 = min(1.0, max(b[0] + b[2] for b in boxes)), min(1.0, max(b[1] + b[3] for b in boxes))
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"the patch's box {[round(v, 4) for v in boxes[0]]} covers no part of the image")
    return x1, y1, x2 - x1, y2 - y1


def crop_pixels(crop: XYWH, image_wh: tuple[int, int]) -> tuple[int, int, int, int]:
    """The pixel box ``(left, top, right, bottom)`` of a relative crop, at least one pixel each way."""
    width, height = image_wh
    left, top = min(width - 1, int(crop[0] * width)), min(height - 1, int(crop[1] * height))
    right, bottom = math.ceil((crop[0] + crop[2]) * width), math.ceil((crop[1] + crop[3]) * height)
    return left, top, max(left + 1, min(width, right)), max(top + 1, min(height, bottom))


def crop_decode_wh(model_wh: tuple[int, int] | None, crop: XYWH) -> tuple[int, int] | None:
    """The smallest decode of the whole image whose crop still has the model's input size."""
    if not model_wh:
        return None
    return math.ceil(model_wh[0] / max(crop[2], 1e-6)), math.ceil(model_wh[1] / max(crop[3], 1e-6))

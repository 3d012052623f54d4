"""Merging the instances that several tiles found, and suppressing repeated ones, with supervision's
non-max merge and suppression."""

from __future__ import annotations

from collections.abc import Sequence

import fiftyone.core.labels as fol
import numpy as np

from fiftyone_florence2.core.parsing import points_to_rel_xywh
from fiftyone_florence2.core.tiling import TILE_MERGE_IOU, XYXY, enclosing_xyxy, xywh_to_xyxy, xyxy_to_xywh

Instance = fol.Detection | fol.Polyline


def merge_instances(
    instances: list[Instance], tiled: bool, nms_iou: float | None, frame_wh: tuple[int, int]
) -> list[Instance]:
    """Merges the instances of one label that several tiles found (with ``tiled``), then drops those
    that overlap a more confident one by more than ``nms_iou``, with supervision's merge and suppression.

    ``frame_wh`` is the size instance masks were drawn at.
    """
    if len(instances) < 2 or (not tiled and nms_iou is None):
        return instances
    import supervision as sv  # only runs that tile or suppress pay for its import

    if tiled:
        groups = sv.box_non_max_merge(_predictions(instances), iou_threshold=TILE_MERGE_IOU)
        instances = [_merge_group([instances[k] for k in group], frame_wh) for group in sorted(groups)]
    if nms_iou is not None:
        keep = sv.box_non_max_suppression(_predictions(instances), iou_threshold=nms_iou)
        instances = [x for x, kept in zip(instances, keep) if kept]
    return instances


def _predictions(instances: Sequence[Instance]) -> np.ndarray:
    """supervision's ``(n, 6)`` array: ``x1, y1, x2, y2``, confidence (0 when unknown), label as class id."""
    classes: dict[str | None, int] = {}
    rows = [(*_instance_xyxy(x), x.confidence or 0.0, classes.setdefault(x.label, len(classes))) for x in instances]
    return np.array(rows, dtype=float).reshape(-1, 6)


def _instance_xyxy(instance: Instance) -> XYXY:
    if isinstance(instance, fol.Polyline):
        return enclosing_xyxy([xywh_to_xyxy(points_to_rel_xywh(ring)) for ring in instance.points])
    return xywh_to_xyxy(instance.bounding_box)


def _merge_group(group: list[Instance], frame_wh: tuple[int, int]) -> Instance:
    """The group's surest instance (first), grown to hold the others: a polyline gets their rings, a
    detection their enclosing box (and the union of their masks)."""
    base = group[0]
    if len(group) == 1:
        return base
    if isinstance(base, fol.Polyline):
        base.points = [ring for x in group for ring in x.points]
        return base
    xywh = xyxy_to_xywh(enclosing_xyxy([_instance_xyxy(x) for x in group]))
    if any(x.mask is not None for x in group):
        base.mask = _union_mask(group, xywh, frame_wh)
    base.bounding_box = list(xywh)
    return base


def _union_mask(group: list[fol.Detection], rel_xywh: Sequence[float], frame_wh: tuple[int, int]) -> np.ndarray:
    """The detections' masks (a detection with none fills its box) pasted into one over ``rel_xywh``, with
    masks drawn at ``frame_wh`` pixels."""
    width, height = frame_wh

    def pixels(xywh: Sequence[float]) -> tuple[int, int, int, int]:
        x, y, w, h = xywh
        return round(x * width), round(y * height), max(1, round(w * width)), max(1, round(h * height))

    left, top, w, h = pixels(rel_xywh)
    canvas = np.zeros((h, w), dtype=bool)
    for detection in group:
        x, y, dw, dh = pixels(detection.bounding_box)
        mask = np.ones((dh, dw), bool) if detection.mask is None else np.asarray(detection.mask, bool)
        x, y = x - left, y - top
        rows, cols = min(mask.shape[0], h - y), min(mask.shape[1], w - x)
        canvas[y : y + rows, x : x + cols] |= mask[:rows, :cols]
    return canvas

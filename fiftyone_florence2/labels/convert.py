"""Parsed geometry to FiftyOne labels (answers to labels; the way back, for training, is
``training.targets``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import fiftyone.core.labels as fol
import numpy as np

from fiftyone_florence2.core.parsing import (
    BINS,
    XYWH,
    Box,
    Generation,
    Point,
    Polygon,
    TextAnswer,
    parse,
    span_confidence,
)
from fiftyone_florence2.core.tasks import Task, get_task
from fiftyone_florence2.core.thresholds import Thresholds, read_thresholds
from fiftyone_florence2.core.tiling import (
    XYXY,
    points_to_image,
    xywh_to_image,
)
from fiftyone_florence2.labels.merge import merge_instances

# The list each label type holds its instances in.
_INSTANCES = {fol.Detections: "detections", fol.Polylines: "polylines", fol.Classifications: "classifications"}
# The label types whose text a prompt field may hold (besides plain text): see texts_from_value.
PROMPT_LABELS = (fol.Classification, *_INSTANCES)


@dataclass(frozen=True)
class Result:
    """One generation with what asked for it: a prompt, or an input region; ``tile``, the tile it saw
    (relative ``[x1, y1, x2, y2]`` of the whole image), if any."""

    generation: Generation
    prompt: str | None = None
    region: fol.Detection | None = None
    tile: XYXY | None = None


def to_label(task: str | Task, text: str) -> fol.Label:
    """Turns one decoded Florence-2 generation into the label for ``task``.

    ``text`` is the decoder output as is (special tokens and padding
    included). Coordinates are relative, so no image size is needed; masks
    of open-vocabulary polygons are drawn on the 1000 x 1000 location grid.
    Region-to-text tasks return the region the model echoed, labelled with
    its answer; an answer that echoes no usable region has no box to go on,
    so it comes back as a ``Classification`` holding the text (an empty
    answer stays an empty ``Detections``).
    """
    task = get_task(task)
    result = Result(Generation(text))
    if task.boxes_per_region:
        answer = _parsed(task, text, TextAnswer)
        if answer.text and answer.rel_xywh is None:
            return _text_classification(answer, result.generation)
    return build_label(task, [result])


def build_label(
    task: Task,
    results: Sequence[Result],
    masks: bool = False,
    image_wh: tuple[int, int] | None = None,
    nms_iou: float | None = None,
) -> fol.Label:
    """Merges the generations made for one sample and ``task`` into one label.

    Answers about tiles are put back in whole-image coordinates, and instances
    of one label that two tiles found (IoU above ``TILE_MERGE_IOU``) are merged
    into one, on their enclosing box, with the confidence of the surest.

    Args:
        task: the task
        results: the generations, each with the prompt or region it answers
        masks (False): write segmentation tasks as ``Detections`` with
            instance masks instead of ``Polylines``
        image_wh (None): the image's ``(width, height)``, needed for masks
            of segmentation tasks; open-vocabulary polygons are masked at
            this size, else on the 1000 x 1000 location grid
        nms_iou (None): drop each box or polygon whose IoU with a more
            confident one of the same label is above this
    """
    if task.label_type == "Classification":
        if len(results) != 1:
            raise ValueError(f"Task {task.name!r} makes one classification per sample, got {len(results)}.")
        return _classification(task, results[0])
    tiled = any(r.tile is not None for r in results)
    frame_wh = image_wh or (BINS, BINS)
    if task.label_type == "Polylines":
        found = [p for r in results for p in _polylines(task, r)]
        polylines = fol.Polylines(polylines=merge_instances(found, tiled, nms_iou, frame_wh))
        if not masks:
            return polylines
        if image_wh is None:
            raise ValueError("Instance masks need the image size.")
        return polylines.to_detections(frame_size=image_wh)
    if task.boxes_per_region:
        return fol.Detections(detections=[d for r in results for d in _region_answer(task, r)])
    found = [d for r in results for d in _detections(task, r, image_wh)]
    return fol.Detections(detections=merge_instances(found, tiled, nms_iou, frame_wh))


def _parsed(task: Task, text: str, kind: type) -> Any:
    """``parse(task, text)``, which the task table makes a ``TextAnswer`` or a list of ``kind``
    (``Box``, ``Polygon``); anything else is a bug in the table, said as such."""
    answer = parse(task, text)
    items = [answer] if kind is TextAnswer else answer if isinstance(answer, list) else [answer]
    if not all(isinstance(item, kind) for item in items):
        raise TypeError(f"Task {task.name!r} parses to {type(answer).__name__}, where {kind.__name__} was expected.")
    return answer


def _classification(task: Task, result: Result) -> fol.Classification:
    answer = _parsed(task, result.generation.text, TextAnswer)
    return _text_classification(answer, result.generation)


def _text_classification(answer: TextAnswer, generation: Generation) -> fol.Classification:
    return fol.Classification(label=answer.text, confidence=span_confidence(answer.spans, generation))


def _region_answer(task: Task, result: Result) -> list[fol.Detection]:
    answer = _parsed(task, result.generation.text, TextAnswer)
    if not answer.text:
        return []
    confidence = span_confidence(answer.spans, result.generation)
    if result.region is not None:
        return [_region_copy(result.region, label=answer.text, confidence=confidence)]
    if answer.rel_xywh is None:  # no input region and no usable echo: nowhere to put the answer
        return []
    return [fol.Detection(label=answer.text, bounding_box=list(answer.rel_xywh), confidence=confidence)]


def _region_copy(region: fol.Detection, **fields) -> fol.Detection:
    """A new detection on the region's box, pointing back to it."""
    return fol.Detection(bounding_box=list(region.bounding_box), region_id=region.id, **fields)


def _detections(task: Task, result: Result, image_wh: tuple[int, int] | None = None) -> list[fol.Detection]:
    detections = []
    for box in _parsed(task, result.generation.text, Box):
        box = _box_in_image(box, result.tile)
        label = result.prompt if task.labelled_by_prompt and result.prompt else (box.label or task.unnamed_label)
        detection = fol.Detection(
            label=label,
            bounding_box=list(box.rel_xywh),
            confidence=span_confidence(box.spans, result.generation),
        )
        if task.answer == "quads":
            detection["quad"] = [list(p) for p in box.points[0]]
        elif task.answer == "boxes_or_polygons" and box.points:
            detection.mask = _rings_to_mask(box.points, box.rel_xywh, image_wh or (BINS, BINS))
        detections.append(detection)
    return detections


def _rings_to_mask(rings: tuple[tuple[Point, ...], ...], rel_xywh: XYWH, frame_wh: tuple[int, int]) -> np.ndarray:
    """The filled rings as a boolean instance mask over their box ``rel_xywh``, at ``frame_wh`` pixels.

    The mask is at least one pixel each way, so that a box thinner than a
    pixel still carries its (full) shape.
    """
    mask_wh = (max(1, round(rel_xywh[2] * frame_wh[0])), max(1, round(rel_xywh[3] * frame_wh[1])))
    polyline = fol.Polyline(points=[[list(p) for p in ring] for ring in rings], closed=True, filled=True)
    return polyline.to_detection(mask_size=mask_wh).mask


def _polylines(task: Task, result: Result) -> list[fol.Polyline]:
    polylines = []
    for polygon in _parsed(task, result.generation.text, Polygon):
        if result.tile is not None:
            polygon = replace(polygon, rings=tuple(points_to_image(ring, result.tile) for ring in polygon.rings))
        if result.region is not None:
            label, extra = result.region.label, {"region_id": result.region.id}
        else:
            label, extra = (result.prompt or polygon.label), {}
        polylines.append(
            fol.Polyline(
                label=label,
                points=[[list(p) for p in ring] for ring in polygon.rings],
                closed=True,
                filled=True,
                confidence=span_confidence(polygon.spans, result.generation),
                **extra,
            )
        )
    return polylines


def _box_in_image(box: Box, tile: XYXY | None) -> Box:
    """A box (and its quad or rings) found in ``tile``, in whole-image coordinates."""
    if tile is None:
        return box
    points = tuple(points_to_image(ring, tile) for ring in box.points)
    return replace(box, rel_xywh=xywh_to_image(box.rel_xywh, tile), points=points)


def threshold(label: fol.Label, confidence_thresh: Any) -> fol.Label:
    """Drops the instances whose confidence is below their class's threshold (a classification below
    its own is emptied).

    ``confidence_thresh`` is anything :func:`~fiftyone_florence2.core.thresholds.read_thresholds` reads
    (``apply_model(confidence_thresh=...)`` sets it unchecked). A class with no threshold and no default
    raises ``ValueError`` naming it (the sample fails with that reason): nothing is dropped or kept by a
    rule nobody chose.
    """
    thresholds = read_thresholds("confidence_thresh", confidence_thresh)
    if thresholds is None:
        return label
    name = _INSTANCES.get(type(label))
    if name is not None:
        label[name] = [x for x in label[name] if _reaches(x, thresholds)]
        return label
    return label if _reaches(label, thresholds) else fol.Classification()


def _reaches(label: fol.Label, thresholds: Thresholds) -> bool:
    return label.confidence is not None and label.confidence >= thresholds.for_class(label.label)


def texts_from_value(value: object) -> list[str]:
    """The prompts a field value holds: a string, strings, or labelled FiftyOne labels."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, fol.Classification):
        return [value.label] if value.label else []
    name = _INSTANCES.get(type(value))
    if name is not None:
        return list(dict.fromkeys(label.label for label in value[name] if label.label))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(dict.fromkeys(value))
    raise ValueError(f"a prompt field must hold text or labels, not {type(value).__name__}")


# Names of instances a summary shows; the rest are counted.
SHOWN_NAMES = 10


def summarize(label: fol.Label | None) -> tuple[str, list[float | None]]:
    """What a label holds, for a person to read: a classification's text, or the count of boxes,
    masks or polygons with their labels; and each confidence (None where there is none)."""
    if label is None:
        return "nothing", []
    field = _INSTANCES.get(type(label))
    if field is None:
        return (label.label or "(empty text)"), [label.confidence]
    instances = label[field]
    noun = {"detections": "box", "polylines": "polygon", "classifications": "class"}[field]
    if noun == "box" and any(d.mask is not None for d in instances):
        noun = "mask"
    count = len(instances)
    text = f"{count} {noun if count == 1 else noun + ('es' if noun in ('box', 'class') else 's')}"
    names = [str(x.label) for x in instances[:SHOWN_NAMES]]
    if names:
        text += ": " + ", ".join(names) + (f", and {count - SHOWN_NAMES} more" if count > SHOWN_NAMES else "")
    return text, [x.confidence for x in instances]

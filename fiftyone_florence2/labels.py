"""Parsed geometry to FiftyOne labels: the only module that knows label semantics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import fiftyone.core.labels as fol

from .parsing import Box, Generation, Polygon, TextAnswer, parse, span_confidence
from .tasks import Task, get_task

# The list each label type holds its instances in.
_INSTANCES = {fol.Detections: "detections", fol.Polylines: "polylines", fol.Classifications: "classifications"}


@dataclass(frozen=True)
class Result:
    """One generation with what asked for it: a prompt, or an input region."""

    generation: Generation
    prompt: str | None = None
    region: fol.Detection | None = None


def to_label(task: str | Task, text: str) -> fol.Label:
    """Turns one decoded Florence-2 generation into the label for ``task``.

    ``text`` is the decoder output as is (special tokens and padding
    included). Coordinates are relative, so no image size is needed. Region
    tasks return the region the model echoed, labelled with its answer.
    """
    return build_label(get_task(task), [Result(Generation(text))])


def build_label(
    task: Task,
    results: Sequence[Result],
    masks: bool = False,
    image_wh: tuple[int, int] | None = None,
) -> fol.Label:
    """Merges the generations made for one sample and ``task`` into one label.

    Args:
        task: the task
        results: the generations, each with the prompt or region it answers
        masks (False): write segmentation tasks as ``Detections`` with
            instance masks instead of ``Polylines``
        image_wh (None): the image's ``(width, height)``, needed for masks
    """
    if task.label_type == "Classification":
        if len(results) != 1:
            raise ValueError(f"Task {task.name!r} makes one classification per sample, got {len(results)}.")
        return _classification(task, results[0])
    if task.label_type == "Polylines":
        polylines = fol.Polylines(polylines=[p for r in results for p in _polylines(task, r)])
        if not masks:
            return polylines
        if image_wh is None:
            raise ValueError("Instance masks need the image size.")
        return polylines.to_detections(frame_size=image_wh)
    if task.boxes_per_region:
        return fol.Detections(detections=[d for r in results for d in _region_answer(task, r)])
    return fol.Detections(detections=[d for r in results for d in _detections(task, r)])


def _classification(task: Task, result: Result) -> fol.Classification:
    answer = parse(task, result.generation.text)
    assert isinstance(answer, TextAnswer)
    return fol.Classification(label=answer.text, confidence=span_confidence(answer.spans, result.generation))


def _region_answer(task: Task, result: Result) -> list[fol.Detection]:
    answer = parse(task, result.generation.text)
    assert isinstance(answer, TextAnswer)
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


def _detections(task: Task, result: Result) -> list[fol.Detection]:
    boxes = parse(task, result.generation.text)
    assert isinstance(boxes, list)
    detections = []
    for box in boxes:
        assert isinstance(box, Box)
        label = result.prompt if task.labelled_by_prompt and result.prompt else (box.label or task.unnamed_label)
        detection = fol.Detection(
            label=label,
            bounding_box=list(box.rel_xywh),
            confidence=span_confidence(box.spans, result.generation),
        )
        if task.answer == "quads":
            detection["quad"] = [list(p) for p in box.points[0]]
        detections.append(detection)
    return detections


def _polylines(task: Task, result: Result) -> list[fol.Polyline]:
    polygons = parse(task, result.generation.text)
    assert isinstance(polygons, list)
    polylines = []
    for polygon in polygons:
        assert isinstance(polygon, Polygon)
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


def threshold(label: fol.Label, confidence_thresh: float | None) -> fol.Label:
    """Drops the instances whose confidence is below ``confidence_thresh`` (a classification is emptied)."""
    if confidence_thresh is None:
        return label
    name = _INSTANCES.get(type(label))
    if name is not None:
        label[name] = [x for x in label[name] if x.confidence is not None and x.confidence >= confidence_thresh]
        return label
    if label.confidence is None or label.confidence < confidence_thresh:
        return fol.Classification()
    return label


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

"""Labels back to answers, for training: the text Florence-2 is trained to emit for a FiftyOne label (the
inverse of ``labels.convert.build_label``), and the label classes each task learns from (:func:`learns_from`)."""

from __future__ import annotations

from collections.abc import Sequence

import fiftyone.core.labels as fol

from fiftyone_florence2.core.answers import answer_text, rings_rel_xywh, split_generations, training_pairs
from fiftyone_florence2.core.parsing import Answer, Box, Polygon, TextAnswer
from fiftyone_florence2.core.tasks import Task, get_task


def learns_from(task: Task) -> tuple[type[fol.Label], ...]:
    """The label classes ``task`` trains from: text tasks a ``Classification``; segmentation tasks
    ``Polylines``; open-vocabulary detection ``Polylines`` (polygons) or ``Detections`` (boxes); the others
    ``Detections``. The one table both the data checks and :func:`answer_data` read."""
    if task.label_type == "Classification":
        return (fol.Classification,)
    if task.answer == "boxes_or_polygons":
        return (fol.Polylines, fol.Detections)
    if task.answer == "polygons" or task.label_type == "Polylines":
        return (fol.Polylines,)
    return (fol.Detections,)


def answer_data(task: str | Task, label: fol.Label) -> Answer:
    """``label`` as the plain geometry that ``answers`` writes for ``task``, from a label of a class it
    learns from (:func:`learns_from`).

    Polygons are read from closed ``Polylines``; boxes from ``Detections``
    (masks are not read), where an OCR region's ``quad`` attribute, if set, is
    its quad.
    """
    task = get_task(task)
    _expect(task, label)
    if isinstance(label, fol.Classification):
        return TextAnswer(label.label or "")
    if isinstance(label, fol.Polylines):
        polygons = [_polygon(polyline, i) for i, polyline in enumerate(label.polylines)]
        if task.answer != "boxes_or_polygons":
            return polygons
        return [Box(p.label, rings_rel_xywh(p.rings, f"polyline {i}"), points=p.rings) for i, p in enumerate(polygons)]
    return [_answer_box(task, d) for d in label.detections]


def _expect(task: Task, label: object) -> None:
    kinds = learns_from(task)
    if not isinstance(label, kinds):
        hint = " (instance masks become polylines with Detections.to_polylines())" if kinds == (fol.Polylines,) else ""
        names = " or ".join(kind.__name__ for kind in kinds)
        raise ValueError(f"Task {task.name!r} trains from {names}, not {type(label).__name__}{hint}.")


def _answer_box(task: Task, detection: fol.Detection) -> Box:
    quad = detection["quad"] if task.answer == "quads" and detection.has_field("quad") else None
    return Box(detection.label, tuple(detection.bounding_box or ()), points=() if quad is None else (quad,))


def _polygon(polyline: fol.Polyline, i: int) -> Polygon:
    if not polyline.closed:
        raise ValueError(
            f"Polyline {i} ({polyline.label!r}) is open (closed=False), and segmentation answers are regions: "
            "set closed=True on polylines that outline a region."
        )
    return Polygon(polyline.label, polyline.points)


def to_answer(task: str | Task, label: fol.Label) -> str:
    """The text Florence-2 is trained to emit for ``label``: the inverse of :func:`to_label`.

    ``to_label(task, to_answer(task, label))`` gives ``label`` back within
    one location bin. A label that stands for several generations (several
    regions, or several classes) is refused: use :func:`to_training_pairs`.
    An empty label (no instances) is the empty answer.
    """
    task = get_task(task)
    units = split_generations(task, answer_data(task, label))
    if len(units) > 1:
        raise ValueError(
            f"For task {task.name!r} this label stands for {len(units)} generations (one per "
            f"{'region' if task.input == 'region' else 'class'}); use to_training_pairs."
        )
    return answer_text(task, units[0][1]) if units else ""


def to_training_pairs(
    task: str | Task, label: fol.Label, prompt: str | None = None, classes: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(question, answer text)`` for every generation ``label`` stands for (see ``answers.training_pairs``)."""
    task = get_task(task)
    return training_pairs(task, answer_data(task, label), prompt=prompt, classes=classes)

"""Relative geometry back to Florence-2 answers: the inverse of parsing. Standard library only.

:func:`answer_text` writes the text Florence-2 is trained to emit for one
generation (what the decoder writes after ``<s>`` and before ``</s>``), in
the shapes transformers' processor parses:

- detection, dense region caption: ``label<loc_x1><loc_y1><loc_x2><loc_y2>`` per object;
  region proposal: the boxes alone
- phrase grounding, open-vocabulary detection: each phrase once, then all its boxes;
  open-vocabulary polygons: ``phrase<poly>ring<sep>ring</poly><poly>...</poly>``
- OCR with region: each text, then its quad (eight bins, clockwise from the top left)
- segmentation: the rings of one instance joined by ``<sep>``; several instances each in
  ``<poly>..</poly>``
- region-to-text tasks: the text, then the input region again (``car<loc_52>...<loc_774>``)

Coordinates are quantized as the processor does (``floor(rel * 1000)``, clamped to 0..999),
so ``parse(task, answer_text(task, answer))`` gives ``answer`` back within one location bin
(a box thinner than a bin comes back one bin wide). What could not be read back as given (a
coordinate off the image or not finite, an empty label, text holding Florence-2 tokens, a ring
whose points all lie on one line at 1000 bins) is refused with ``ValueError``, never dropped or bent.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

from fiftyone_florence2.core.parsing import (
    BANNED_GROUNDING_PHRASES,
    NO_ANSWER,
    XYWH,
    Answer,
    Box,
    Point,
    Polygon,
    TextAnswer,
    points_to_rel_xywh,
    ring_has_area,
    tokenize,
)
from fiftyone_florence2.core.prompts import (
    box_bins,
    build_question,
    check_prompt,
    find_special_token,
    loc_tokens,
    region_tokens,
    rel_to_bin,
)
from fiftyone_florence2.core.tasks import BINS, Task, get_task

# A coordinate within half a bin of the image's edge is on it (rounding when pixels became
# relative); further out it is not, and clamping it would train the wrong place.
EDGE_SLACK = 0.5 / BINS
# Answer kinds whose labels transformers' parser reads only up to the first "<" (``[^<]+``).
_LABEL_BEFORE_LOCATIONS = frozenset({"boxes", "phrase_boxes", "boxes_or_polygons"})

# What one generation's question takes besides the task: nothing, a prompt (class) or a region.
Given = str | XYWH | None


def _number(value: object, where: str) -> float:
    """``value`` as a finite float, else ``ValueError``."""
    number = None
    if not isinstance(value, (str, bytes)):  # float("0.5") would take text for a coordinate
        with contextlib.suppress(TypeError, ValueError):
            number = float(value)  # type: ignore[arg-type]
    if number is None:
        raise ValueError(f"{where}: {value!r} is not a number.")
    if not math.isfinite(number):
        raise ValueError(f"{where}: {value!r} is not a finite number.")
    return number


def _on_image(value: float, where: str) -> float:
    """``value`` if it lies in [0, 1] (give or take :data:`EDGE_SLACK`), else ``ValueError``."""
    if not -EDGE_SLACK <= value <= 1 + EDGE_SLACK:
        raise ValueError(
            f"{where}: {value} is off the image. Answers take relative coordinates in [0, 1]: "
            "divide pixels by the image size and clip boxes to the image."
        )
    return value


def _items(value: object, where: str, what: str, size: int | None = None) -> list:
    """``value`` as a list (of ``size`` items), else ``ValueError`` saying ``what`` it should be."""
    items = None
    if not isinstance(value, (str, bytes)):
        with contextlib.suppress(TypeError):
            items = list(value)  # type: ignore[call-overload]
    if items is None or (size is not None and len(items) != size):
        raise ValueError(f"{where}: {what}, got {value!r}.")
    return items


def check_rel_xywh(rel_xywh: object, where: str = "box") -> XYWH:
    """A relative ``[x, y, w, h]`` box that lies on the image with an area, else ``ValueError``."""
    x, y, w, h = (_number(v, where) for v in _items(rel_xywh, where, "a box is [x, y, width, height]", 4))
    if not (w > 0 and h > 0):
        raise ValueError(f"{where}: the box {[x, y, w, h]} has no area; width and height must be positive.")
    for corner in (x, y, x + w, y + h):
        _on_image(corner, where)
    if not (x < 1 and y < 1 and x + w > 0 and y + h > 0):
        raise ValueError(f"{where}: the box {[x, y, w, h]} covers none of the image.")
    return (x, y, w, h)


def _point(point: object, where: str) -> Point:
    """One relative ``(x, y)`` point on the image."""
    x, y = (_on_image(_number(v, where), where) for v in _items(point, where, "a point is [x, y]", 2))
    return x, y


def _point_bins(point: object, where: str) -> tuple[int, int]:
    x, y = _point(point, where)
    return rel_to_bin(x), rel_to_bin(y)


def check_text(text: object, where: str) -> str:
    """``text`` stripped, if it holds no Florence-2 token (nor a tag the parser reads as one)."""
    if not isinstance(text, str):
        raise ValueError(f"{where}: text must be a string, not {type(text).__name__}.")
    token = find_special_token(text) or next((p.value for p in tokenize(text) if p.kind != "text"), None)
    if token:
        raise ValueError(f"{where}: the text holds {token!r}, which Florence-2 reads as a token, not text; remove it.")
    return text.strip()


def check_label(task: Task, label: object, where: str) -> str:
    """A label as the parser reads it back (whitespace collapsed), or ``ValueError``."""
    text = " ".join(check_text(label, where).split()) if label is not None else ""
    if not text:
        raise ValueError(f"{where}: the label is empty; task {task.name!r} writes a name for every instance.")
    if "<" in text and task.answer in _LABEL_BEFORE_LOCATIONS:
        raise ValueError(f"{where}: the label {text!r} holds '<'; Florence-2's parser reads a label only up to it.")
    if task.answer == "phrase_boxes" and text in BANNED_GROUNDING_PHRASES:
        raise ValueError(f"{where}: {text!r} is a phrase Florence-2's parser never grounds; name the object instead.")
    return text


def box_tokens(rel_xywh: object, where: str = "box") -> str:
    """``<loc_x1><loc_y1><loc_x2><loc_y2>`` for a checked relative box, at least one bin wide."""
    return loc_tokens(box_bins(check_rel_xywh(rel_xywh, where)))


def quad_tokens(box: Box, where: str) -> str:
    """The eight bins of a text region: its quad if it has one, else its box's corners clockwise."""
    if not box.points:
        x1, y1, x2, y2 = box_bins(check_rel_xywh(box.rel_xywh, where))
        return loc_tokens((x1, y1, x2, y1, x2, y2, x1, y2))
    quads = _items(box.points, where, "a text region has one quad", 1)
    quad = _items(quads[0], where, "a quad is four [x, y] points", 4)
    points = [_point_bins(point, where) for point in quad]
    if len({x for x, _ in points}) < 2 or len({y for _, y in points}) < 2:
        raise ValueError(f"{where}: the quad {list(quad)} is thinner than one location bin (1/{BINS} of the image).")
    return loc_tokens([b for point in points for b in point])


def ring_bins(ring: object, where: str) -> list[int]:
    """The bins of a closed ring, ``x, y`` pairs, with repeats of the point before dropped."""
    points: list[tuple[int, int]] = []
    for point in (_point_bins(p, where) for p in _items(ring, where, "a ring is a list of [x, y] points")):
        if not points or point != points[-1]:
            points.append(point)
    if len(points) > 1 and points[0] == points[-1]:
        points.pop()  # the ring's closing point, written again
    bins = [b for point in points for b in point]
    if not ring_has_area(bins):
        raise ValueError(
            f"{where}: the ring has fewer than three distinct points, or they all lie on one line, at {BINS} location "
            "bins."
        )
    return bins


def rings_tokens(rings: object, where: str) -> str:
    """One instance's rings, joined by ``<sep>``."""
    items = _items(rings, where, "a polygon is a list of rings of [x, y] points")
    if not items:
        raise ValueError(f"{where}: a polygon needs at least one ring.")
    return "<sep>".join(loc_tokens(ring_bins(ring, f"{where}, ring {i}")) for i, ring in enumerate(items))


def rings_rel_xywh(rings: object, where: str) -> XYWH:
    """The box enclosing a polygon's rings (checked first), for the question of a region task."""
    rings_tokens(rings, where)
    return points_to_rel_xywh(
        [_point(p, where) for ring in _items(rings, where, "rings") for p in _items(ring, where, "a ring")]
    )


def _instances(answer: object, kind: type, task: Task) -> list:
    if not isinstance(answer, (list, tuple)) or not all(isinstance(item, kind) for item in answer):
        raise ValueError(f"Task {task.name!r} answers with a list of {kind.__name__}, got {answer!r}.")
    return list(answer)


def _text(task: Task, answer: object) -> str:
    if not isinstance(answer, TextAnswer):
        raise ValueError(f"Task {task.name!r} answers with a TextAnswer, got {answer!r}.")
    text = check_text(answer.text if answer.text is not None else "", f"{task.name} answer")
    if text.lower() == NO_ANSWER:
        raise ValueError(f"{text!r} reads back as no answer; task {task.name!r} needs the text itself.")
    if not text and not (task.empty_text_ok and answer.rel_xywh is None):
        raise ValueError(f"Task {task.name!r} needs text to answer with; the label is empty.")
    if task.echoes_region:
        if answer.rel_xywh is None:
            raise ValueError(f"Task {task.name!r} repeats its input region after the text; give the region.")
        return text + region_tokens(check_rel_xywh(answer.rel_xywh, f"{task.name} region"))
    if answer.rel_xywh is not None:
        raise ValueError(f"Task {task.name!r} takes no region.")
    return text


def _named_boxes(task: Task, answer: object) -> str:
    return "".join(
        check_label(task, box.label, f"box {i}") + box_tokens(box.rel_xywh, f"box {i}")
        for i, box in enumerate(_instances(answer, Box, task))
    )


def _unnamed_boxes(task: Task, answer: object) -> str:
    return "".join(box_tokens(box.rel_xywh, f"box {i}") for i, box in enumerate(_instances(answer, Box, task)))


def _phrases(task: Task, answer: object) -> str:
    """Each phrase once, in order of first appearance, then its boxes (or its ``<poly>`` polygons)."""
    boxes = _instances(answer, Box, task)
    with_polygons = {bool(box.points) for box in boxes}
    if len(with_polygons) > 1:
        raise ValueError(f"Task {task.name!r} answers with boxes or with polygons; give every instance rings, or none.")
    groups: dict[str, list[str]] = {}
    for i, box in enumerate(boxes):
        where = f"instance {i}"
        shape = f"<poly>{rings_tokens(box.points, where)}</poly>" if box.points else box_tokens(box.rel_xywh, where)
        groups.setdefault(check_label(task, box.label, where), []).append(shape)
    return "".join(phrase + "".join(shapes) for phrase, shapes in groups.items())


def _quads(task: Task, answer: object) -> str:
    return "".join(
        check_label(task, box.label, f"text {i}") + quad_tokens(box, f"text {i}")
        for i, box in enumerate(_instances(answer, Box, task))
    )


def _polygons(task: Task, answer: object) -> str:
    """Names are not written: the prompt (or region) that asked labels each instance."""
    instances = [rings_tokens(p.rings, f"polygon {i}") for i, p in enumerate(_instances(answer, Polygon, task))]
    return instances[0] if len(instances) == 1 else "".join(f"<poly>{rings}</poly>" for rings in instances)


def _free(task: Task, answer: object) -> str:
    raise ValueError(
        f"Task {task.name!r} sends a fine-tune's own prompt, whose answers have no fixed shape to learn: "
        "fine-tune with the task the checkpoint was trained for."
    )


_WRITERS = {
    "text": _text,
    "boxes": _named_boxes,
    "unnamed_boxes": _unnamed_boxes,
    "phrase_boxes": _phrases,
    "quads": _quads,
    "polygons": _polygons,
    "boxes_or_polygons": _phrases,
    "free": _free,
}


def answer_text(task: str | Task, answer: Answer) -> str:
    """The text Florence-2 is trained to emit for one generation of ``task`` (the inverse of ``parse``).

    ``answer`` has the shape ``parse`` returns for the task: a
    ``TextAnswer`` (region-to-text tasks: with the region), a list of
    ``Box`` (quads and open-vocabulary polygons in ``points``) or a list of
    ``Polygon``. An empty list is the empty answer.
    """
    task = get_task(task)
    return _WRITERS[task.answer](task, answer)


def split_generations(
    task: str | Task, answer: Answer, classes: Sequence[str] | None = None
) -> list[tuple[Given, Answer]]:
    """The generations a sample's answer stands for: ``(what the question takes, the answer to it)``.

    Region tasks make one per instance (its box is the region; a polygon's
    region is the box enclosing it); tasks that take classes make one per
    class, in ``classes`` order or else in order of first appearance (a
    class with no instances is a generation with the empty answer); the
    others make one.
    """
    task = get_task(task)
    if classes is not None and not task.takes_classes:
        raise ValueError(f"Task {task.name!r} takes no classes.")
    if isinstance(classes, str):
        raise ValueError(f"classes must be a list of class names, not the string {classes!r}.")
    if task.input == "region":
        return [_region_generation(task, item, i) for i, item in enumerate(_instances(answer, object, task))]
    if task.takes_classes:
        return _class_generations(task, _instances(answer, object, task), classes)
    return [(None, answer)]


def _region_generation(task: Task, item: object, i: int) -> tuple[XYWH, Answer]:
    where = f"region {i}"
    if task.answer == "polygons":
        if not isinstance(item, Polygon):
            raise ValueError(f"{where}: task {task.name!r} answers each region with a Polygon, got {item!r}.")
        return check_rel_xywh(rings_rel_xywh(item.rings, where), where), [item]
    if not isinstance(item, Box):
        raise ValueError(f"{where}: task {task.name!r} answers each region's Box with its label, got {item!r}.")
    region = check_rel_xywh(item.rel_xywh, where)
    return region, TextAnswer(item.label if item.label is not None else "", rel_xywh=region)


def _class_generations(task: Task, items: list, classes: Sequence[str] | None) -> list[tuple[Given, Answer]]:
    groups: dict[str, list] = {}
    for given in classes or ():
        name = check_prompt(given)
        if name in groups:
            raise ValueError(f"The class {name!r} is given more than once.")
        groups[name] = []
    for i, item in enumerate(items):
        label = getattr(item, "label", None)
        try:
            name = check_prompt(label)
        except ValueError as error:
            raise ValueError(f"Instance {i} cannot be asked for by its label {label!r}: {error}") from None
        if classes is not None and name not in groups:
            raise ValueError(f"Instance {i} is labelled {name!r}, which is not among the classes {list(groups)}.")
        groups.setdefault(name, []).append(item)
    return list(groups.items())


def region_answers(task: str | Task, instances: Sequence[Box] | Sequence[Polygon]) -> list[tuple[XYWH, str]]:
    """``(input region, answer text)`` for each instance of a region task."""
    task = get_task(task)
    if task.input != "region":
        raise ValueError(f"Task {task.name!r} takes no region.")
    return [(region, answer_text(task, unit)) for region, unit in split_generations(task, list(instances))]


def class_answers(
    task: str | Task, instances: Sequence[Box] | Sequence[Polygon], classes: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(class, answer text)`` for each class of a task that takes classes."""
    task = get_task(task)
    if not task.takes_classes:
        raise ValueError(f"Task {task.name!r} takes no classes.")
    return [(name, answer_text(task, unit)) for name, unit in split_generations(task, list(instances), classes)]


def training_pairs(
    task: str | Task, answer: Answer, prompt: str | None = None, classes: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(question, answer text)`` for every generation of one sample, questions as the model reads them.

    ``prompt`` is the caption a phrase-grounding answer grounds; tasks that
    take classes ask for each class (``classes`` adds classes with no
    instances, whose answer is empty).
    """
    task = get_task(task)
    if prompt is not None and (task.input != "text" or task.takes_classes):
        reason = "its classes come from the labels (pass classes=)" if task.takes_classes else "it asks no prompt"
        raise ValueError(f"Task {task.name!r} takes no prompt: {reason}.")
    pairs = []
    for given, unit in split_generations(task, answer, classes):
        text = given if isinstance(given, str) else prompt
        region = given if isinstance(given, tuple) else None
        pairs.append((build_question(task, text=text, rel_xywh=region), answer_text(task, unit)))
    return pairs

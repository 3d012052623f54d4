"""Labels back to Florence-2 answers: literal formats, refusals, and round trips through the parser.

The contract: for every task, ``to_label(task, answer)`` gives the label back
within one location bin (0.001 relative) with the same label strings, and
what cannot be an answer is refused with ``ValueError``, never dropped.
"""

from __future__ import annotations

import math

import fiftyone.core.labels as fol
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fiftyone_florence2 import to_answer, to_label, to_training_pairs
from fiftyone_florence2.core.answers import answer_text, class_answers, region_answers, training_pairs
from fiftyone_florence2.core.parsing import (
    BANNED_GROUNDING_PHRASES,
    Box,
    Generation,
    Polygon,
    TextAnswer,
    parse,
    ring_has_area,
)
from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import TASKS, get_task
from fiftyone_florence2.labels.convert import Result, build_label
from fiftyone_florence2.training.targets import answer_data

BIN = 0.001
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
L = "<loc_{}>".format


def locs(*bins: int) -> str:
    return "".join(L(b) for b in bins)


TRI = ((0.1, 0.1), (0.5, 0.1), (0.3, 0.4))
TRI_LOCS = locs(100, 100, 500, 100, 300, 400)
SQUARE = ((0.6, 0.6), (0.9, 0.6), (0.9, 0.9), (0.6, 0.9))
SQUARE_LOCS = locs(600, 600, 900, 600, 900, 900, 600, 900)
TWO_INSTANCES = f"<poly>{TRI_LOCS}</poly><poly>{SQUARE_LOCS}</poly>"
CAR = Box("car", (0.1, 0.2, 0.3, 0.4))
CAR_LOCS = locs(100, 200, 400, 600)
DOG = Box("dog", (0.5, 0.5, 0.2, 0.2))
DOG_LOCS = locs(500, 500, 700, 700)

# --- The formats, as literal strings ------------------------------------------------------------

FORMAT_CASES = [
    ("detection", [CAR, DOG, CAR], "car" + CAR_LOCS + "dog" + DOG_LOCS + "car" + CAR_LOCS),
    ("detection", [Box("  big \n dog ", CAR.rel_xywh)], "big dog" + CAR_LOCS),  # read back collapsed
    ("detection", [Box("café 車", (0.0, 0.0, 1.0, 1.0))], "café 車" + locs(0, 0, 999, 999)),
    ("detection", [Box("car", (0.5, 0.5, 0.0001, 0.0001))], "car" + locs(500, 500, 501, 501)),  # one bin wide
    ("detection", [Box("car", (-0.0004, 0.2, 1.0008, 0.4))], "car" + locs(0, 200, 999, 600)),  # half a bin out
    ("detection", [], ""),
    ("dense_region_caption", [Box("a red car", CAR.rel_xywh)], "a red car" + CAR_LOCS),
    ("region_proposal", [CAR, Box(None, DOG.rel_xywh)], CAR_LOCS + DOG_LOCS),
    ("region_proposal", [], ""),
    ("phrase_grounding", [CAR, DOG, CAR], "car" + CAR_LOCS + CAR_LOCS + "dog" + DOG_LOCS),
    ("phrase_grounding", [], ""),
    ("open_vocabulary_detection", [CAR, CAR], "car" + CAR_LOCS + CAR_LOCS),
    (
        "open_vocabulary_detection",
        [Box("car", (0.1, 0.1, 0.8, 0.8), points=(TRI, SQUARE)), Box("car", (0, 0, 1, 1), points=(TRI,))],
        f"car<poly>{TRI_LOCS}<sep>{SQUARE_LOCS}</poly><poly>{TRI_LOCS}</poly>",
    ),
    ("open_vocabulary_detection", [], ""),
    ("ocr_with_region", [Box("STOP", CAR.rel_xywh)], "STOP" + locs(100, 200, 400, 200, 400, 600, 100, 600)),
    (
        "ocr_with_region",
        [Box("OPEN 24 HOURS", (0, 0, 1, 1), points=(((0.1, 0.2), (0.5, 0.21), (0.5, 0.3), (0.1, 0.29)),))],
        "OPEN 24 HOURS" + locs(100, 200, 500, 210, 500, 300, 100, 290),
    ),
    ("ocr_with_region", [], ""),
    ("segmentation", [Polygon("car", (TRI, SQUARE))], f"{TRI_LOCS}<sep>{SQUARE_LOCS}"),
    ("segmentation", [Polygon("a", (TRI,)), Polygon("a", (SQUARE,))], TWO_INSTANCES),
    ("segmentation", [Polygon(None, (TRI + TRI[:1],))], TRI_LOCS),  # a repeated closing point is dropped
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.1004, 0.1), (0.5, 0.1), (0.3, 0.4)),))], TRI_LOCS),
    ("segmentation", [], ""),
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.5, 0.5), (0.5, 0.1), (0.1, 0.5)),))],
     locs(100, 100, 500, 500, 500, 100, 100, 500)),  # a bow-tie: its signed area nets to 0, and it is kept
    ("region_to_segmentation", [Polygon(None, (TRI,))], TRI_LOCS),
    ("caption", TextAnswer("  A dog on a beach. "), "A dog on a beach."),
    ("detailed_caption", TextAnswer("A brown dog runs on a beach."), "A brown dog runs on a beach."),
    ("more_detailed_caption", TextAnswer("Two lines\nof text, 3 < 4."), "Two lines\nof text, 3 < 4."),
    ("ocr", TextAnswer("CUDA FOR ENGINEERS"), "CUDA FOR ENGINEERS"),
    ("ocr", TextAnswer(""), ""),  # an image with no text
    ("region_to_category", TextAnswer("car", rel_xywh=CAR.rel_xywh), "car" + CAR_LOCS),  # the region echoed
    ("region_to_description", TextAnswer("turquoise Beetle", rel_xywh=CAR.rel_xywh), "turquoise Beetle" + CAR_LOCS),
    ("region_to_ocr", TextAnswer("STOP", rel_xywh=CAR.rel_xywh), "STOP" + CAR_LOCS),
]  # fmt: skip


@pytest.mark.parametrize(("task", "answer", "expected"), FORMAT_CASES)
def test_answer_text_formats(task, answer, expected):
    assert answer_text(task, answer) == expected


# Every task whose answers are learnt (all but the free prompt's, refused above).
LEARNT = {task.name for task in TASKS if not task.free}


def test_every_task_has_a_format_case():
    assert {case[0] for case in FORMAT_CASES} == LEARNT


# --- What cannot be an answer -------------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
WHOLE = (0.0, 0.0, 1.0, 1.0)
HOSTILE_CASES = [
    # a free prompt's answers have no fixed shape to learn: none is written back
    ("free_prompt", TextAnswer("a cat"), "no fixed shape to learn"),
    ("free_prompt", [Box("car", (0.1, 0.2, 0.3, 0.4))], "no fixed shape to learn"),
    ("detection", [Box("car", (NAN, 0.2, 0.3, 0.4))], "not a finite number"),
    ("detection", [Box("car", (0.1, INF, 0.3, 0.4))], "not a finite number"),
    ("detection", [Box("car", (0.1, 0.2, -INF, 0.4))], "not a finite number"),
    ("detection", [Box("car", (0.5, 0.5, -0.1, 0.2))], "no area"),
    ("detection", [Box("car", (0.5, 0.5, 0.0, 0.2))], "no area"),
    ("detection", [Box("car", (1.2, 0.5, 0.1, 0.1))], "off the image"),
    ("detection", [Box("car", (0.5, 0.5, 0.6, 0.1))], "off the image"),
    ("detection", [Box("car", (-0.1, 0.5, 0.3, 0.1))], "off the image"),
    ("detection", [Box("car", (10, 20, 300, 400))], "off the image"),  # pixels
    ("detection", [Box("car", (1.0, 0.5, 0.0004, 0.1))], "covers none"),
    ("detection", [Box("car", (0.5, -0.0005, 0.1, 0.0004))], "covers none"),
    ("detection", [Box("car", (0.1, 0.2, 0.3))], r"\[x, y, width, height\]"),
    ("detection", [Box("car", "0.1 0.2 0.3 0.4")], r"\[x, y, width, height\]"),
    ("detection", [Box("car", ("0.1", 0.2, 0.3, 0.4))], "not a number"),
    ("detection", [Box("car", None)], r"\[x, y, width, height\]"),
    ("detection", [Box("", CAR.rel_xywh)], "label is empty"),
    ("detection", [Box(None, CAR.rel_xywh)], "label is empty"),
    ("detection", [Box(" \n ", CAR.rel_xywh)], "label is empty"),
    ("detection", [Box(3, CAR.rel_xywh)], "must be a string"),
    ("detection", [Box("car<loc_5>", CAR.rel_xywh)], "<loc_5>"),
    ("detection", [Box("car</s>", CAR.rel_xywh)], "</s>"),
    ("detection", [Box("<OD>car", CAR.rel_xywh)], "<OD>"),
    ("detection", [Box("a <sep> b", CAR.rel_xywh)], "<sep>"),
    ("detection", [Box("a <box> b", CAR.rel_xywh)], "<box>"),  # a tag our parser reads as a token
    ("detection", [Box("a < b", CAR.rel_xywh)], "holds '<'"),
    ("detection", TextAnswer("car"), "list of Box"),
    ("detection", [Polygon("car", (TRI,))], "list of Box"),
    ("phrase_grounding", [Box("it", CAR.rel_xywh)], "never grounds"),
    ("phrase_grounding", [Box("the image", CAR.rel_xywh)], "never grounds"),
    ("dense_region_caption", [Box("", CAR.rel_xywh)], "label is empty"),
    ("open_vocabulary_detection", [Box("car", CAR.rel_xywh), Box("car", CAR.rel_xywh, points=(TRI,))], "or none"),
    ("open_vocabulary_detection", [Box("car", CAR.rel_xywh, points=((TRI[0], TRI[1]),))], "three distinct"),
    ("ocr_with_region", [Box("", CAR.rel_xywh)], "label is empty"),
    ("ocr_with_region", [Box("a", (0, 0, 1, 1), points=(TRI,))], "four"),
    ("ocr_with_region", [Box("a", WHOLE, points=(((0.1, 0.1), (0.1004, 0.1), (0.1, 0.5), (0.1, 0.6)),))], "thinner"),
    ("ocr_with_region", [Box("a", (0, 0, 1, 1), points=(((0.1, NAN), (0.2, 0.1), (0.2, 0.5), (0.1, 0.5)),))], "finite"),
    ("ocr_with_region", [Box("a", WHOLE, points=(((0.1, 1.5), (0.2, 0.1), (0.2, 0.5), (0.1, 0.5)),))], "off the"),
    ("segmentation", [Polygon(None, ())], "at least one ring"),
    ("segmentation", [Polygon(None, ((TRI[0], TRI[1]),))], "three distinct"),
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.2, 0.2), (0.3, 0.3)),))], "on one line"),  # collinear
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.3, 0.3), (0.2, 0.2), (0.4, 0.4)),))], "on one line"),
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.1002, 0.1), (0.1, 0.1004)),))], "three distinct"),  # one bin
    ("segmentation", [Polygon(None, (((0.1, 0.1), (INF, 0.1), (0.3, 0.4)),))], "finite"),
    ("segmentation", [Polygon(None, (((0.1, 0.1), (0.5,), (0.3, 0.4)),))], r"\[x, y\]"),
    ("segmentation", [Polygon(None, (TRI, ((2.0, 0.1), (0.5, 0.1), (0.3, 0.4))))], "ring 1: 2.0 is off the image"),
    ("caption", TextAnswer(""), "needs text"),
    ("caption", TextAnswer("   "), "needs text"),
    ("caption", TextAnswer("a dog <loc_5>"), "<loc_5>"),
    ("caption", TextAnswer("a dog</s><s>"), "</s>"),
    ("caption", TextAnswer("No object detected."), "no answer"),
    ("caption", TextAnswer("a dog", rel_xywh=CAR.rel_xywh), "takes no region"),
    ("caption", [CAR], "TextAnswer"),
    ("ocr", TextAnswer("<ocr>"), "<ocr>"),
    ("region_to_category", TextAnswer("car"), "give the region"),
    ("region_to_category", TextAnswer("", rel_xywh=CAR.rel_xywh), "needs text"),
    ("region_to_ocr", TextAnswer("", rel_xywh=CAR.rel_xywh), "needs text"),
    ("region_to_description", TextAnswer("a car", rel_xywh=(0.5, 0.5, 0.7, 0.1)), "off the image"),
]  # fmt: skip


@pytest.mark.parametrize(("task", "answer", "error"), HOSTILE_CASES)
def test_what_cannot_be_an_answer_is_refused(task, answer, error):
    with pytest.raises(ValueError, match=error):
        answer_text(task, answer)


# --- Generations: per region, per class, with their questions -----------------------------------


def test_region_answers_are_the_region_and_its_echoing_answer():
    assert region_answers("region_to_category", [CAR, DOG]) == [
        (CAR.rel_xywh, "car" + CAR_LOCS),
        (DOG.rel_xywh, "dog" + DOG_LOCS),
    ]
    ((region, text),) = region_answers("region_to_segmentation", [Polygon("car", (TRI,))])
    assert region == pytest.approx((0.1, 0.1, 0.4, 0.3)) and text == TRI_LOCS
    assert region_answers("region_to_ocr", []) == []


def test_class_answers_group_by_class_and_answer_absent_classes_with_nothing():
    instances = [CAR, DOG, CAR]
    assert class_answers("open_vocabulary_detection", instances) == [
        ("car", "car" + CAR_LOCS + CAR_LOCS),
        ("dog", "dog" + DOG_LOCS),
    ]
    assert class_answers("open_vocabulary_detection", instances, classes=["dog", "cat", "car"]) == [
        ("dog", "dog" + DOG_LOCS),
        ("cat", ""),
        ("car", "car" + CAR_LOCS + CAR_LOCS),
    ]
    assert class_answers("segmentation", [Polygon("car", (TRI,))]) == [("car", TRI_LOCS)]


def test_training_pairs_ask_the_questions_the_model_reads():
    assert training_pairs("detection", [CAR]) == [(get_task("detection").question, "car" + CAR_LOCS)]
    assert training_pairs("phrase_grounding", [CAR], prompt="a car on a road") == [
        ("Locate the phrases in the caption: a car on a road", "car" + CAR_LOCS)
    ]
    assert training_pairs("region_to_category", [CAR]) == [(f"What is the region {CAR_LOCS}?", "car" + CAR_LOCS)]
    assert training_pairs("segmentation", [Polygon("car", (TRI,))]) == [("Locate car in the image with mask", TRI_LOCS)]
    # The echoed region is exactly the question's region, thin boxes included.
    thin = Box("pole", (0.5, 0.1, 0.0002, 0.6))
    ((question, answer),) = training_pairs("region_to_category", [thin])
    assert question == build_question(get_task("region_to_category"), rel_xywh=thin.rel_xywh)
    assert answer == "pole" + question[len("What is the region ") : -1]


@pytest.mark.parametrize(
    ("task", "answer", "kwargs", "error"),
    [
        ("phrase_grounding", [CAR], {}, "needs a prompt"),
        ("phrase_grounding", [CAR], {"prompt": "a <loc_1> car"}, "Florence-2 tokens"),
        ("detection", [CAR], {"prompt": "car"}, "takes no prompt"),
        ("region_to_category", [CAR], {"prompt": "car"}, "takes no prompt"),
        ("open_vocabulary_detection", [CAR], {"prompt": "car"}, "pass classes="),
        ("detection", [CAR], {"classes": ["car"]}, "takes no classes"),
        ("open_vocabulary_detection", [CAR], {"classes": "car"}, "not the string"),
        ("open_vocabulary_detection", [CAR], {"classes": ["car", " car "]}, "more than once"),
        ("open_vocabulary_detection", [CAR, DOG], {"classes": ["car"]}, "not among the classes"),
        ("open_vocabulary_detection", [Box(None, CAR.rel_xywh)], {}, "by its label None"),
        ("segmentation", [Polygon("a <sep>", (TRI,))], {}, "Florence-2 tokens"),
        ("region_to_category", [Box("car", (0.5, 0.5, 0.0, 0.1))], {}, "region 0: .* no area"),
        ("region_to_category", [Box(None, CAR.rel_xywh)], {}, "needs text"),
        ("region_to_segmentation", [CAR], {}, "with a Polygon"),
        ("region_to_category", [Polygon("car", (TRI,))], {}, "region's Box"),
    ],
)
def test_training_pairs_refusals(task, answer, kwargs, error):
    with pytest.raises(ValueError, match=error):
        training_pairs(task, answer, **kwargs)


# --- FiftyOne labels: the converter, and to_label(task, to_answer(task, label)) -----------------


def detections(*items, quad=None) -> fol.Detections:
    dets = [fol.Detection(label=label, bounding_box=list(box)) for label, box in items]
    if quad is not None:
        dets[0]["quad"] = [list(p) for p in quad]
    return fol.Detections(detections=dets)


def polylines(*items, closed=True) -> fol.Polylines:
    return fol.Polylines(
        polylines=[fol.Polyline(label=label, points=[list(map(list, r)) for r in rings], closed=closed, filled=closed)
                   for label, rings in items]
    )  # fmt: skip


def first_seen_order(labels: list) -> list[int]:
    """Indices grouped by label, groups in order of first appearance: how phrase and class answers are written."""
    return sorted(range(len(labels)), key=lambda i: labels.index(labels[i]))


def read_back(task_name: str, label: fol.Label) -> fol.Label:
    """The label the inference path builds from the answers written for ``label``."""
    task = get_task(task_name)
    if task.takes_classes:
        pairs = class_answers(task, answer_data(task, label))
        return build_label(task, [Result(Generation(text), prompt=name) for name, text in pairs])
    if task.input == "region":
        parts = [to_label(task, text) for _, text in region_answers(task, answer_data(task, label))]
        kind = type(label)
        field = kind._LABEL_LIST_FIELD
        return kind(**{field: [item for part in parts for item in part[field]]})
    return to_label(task, to_answer(task, label))


def close(a, b) -> bool:
    return len(a) == len(b) and all(abs(p - q) <= BIN + 1e-9 for p, q in zip(a, b))


def corners(xywh) -> tuple:
    x, y, w, h = xywh
    return (x, y, x + w, y + h)


def assert_detections_round_trip(task, original: fol.Detections, back: fol.Detections) -> None:
    task = get_task(task)
    dets = original.detections
    if task.answer in ("phrase_boxes", "boxes_or_polygons"):
        dets = [dets[i] for i in first_seen_order([" ".join(d.label.split()) for d in dets])]
    assert len(back.detections) == len(dets)
    for before, after in zip(dets, back.detections):
        expected = task.unnamed_label or " ".join(before.label.split())
        assert after.label == expected
        assert close(corners(after.bounding_box), corners(before.bounding_box)), (before, after)
        if task.answer == "quads":
            quad = before["quad"] if before.has_field("quad") else None
            x1, y1, x2, y2 = corners(before.bounding_box)
            quad = quad or [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
            assert all(close(p, q) for p, q in zip(after["quad"], quad))


def assert_polylines_round_trip(task, original: fol.Polylines, back: fol.Polylines) -> None:
    task = get_task(task)
    lines = original.polylines
    if task.takes_classes:
        lines = [lines[i] for i in first_seen_order([p.label for p in lines])]
    assert len(back.polylines) == len(lines)
    for before, after in zip(lines, back.polylines):
        assert after.label == (before.label if task.labelled_by_prompt else None)  # regions label them at inference
        assert after.closed and after.filled and len(after.points) == len(before.points)
        for ring_a, ring_b in zip(before.points, after.points):
            assert len(ring_a) == len(ring_b) and all(close(p, q) for p, q in zip(ring_a, ring_b))


QUAD = [[0.1, 0.2], [0.5, 0.21], [0.5, 0.3], [0.1, 0.29]]
BOXES = [("car", [0.1, 0.2, 0.3, 0.4]), ("dog", [0.5, 0.5, 0.2, 0.2]), ("car", [0.0, 0.0, 1.0, 1.0])]
RINGS = [("car", [TRI, SQUARE]), ("dog", [SQUARE]), ("car", [TRI])]
ROUND_TRIPS = [
    ("detection", detections(*BOXES)),
    ("dense_region_caption", detections(("a red car", [0.25, 0.125, 0.333, 0.5]))),
    ("region_proposal", detections(*BOXES)),
    ("phrase_grounding", detections(*BOXES)),
    ("open_vocabulary_detection", detections(*BOXES)),
    ("ocr_with_region", detections(("STOP", [0.1, 0.2, 0.4, 0.1]), ("EXIT", [0.6, 0.6, 0.2, 0.1]))),
    ("ocr_with_region", detections(("STOP", [0.1, 0.2, 0.4, 0.1]), quad=QUAD)),
    ("region_to_category", detections(*BOXES)),
    ("region_to_description", detections(("a turquoise Beetle", [0.05, 0.33, 0.88, 0.44]))),
    ("region_to_ocr", detections(("OPEN 24 HOURS", [0.1, 0.1, 0.5, 0.05]))),
    ("segmentation", polylines(*RINGS)),
    ("region_to_segmentation", polylines(*RINGS)),
    ("caption", fol.Classification(label="A dog on a beach.")),
    ("detailed_caption", fol.Classification(label="A brown dog runs on a sandy beach near the sea.")),
    ("more_detailed_caption", fol.Classification(label="A paragraph.\nIt has two lines.")),
    ("ocr", fol.Classification(label="CUDA FOR ENGINEERS")),
    ("ocr", fol.Classification()),
    *[(task.name, fol.Detections()) for task in TASKS if task.label_type == "Detections"],
    *[(task.name, fol.Polylines()) for task in TASKS if task.label_type == "Polylines"],
]  # fmt: skip


@pytest.mark.parametrize(("task", "label"), ROUND_TRIPS)
def test_to_label_of_the_answer_gives_the_label_back(task, label):
    back = read_back(task, label)
    assert type(back) is type(label)
    if isinstance(label, fol.Classification):
        assert back.label == (label.label or "")
    elif isinstance(label, fol.Polylines):
        assert_polylines_round_trip(task, label, back)
    else:
        assert_detections_round_trip(task, label, back)


def test_every_task_round_trips_through_fiftyone_labels():
    def filled(label) -> bool:
        return bool(label.label if isinstance(label, fol.Classification) else label[label._LABEL_LIST_FIELD])

    assert {task for task, label in ROUND_TRIPS if filled(label)} == LEARNT


def test_open_vocabulary_polylines_answer_with_polygons():
    label = polylines(("car", [TRI, SQUARE]), ("car", [SQUARE]))
    text = to_answer("open_vocabulary_detection", label)
    assert text == f"car<poly>{TRI_LOCS}<sep>{SQUARE_LOCS}</poly><poly>{SQUARE_LOCS}</poly>"
    back = to_label("open_vocabulary_detection", text)
    assert [d.label for d in back.detections] == ["car", "car"]
    assert all(d.mask is not None for d in back.detections)
    assert [len(b.points) for b in parse(get_task("open_vocabulary_detection"), text)] == [2, 1]


@pytest.mark.parametrize(
    ("task", "label", "error"),
    [
        ("detection", fol.Classification(label="car"), "trains from Detections, not Classification"),
        ("detection", None, "not NoneType"),
        ("caption", detections(*BOXES), "trains from Classification"),
        ("segmentation", detections(*BOXES), "Detections.to_polylines"),
        ("segmentation", polylines(("car", [TRI]), closed=False), "open"),
        ("region_to_category", detections(*BOXES), "3 generations .*one per region"),
        ("segmentation", polylines(*RINGS), "2 generations .*one per class"),
        ("detection", detections(("car", [])), r"\[x, y, width, height\]"),
        ("ocr_with_region", detections(("STOP", [0.1, 0.2, 0.4, 0.1]), quad=[[0.1, 0.2], [0.5, 0.2]]), "four"),
    ],
)
def test_to_answer_refusals(task, label, error):
    with pytest.raises(ValueError, match=error):
        to_answer(task, label)


def test_to_training_pairs_from_fiftyone_labels():
    pairs = to_training_pairs("open_vocabulary_detection", detections(*BOXES), classes=["car", "dog", "bus"])
    assert [question for question, _ in pairs] == [f"Locate {c} in the image." for c in ("car", "dog", "bus")]
    assert pairs[2][1] == ""
    assert to_training_pairs("caption", fol.Classification(label="a dog")) == [
        ("What does the image describe?", "a dog")
    ]


# --- Properties: any valid label round trips; any other input is refused ------------------------

coordinate = st.floats(0, 1)
label_strings = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), min_size=1, max_size=16)
labels = label_strings.map(lambda s: " ".join(s.split())).filter(
    lambda s: s and s not in BANNED_GROUNDING_PHRASES and s.lower() != "no object detected."
)


@st.composite
def rel_boxes(draw) -> list[float]:
    """A box at least one bin wide each way, on the image."""
    x, y = draw(st.floats(0, 1 - BIN)), draw(st.floats(0, 1 - BIN))
    return [x, y, draw(st.floats(BIN, 1 - x)), draw(st.floats(BIN, 1 - y))]


@st.composite
def rings(draw) -> list[tuple[float, float]]:
    """A ring of points in distinct bins, with an area at 1000 bins."""
    cells = draw(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999)), min_size=3, max_size=12, unique=True))
    assume(ring_has_area([b for cell in cells for b in cell]))
    offsets = st.floats(0, 0.999)
    return [((bx + draw(offsets)) / 1000, (by + draw(offsets)) / 1000) for bx, by in cells]


BOX_TASKS = [t.name for t in TASKS if t.label_type == "Detections" and t.answer != "quads"]


@pytest.mark.parametrize("task", BOX_TASKS)
@PROPERTY
@given(items=st.lists(st.tuples(labels, rel_boxes()), max_size=6))
def test_any_boxes_round_trip(task, items):
    label = detections(*items)
    assert_detections_round_trip(task, label, read_back(task, label))


@PROPERTY
@given(
    items=st.lists(st.tuples(labels, st.lists(st.tuples(coordinate, coordinate), min_size=4, max_size=4)), max_size=5)
)
def test_any_quads_round_trip(items):
    dets = []
    for text, quad in items:
        xs, ys = [p[0] for p in quad], [p[1] for p in quad]
        assume(max(xs) - min(xs) >= 2 * BIN and max(ys) - min(ys) >= 2 * BIN)
        det = fol.Detection(label=text, bounding_box=[min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)])
        det["quad"] = [list(p) for p in quad]
        dets.append(det)
    label = fol.Detections(detections=dets)
    assert_detections_round_trip("ocr_with_region", label, read_back("ocr_with_region", label))


@pytest.mark.parametrize("task", ["segmentation", "region_to_segmentation"])
@PROPERTY
@given(items=st.lists(st.tuples(labels, st.lists(rings(), min_size=1, max_size=3)), max_size=4))
def test_any_polygons_round_trip(task, items):
    label = polylines(*items)
    assert_polylines_round_trip(task, label, read_back(task, label))


@pytest.mark.parametrize("task", [t.name for t in TASKS if t.label_type == "Classification"])
@PROPERTY
@given(text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="<"), max_size=40))
def test_any_text_round_trips_or_is_refused_when_empty(task, text):
    label = fol.Classification(label=text)
    if (not text.strip() and not get_task(task).empty_text_ok) or text.strip().lower() == "no object detected.":
        with pytest.raises(ValueError):
            to_answer(task, label)
        return
    assert to_label(task, to_answer(task, label)).label == text.strip()


numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-0.01, 1.01),
    st.floats(0, 1),
    st.sampled_from([0, 1, -0.0]),
)
hostile_labels = st.one_of(
    labels,
    st.text(max_size=8),
    st.sampled_from(["", " ", None, "<loc_5>", "</s>", "car<s>", "<OD>", "<poly>", "it", "a<b", "<box>", "café"]),
)


@pytest.mark.parametrize("task", ["detection", "phrase_grounding", "region_proposal", "ocr_with_region"])
@PROPERTY
@given(items=st.lists(st.tuples(hostile_labels, st.lists(numbers, min_size=4, max_size=4)), min_size=1, max_size=4))
def test_any_box_input_is_refused_or_read_back_whole(task, items):
    """Nothing is silently lost: an accepted answer reads back every box, with its label, near its place."""
    boxes = [Box(text, tuple(xywh)) for text, xywh in items]
    try:
        text = answer_text(task, boxes)
    except ValueError:
        return
    back = parse(get_task(task), text)
    assert len(back) == len(boxes)
    if get_task(task).answer == "phrase_boxes":
        boxes = [boxes[i] for i in first_seen_order([" ".join(b.label.split()) for b in boxes])]
    for before, after in zip(boxes, back):
        assert all(math.isfinite(v) for v in before.rel_xywh)
        assert after.label == (None if task == "region_proposal" else " ".join(before.label.split()))
        # Within one bin, or a box thinner than a bin widened to one (at most a bin and a half off).
        assert all(abs(p - q) <= 1.6 * BIN for p, q in zip(corners(after.rel_xywh), corners(before.rel_xywh)))


@PROPERTY
@given(points=st.lists(st.tuples(numbers, numbers), min_size=0, max_size=6))
def test_any_ring_is_refused_or_read_back_whole(points):
    try:
        text = answer_text("segmentation", [Polygon("car", (points,))])
    except ValueError:
        return
    ((ring,),) = [p.rings for p in parse(get_task("segmentation"), text)]
    assert 3 <= len(ring) <= len(points)
    assert all(any(close(p, q) for q in points) for p in ring)


@settings(PROPERTY, max_examples=300)
@given(text=st.text(max_size=12).flatmap(lambda s: st.sampled_from([s, s + "<loc_5>", "<" + s + ">", s + "</s>"])))
def test_accepted_text_carries_no_florence_token(text, tokenizer):
    """An accepted caption tokenizes without one of the tokenizer's added tokens, and reads back as written."""
    try:
        answer = answer_text("caption", TextAnswer(text))
    except ValueError:
        return
    added = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    assert not added & set(tokenizer(answer, add_special_tokens=False).input_ids), answer
    assert parse(get_task("caption"), answer).text == answer


# --- Against transformers' own parser -----------------------------------------------------------


def test_transformers_parser_reads_our_answers(tiny_checkpoint):
    """At 1000 x 1000 pixels the processor's coordinates are the bins, so each lies within one bin of ours."""
    from transformers import Florence2Processor

    processor = Florence2Processor.from_pretrained(tiny_checkpoint)

    def parsed(task: str, text: str):
        token = get_task(task).token
        return processor.post_process_generation(text, task=token, image_size=(1000, 1000))[token]

    def px(values) -> list[float]:
        return [v / 1000 for v in values]

    boxes = [CAR, DOG, Box("a red car", (0.25, 0.125, 0.333, 0.5))]
    for task in ("detection", "dense_region_caption", "phrase_grounding", "region_proposal"):
        ref = parsed(task, answer_text(task, boxes))
        order = first_seen_order([b.label for b in boxes]) if task == "phrase_grounding" else range(len(boxes))
        assert ref["labels"] == [("" if task == "region_proposal" else boxes[i].label) for i in order]
        assert all(close(px(r), corners(boxes[i].rel_xywh)) for r, i in zip(ref["bboxes"], order))
    ref = parsed("open_vocabulary_detection", answer_text("open_vocabulary_detection", [CAR, CAR]))
    assert ref["bboxes_labels"] == ["car", "car"] and ref["polygons"] == []
    ref = parsed(
        "open_vocabulary_detection",
        answer_text("open_vocabulary_detection", [Box("car", CAR.rel_xywh, points=(TRI, SQUARE))]),
    )
    assert ref["polygons_labels"] == ["car"] and [len(r) for r in ref["polygons"][0]] == [6, 8]
    ref = parsed(
        "ocr_with_region", answer_text("ocr_with_region", [Box("STOP", CAR.rel_xywh), Box("EXIT 2", DOG.rel_xywh)])
    )
    assert ref["labels"] == ["STOP", "EXIT 2"] and close(
        px(ref["quad_boxes"][0]), (0.1, 0.2, 0.4, 0.2, 0.4, 0.6, 0.1, 0.6)
    )
    for task in ("segmentation", "region_to_segmentation"):
        ref = parsed(task, answer_text(task, [Polygon("car", (TRI, SQUARE)), Polygon("car", (SQUARE,))]))
        assert [[len(ring) for ring in instance] for instance in ref["polygons"]] == [[6, 8], [8]]
        assert close(px(ref["polygons"][0][0]), [v for p in TRI for v in p])
    text = answer_text("region_to_category", TextAnswer("car", rel_xywh=CAR.rel_xywh))
    assert parsed("region_to_category", text) == "car" + CAR_LOCS

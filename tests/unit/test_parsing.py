"""Decoded text to labels: table-driven, quirks included, and checked against transformers' own parser."""

from __future__ import annotations

import random

import fiftyone.core.labels as fol
import pytest

from fiftyone_florence2 import to_label
from fiftyone_florence2.core.parsing import Generation, span_confidence, tokenize
from fiftyone_florence2.core.tasks import get_task

L = "<loc_{}>".format


def locs(*bins: int) -> str:
    return "".join(L(b) for b in bins)


def rounded(values, digits=4):
    return tuple(round(v, digits) for v in values)


def boxes(label) -> list[tuple]:
    assert isinstance(label, fol.Detections)
    return [(d.label, rounded(d.bounding_box)) for d in label.detections]


def shapes(label) -> list[tuple]:
    assert isinstance(label, fol.Polylines)
    return [(p.label, [[rounded(pt) for pt in ring] for ring in p.points]) for p in label.polylines]


CAR = ("car", (0.1005, 0.2005, 0.4, 0.7))

DETECTION_CASES = [
    # (task, text, expected [(label, xywh)])
    ("detection", "</s><s><s>car" + locs(100, 200, 500, 900) + "</s>", [CAR]),
    ("detection", "</s>car" + locs(100, 200, 500, 900) + "</s><pad><pad><pad>", [CAR]),
    ("detection", "car" + locs(900, 900, 1000, 1000), [("car", (0.9005, 0.9005, 0.0995, 0.0995))]),
    ("detection", "car" + locs(0, 0, 999, 999), [("car", (0.0005, 0.0005, 0.999, 0.999))]),
    (
        "detection",
        "wheel" + locs(1, 1, 11, 11) + locs(20, 20, 30, 30),
        [("wheel", (0.0015, 0.0015, 0.01, 0.01)), ("wheel", (0.0205, 0.0205, 0.01, 0.01))],
    ),
    ("detection", "car" + locs(100, 200, 500, 900) + locs(5, 6), [CAR]),  # lone trailing locations
    ("detection", "car" + locs(100, 200, 500, 900) + "dog" + locs(7), [CAR]),
    ("detection", "car" + locs(5, 5, 5, 50), []),  # no width
    ("detection", "car" + locs(500, 900, 100, 200), [CAR]),  # corners swapped
    ("detection", locs(1, 2, 30, 40) + "car" + locs(100, 200, 500, 900), [CAR]),  # box before any label
    ("detection", "café ☕ 車" + locs(100, 200, 500, 900), [("café ☕ 車", CAR[1])]),
    ("detection", "  big   car " + locs(100, 200, 500, 900), [("big car", CAR[1])]),
    ("detection", "", []),
    ("detection", "</s></s>", []),
    ("detection", "<pad><pad>", []),
    ("detection", "car<loc_100><loc_200>", []),  # truncated at the token limit
    ("detection", "car" + locs(100, 200, 500, 900) + "<loc_99999999999999>" * 4, [CAR]),  # absurd bins: no area
    ("detection", "car<loc_100><loc_200><loc_500><loc_900", []),  # a token cut in half
    ("dense_region_caption", "a red car" + locs(100, 200, 500, 900), [("a red car", CAR[1])]),
    (
        "region_proposal",
        locs(100, 200, 500, 900) + locs(0, 0, 10, 10),
        [("roi", CAR[1]), ("roi", (0.0005, 0.0005, 0.01, 0.01))],  # unnamed: the task's label for them
    ),
    ("region_proposal", "</s><s>" + locs(100, 200, 500, 900) + "</s>", [("roi", CAR[1])]),
    (
        "phrase_grounding",
        "a red car" + locs(100, 200, 500, 900) + "the image" + locs(0, 0, 999, 999),
        [("a red car", CAR[1])],  # "the image" is a banned grounding phrase
    ),
    (
        "phrase_grounding",
        "A dog" + locs(1, 1, 11, 11) + locs(2, 2, 12, 12),
        [("A dog", (0.0015,) * 2 + (0.01,) * 2), ("A dog", (0.0025,) * 2 + (0.01,) * 2)],
    ),
    ("open_vocabulary_detection", "car" + locs(100, 200, 500, 900), [CAR]),
    (
        "open_vocabulary_detection",
        "car<poly>" + locs(100, 200, 500, 200, 500, 900) + "</poly>",
        [("car", CAR[1])],
    ),
    ("region_to_category", "car" + locs(100, 200, 500, 900) + "</s>", [("car", CAR[1])]),
    ("region_to_description", "</s>No object detected.</s>", []),
    ("region_to_ocr", "</s>Ünïcødé 42" + locs(100, 200, 500, 900), [("Ünïcødé 42", CAR[1])]),
]


@pytest.mark.parametrize(("task", "text", "expected"), DETECTION_CASES)
def test_detections(task, text, expected):
    assert boxes(to_label(task, text)) == expected


def test_ocr_with_region_keeps_text_and_quads():
    text = "</s>STOP" + locs(100, 100, 200, 110, 210, 150, 90, 140) + "Café" + locs(0, 0, 10, 0, 10, 10, 0, 10) + "</s>"
    label = to_label("ocr_with_region", text)
    assert boxes(label) == [("STOP", (0.0905, 0.1005, 0.12, 0.05)), ("Café", (0.0005, 0.0005, 0.01, 0.01))]
    assert [rounded(p) for p in label.detections[0]["quad"]] == [
        (0.1005, 0.1005), (0.2005, 0.1105), (0.2105, 0.1505), (0.0905, 0.1405)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A" + locs(*range(8)) + locs(*range(10, 18)), ["A"]),  # a quad with no text of its own
        ("A" + locs(1, 1, 1, 1, 1, 1, 1, 1), []),  # a point, not a region
        ("A" + locs(1, 2, 3, 4, 5, 6, 7), []),  # truncated
        ("", []),
    ],
)
def test_ocr_with_region_quirks(text, expected):
    assert [d.label for d in to_label("ocr_with_region", text).detections] == expected


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("caption", "</s><s><s>A cat on a mat.</s>", "A cat on a mat."),
        ("caption", "</s>A cat.</s><pad><pad>", "A cat."),
        ("ocr", "</s>Hello wörld — 東京</s>", "Hello wörld — 東京"),
        ("ocr", "</s></s>", ""),
        ("detailed_caption", "", ""),
        ("more_detailed_caption", "<s>Two dogs<loc_5> play.", "Two dogs play."),
    ],
)
def test_text_tasks(task, text, expected):
    label = to_label(task, text)
    assert isinstance(label, fol.Classification)
    assert label.label == expected


SQUARE = [(0.1005, 0.1005), (0.2005, 0.1005), (0.2005, 0.2005), (0.1005, 0.2005)]
BOWTIE = [(0.1005, 0.1005), (0.2005, 0.2005), (0.2005, 0.1005), (0.1005, 0.2005)]


@pytest.mark.parametrize(
    ("task", "text", "expected"),
    [
        ("segmentation", "</s>" + locs(100, 100, 200, 100, 200, 200, 100, 200) + "</s>", [(None, [SQUARE])]),
        ("segmentation", locs(100, 100, 200, 100, 200, 200, 100, 200, 300), [(None, [SQUARE])]),  # odd: cut off
        (
            "segmentation",
            locs(100, 100, 200, 100, 200, 200, 100, 200) + "<sep>" + locs(100, 100, 200, 100, 200, 200),
            [(None, [SQUARE, SQUARE[:3]])],
        ),
        ("segmentation", locs(100, 100, 200, 200), []),  # two points are not a polygon
        ("segmentation", locs(100, 100, 200, 200, 300, 300), []),  # collinear: no area
        ("segmentation", locs(100, 100, 200, 200, 200, 100, 100, 200), [(None, [BOWTIE])]),  # self-crossing: kept
        ("segmentation", locs(100, 100, 200, 200, 300, 300, 200, 200), []),  # forth and back on a line
        ("segmentation", "", []),
        (
            "region_to_segmentation",
            "<poly>"
            + locs(100, 100, 200, 100, 200, 200, 100, 200)
            + "</poly><poly>"
            + locs(100, 100, 200, 100, 200, 200)
            + "</poly>",
            [(None, [SQUARE]), (None, [SQUARE[:3]])],
        ),
    ],
)
def test_polygons(task, text, expected):
    label = to_label(task, text)
    assert shapes(label) == expected
    assert all(p.closed and p.filled for p in label.polylines)


def test_tokenize_keeps_spans():
    text = "</s>car" + locs(1, 2)
    pieces = tokenize(text)
    assert [(p.kind, p.value) for p in pieces] == [
        ("special", "</s>"),
        ("text", "car"),
        ("loc", "<loc_1>"),
        ("loc", "<loc_2>"),
    ]
    assert "".join(text[p.start : p.end] for p in pieces) == text


@pytest.mark.parametrize(
    ("spans", "logprobs", "expected"),
    [
        ([(0, 3)], [-0.1, -0.3, -5.0], 0.8187),  # tokens 0 and 1 overlap the span
        ([(0, 9)], [0.0, 0.0, 0.0], 1.0),
        ([], [-1.0, -1.0, -1.0], None),
        ([(0, 3)], [], None),
        ([(50, 60)], [-1.0, -1.0, -1.0], None),
    ],
)
def test_span_confidence(spans, logprobs, expected):
    generation = Generation("abcdefghi", ((0, 2), (2, 4), (4, 9))[: len(logprobs)], tuple(logprobs))
    result = span_confidence(spans, generation)
    assert (result if result is None else round(result, 4)) == expected


# --- Against transformers' own post-processing -----------------------------------------------------

SIZES = [(640, 480), (1, 1), (4000, 3000), (333, 777)]


def _reference(processor, task, text, size):
    from fiftyone_florence2 import get_task

    return processor.post_process_generation(text, task=get_task(task).token, image_size=size)[get_task(task).token]


def _generations(seed: int, n: int) -> list[tuple[str, str]]:
    """Realistic decoded generations for the structured tasks."""
    rng = random.Random(seed)
    words = ["car", "a red car", "door", "wheel", "person", "traffic light", "STOP", "OPEN 24 HOURS", "tree"]
    out = []
    for _ in range(n):
        task = rng.choice(
            [
                "detection",
                "dense_region_caption",
                "phrase_grounding",
                "ocr_with_region",
                "segmentation",
                "region_proposal",
            ]
        )
        parts = ["</s>", "<s>" * rng.randint(0, 2)]
        for _ in range(rng.randint(0, 5)):
            if task == "ocr_with_region":
                parts.append(rng.choice(words) + locs(*[rng.randint(0, 999) for _ in range(8)]))
            elif task == "segmentation":
                parts.append(locs(*[rng.randint(0, 999) for _ in range(2 * rng.randint(3, 12))]))
                break
            elif task == "region_proposal":
                x, y = rng.randint(0, 900), rng.randint(0, 900)
                parts.append(locs(x, y, x + rng.randint(1, 99), y + rng.randint(1, 99)))
            else:
                x, y = rng.randint(0, 900), rng.randint(0, 900)
                parts.append(rng.choice(words) + locs(x, y, x + rng.randint(1, 99), y + rng.randint(1, 99)))
        parts.append("</s>" + "<pad>" * rng.randint(0, 3))
        out.append((task, "".join(parts)))
    return out


@pytest.mark.parametrize("size", SIZES)
def test_matches_reference_parse_within_one_and_a_half_pixels(tiny_checkpoint, size):
    from transformers import Florence2Processor

    processor = Florence2Processor.from_pretrained(tiny_checkpoint)
    processor.post_processor.banned_grounding_tokens = {"the image"}
    width, height = size
    for task, text in _generations(seed=width, n=60):
        ref = _reference(processor, task, text, size)
        label = to_label(task, text)
        if task == "segmentation":
            ours = [[(x * width, y * height) for x, y in ring] for p in label.polylines for ring in p.points]
            theirs = [list(zip(ring[0::2], ring[1::2])) for instance in ref["polygons"] for ring in instance]
            assert len(ours) == len(theirs), text
            for a, b in zip(ours, theirs):
                assert all(abs(p - q) <= 1.5 for pa, pb in zip(a, b) for p, q in zip(pa, pb)), text
            continue
        if task == "ocr_with_region":
            ours = [
                [c * (width if i % 2 == 0 else height) for i, c in enumerate(v for pt in d["quad"] for v in pt)]
                for d in label.detections
            ]
            theirs = ref["quad_boxes"]
        else:
            ours = [
                [d.bounding_box[0] * width, d.bounding_box[1] * height,
                 (d.bounding_box[0] + d.bounding_box[2]) * width, (d.bounding_box[1] + d.bounding_box[3]) * height]
                for d in label.detections
            ]  # fmt: skip
            theirs = ref["bboxes"]
        assert len(ours) == len(theirs), text
        for a, b in zip(ours, theirs):
            assert all(abs(p - q) <= 1.5 for p, q in zip(a, b)), (text, a, b)
        # The reference leaves proposals unnamed; ours get the task's label for unnamed boxes.
        ref_labels = [lab.strip() or get_task(task).unnamed_label or "" for lab in ref["labels"]]
        our_labels = [(d.label or "").encode("ascii", "ignore").decode().strip() for d in label.detections]
        assert our_labels == ref_labels, text

"""Regressions: float-rounded collinear rings, lost open-vocabulary shapes, lost region text."""

from __future__ import annotations

import fiftyone.core.labels as fol
import pytest

from fiftyone_florence2 import to_label
from fiftyone_florence2.core.parsing import Generation, parse, parse_polygons, ring_has_area, span_confidence, tokenize
from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.labels.convert import Result, build_label

L = "<loc_{}>".format


def locs(*bins: int) -> str:
    return "".join(L(b) for b in bins)


def rounded(values, digits=4):
    return tuple(round(v, digits) for v in values)


# --- 1. Collinear rings are dropped exactly, on the integer bins ----------------------------------

RING_CASES = [
    # (bins of one ring, kept)
    ((1, 2, 4, 5, 7, 8), False),  # slope 1, off the axes: float shoelace gives ~2.5e-21, not 0
    ((414, 940, 413, 950, 412, 960), False),  # slope -10: float gives ~2.8e-17
    ((1, 626, 12, 627, 23, 628), False),  # shallow slope: float gives ~8.7e-19
    ((317, 101, 301, 102, 285, 103, 269, 104), False),  # four collinear points
    ((1, 2, 7, 8, 4, 5, 1, 2), False),  # a spike that doubles back on its line
    ((1000, 0, 1005, 5, 1000, 10), False),  # bins past the end all clamp to x = 1: a vertical line
    ((10**25, 1, 10**25, 2, 10**25, 3), False),  # absurd bins, clamped too
    ((100, 100, 200, 200, 300, 300), False),  # collinear, exact in floats already
    ((5, 5, 5, 5, 5, 5), False),  # one point thrice
    ((5, 5, 9, 9, 5, 5, 9, 9), False),  # two distinct points
    ((), False),
    ((1, 2, 4, 5, 7, 9), True),  # one bin off the line: the smallest area there is, kept
    ((0, 0, 1, 0, 0, 1), True),
    ((999, 999, 1000, 999, 999, 1000), True),  # bin 1000 clamps to 1.0, still a triangle
    ((100, 100, 200, 100, 200, 200, 100, 200), True),
    ((100, 100, 200, 200, 200, 100, 100, 200), True),  # a bow-tie: signed area nets to 0, two real lobes
    ((0, 0, 4, 4, 4, 0, 0, 4, 0, 0), True),  # the same, closed by its first point again
    ((100, 100, 200, 200, 300, 100, 300, 300, 200, 200, 100, 300), True),  # a figure eight through one point
    ((1, 1, 3, 3, 5, 5, 3, 3, 1, 1), False),  # forth and back on one line: crosses itself, no lobe
]


@pytest.mark.parametrize(("bins", "kept"), RING_CASES)
def test_ring_has_area_is_decided_on_the_bins(bins, kept):
    assert ring_has_area(bins) is kept


@pytest.mark.parametrize(("bins", "kept"), RING_CASES)
@pytest.mark.parametrize("task", ["segmentation", "region_to_segmentation"])
def test_collinear_rings_are_dropped_by_every_polygon_task(task, bins, kept):
    label = to_label(task, "</s>" + locs(*bins) + "</s>")
    assert len(label.polylines) == int(kept)


def test_a_collinear_ring_beside_a_real_one_is_dropped_alone():
    text = locs(100, 100, 200, 100, 200, 200) + "<sep>" + locs(1, 2, 4, 5, 7, 8)
    (polygon,) = parse_polygons(tokenize(text))
    assert [len(ring) for ring in polygon.rings] == [3]
    assert all(text[s:e] in locs(100, 100, 200, 100, 200, 200) for s, e in polygon.spans)


# --- 2. Open-vocabulary polygons keep their shape as an instance mask ------------------------------

TRIANGLE = locs(100, 100, 500, 100, 100, 500)  # half of its 0.4 x 0.4 box
SQUARE = locs(100, 100, 500, 100, 500, 500, 100, 500)  # all of its box
MASK_CASES = [
    # (text, image_wh, expected [(label, xywh, mask shape (h, w), filled fraction)])
    ("car<poly>" + TRIANGLE + "</poly>", None, [("car", (0.1005, 0.1005, 0.4, 0.4), (400, 400), 0.5)]),
    ("car<poly>" + TRIANGLE + "</poly>", (640, 480), [("car", (0.1005, 0.1005, 0.4, 0.4), (192, 256), 0.5)]),
    ("car<poly>" + SQUARE + "</poly>", (640, 480), [("car", (0.1005, 0.1005, 0.4, 0.4), (192, 256), 1.0)]),
    (
        "</s>car<poly>" + SQUARE + "</poly>bus<poly>" + TRIANGLE + "</poly></s><pad>",
        None,
        [("car", (0.1005, 0.1005, 0.4, 0.4), (400, 400), 1.0), ("bus", (0.1005, 0.1005, 0.4, 0.4), (400, 400), 0.5)],
    ),
    (  # two rings of one instance: two squares filling half of the box they span
        "car<poly>" + locs(0, 0, 100, 0, 100, 100, 0, 100) + "<sep>" + locs(100, 100, 200, 100, 200, 200, 100, 200),
        None,
        [("car", (0.0005, 0.0005, 0.2, 0.2), (200, 200), 0.5)],
    ),
    ("car<poly>" + locs(0, 0, 1, 0, 0, 1) + "</poly>", (1, 1), [("car", (0.0005, 0.0005, 0.001, 0.001), (1, 1), None)]),
    ("car<poly>" + locs(1, 2, 4, 5, 7, 8) + "</poly>", None, []),  # collinear: no shape, no detection
    ("car<poly>" + locs(100, 100, 200) + "</poly>", None, []),  # cut off
    ("car<poly></poly>", None, []),
    ("", None, []),
]


@pytest.mark.parametrize(("text", "image_wh", "expected"), MASK_CASES)
def test_open_vocabulary_polygons_keep_their_shape_as_a_mask(text, image_wh, expected):
    label = build_label(get_task("open_vocabulary_detection"), [Result(Generation(text))], image_wh=image_wh)
    assert isinstance(label, fol.Detections)
    got = [(d.label, rounded(d.bounding_box), d.mask.shape) for d in label.detections]
    assert got == [(lab, xywh, shape) for lab, xywh, shape, _ in expected]
    for detection, (*_, fraction) in zip(label.detections, expected):
        assert detection.mask.dtype == bool
        if fraction is not None:
            assert detection.mask.mean() == pytest.approx(fraction, abs=0.02)


def test_to_label_masks_open_vocabulary_polygons_on_the_bin_grid():
    (detection,) = to_label("open_vocabulary_detection", "car<poly>" + TRIANGLE + "</poly>").detections
    assert detection.mask.shape == (400, 400)
    assert detection.mask.mean() == pytest.approx(0.5, abs=0.02)


def test_open_vocabulary_mask_keeps_the_prompt_label_and_confidence():
    text = "car<poly>" + TRIANGLE + "</poly>"
    spans = tuple((p.start, p.end) for p in tokenize(text))
    generation = Generation(text, spans, tuple(-0.1 * (i + 1) for i in range(len(spans))))
    (detection,) = build_label(get_task("open_vocabulary_detection"), [Result(generation, prompt="red car")]).detections
    (box,) = parse(get_task("open_vocabulary_detection"), text)
    assert detection.label == "red car"
    assert detection.confidence == pytest.approx(span_confidence(box.spans, generation))
    assert detection.mask is not None


@pytest.mark.parametrize(
    ("task", "text"),
    [
        ("open_vocabulary_detection", "car" + locs(100, 200, 500, 900)),  # boxes, not polygons
        ("ocr_with_region", "STOP" + locs(100, 100, 200, 110, 210, 150, 90, 140)),  # a quad is not a shape
        ("detection", "car" + locs(100, 200, 500, 900)),
    ],
)
def test_boxes_and_quads_get_no_mask(task, text):
    (detection,) = to_label(task, text).detections
    assert detection.mask is None


# --- 3. A region answer with no box keeps its text --------------------------------------------------

REGION_TEXT_CASES = [
    # (task, text, expected: ("Classification", text) or ("Detections", [(label, xywh)]))
    ("region_to_category", "</s>car</s>", ("Classification", "car")),
    ("region_to_description", "<s>a red car</s><pad><pad>", ("Classification", "a red car")),
    ("region_to_ocr", "</s>Ünïcødé 42 東京</s>", ("Classification", "Ünïcødé 42 東京")),
    ("region_to_category", "car" + locs(5, 5, 5, 5), ("Classification", "car")),  # echoed box has no area
    ("region_to_category", "car" + locs(100, 200), ("Classification", "car")),  # echo cut off
    ("region_to_ocr", "STOP" + L(10**25) * 4, ("Classification", "STOP")),  # absurd echo
    ("region_to_category", "", ("Detections", [])),
    ("region_to_description", "</s>No object detected.</s>", ("Detections", [])),
    ("region_to_ocr", "</s></s><pad>", ("Detections", [])),
    ("region_to_ocr", locs(100, 200, 500, 900), ("Detections", [])),  # a box but no text
    ("region_to_category", "car" + locs(100, 200, 500, 900), ("Detections", [("car", (0.1005, 0.2005, 0.4, 0.7))])),
]


def describe(label) -> tuple:
    if isinstance(label, fol.Classification):
        return ("Classification", label.label)
    assert isinstance(label, fol.Detections)
    return ("Detections", [(d.label, rounded(d.bounding_box)) for d in label.detections])


@pytest.mark.parametrize(("task", "text", "expected"), REGION_TEXT_CASES)
def test_region_answer_with_no_box_keeps_its_text(task, text, expected):
    assert describe(to_label(task, text)) == expected


@pytest.mark.parametrize("text", ["</s>car</s>", "car" + locs(5, 5, 5, 5), "car" + locs(300, 300, 400, 400)])
def test_region_answers_with_input_regions_stay_on_their_regions(text):
    regions = [fol.Detection(label="a", bounding_box=[0.1, 0.1, 0.2, 0.2]), fol.Detection(label="b")]
    regions[1].bounding_box = [0.5, 0.5, 0.3, 0.3]
    results = [Result(Generation(text), region=region) for region in regions]
    label = build_label(get_task("region_to_category"), results)
    assert describe(label) == ("Detections", [("car", (0.1, 0.1, 0.2, 0.2)), ("car", (0.5, 0.5, 0.3, 0.3))])
    assert [d.region_id for d in label.detections] == [r.id for r in regions]

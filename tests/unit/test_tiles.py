"""Tiles for large images: the geometry on numbers, the merge and suppression on labels, the batch on a fake
runner (end to end on the tiny model: tests/integration/test_tiles_end_to_end.py)."""

from __future__ import annotations

import itertools

import fiftyone.core.labels as fol
import numpy as np
import pytest
from helpers.fake_runner import FakeRunner

from fiftyone_florence2.core.options import OPTIONS
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.core.tiling import (
    decode_wh,
    enclosing_xyxy,
    pixel_box_to_rel,
    points_to_image,
    tile_boxes,
    tile_pixel_boxes,
    tile_side,
    xywh_to_image,
)
from fiftyone_florence2.engine.items import Item
from fiftyone_florence2.labels.merge import merge_instances
from fiftyone_florence2.runs.batching import label_items
from fiftyone_florence2.runs.config import Florence2ModelConfig

approx = pytest.approx
A, B = 0.4444444444444444, 0.5555555555555556  # where a tile starts and ends, 2 x 2 with overlap 0.2
S4 = 1 / 3.4  # a tile's side, 4 x 4 with overlap 0.2


# --- geometry ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "overlap", "expected"),
    [
        (1, 0.0, [(0, 0, 1, 1)]),
        (1, 0.5, [(0, 0, 1, 1)]),
        (2, 0.0, [(0, 0, 0.5, 0.5), (0.5, 0, 1, 0.5), (0, 0.5, 0.5, 1), (0.5, 0.5, 1, 1)]),
        (2, 0.2, [(0, 0, B, B), (A, 0, 1, B), (0, A, B, 1), (A, A, 1, 1)]),
        (3, 0.0, [(x, y, x + 1 / 3, y + 1 / 3) for y in (0, 1 / 3, 2 / 3) for x in (0, 1 / 3, 2 / 3)]),
        (4, 0.0, [(x, y, x + 0.25, y + 0.25) for y in (0, 0.25, 0.5, 0.75) for x in (0, 0.25, 0.5, 0.75)]),
        (4, 0.2, [(x, y, x + S4, y + S4) for y in (0, 0.8 * S4, 1.6 * S4, 2.4 * S4)
                  for x in (0, 0.8 * S4, 1.6 * S4, 2.4 * S4)]),
    ],
)  # fmt: skip
def test_tile_boxes(grid, overlap, expected):
    assert [approx(box) for box in tile_boxes(grid, overlap)] == expected


@pytest.mark.parametrize("grid", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("overlap", [0.0, 0.2, 0.5, 0.89])
def test_tiles_span_the_image_and_overlap_as_asked(grid, overlap):
    boxes = tile_boxes(grid, overlap)
    side = tile_side(grid, overlap)
    assert len(boxes) == grid * grid
    assert all(x2 - x1 == approx(side) and y2 - y1 == approx(side) for x1, y1, x2, y2 in boxes)
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == approx((1, 1))
    for left, right in itertools.pairwise(boxes[:grid]):  # the first row, side by side
        assert left[2] - right[0] == approx(overlap * side)


@pytest.mark.parametrize(("grid", "overlap"), [(0, 0.2), (2, 1.0), (2, -0.1)])
def test_impossible_grids_are_refused(grid, overlap):
    with pytest.raises(ValueError):
        tile_boxes(grid, overlap)


@pytest.mark.parametrize(
    ("image_wh", "grid", "expected"),
    [
        ((100, 50), 1, [(0, 0, 100, 50)]),
        ((100, 50), 2, [(0, 0, 56, 28), (44, 0, 100, 28), (0, 22, 56, 50), (44, 22, 100, 50)]),
        ((1, 1), 2, [(0, 0, 1, 1)] * 4),  # degenerate: every tile is the one pixel
        ((3, 1), 4, [(0, 0, 1, 1), (0, 0, 2, 1), (1, 0, 3, 1), (2, 0, 3, 1)] * 4),
    ],
)
def test_tile_pixel_boxes(image_wh, grid, expected):
    assert tile_pixel_boxes(image_wh, grid, 0.2) == expected


@pytest.mark.parametrize("image_wh", [(0, 10), (10, 0), (-1, 5)])
def test_an_image_without_pixels_has_no_tiles(image_wh):
    with pytest.raises(ValueError, match="needs pixels"):
        tile_pixel_boxes(image_wh, 2, 0.2)


@pytest.mark.parametrize(
    ("rel_xywh", "tile", "expected"),
    [
        ((0.1, 0.2, 0.3, 0.4), (0, 0, 1, 1), (0.1, 0.2, 0.3, 0.4)),  # the whole image: unchanged
        ((0, 0, 1, 1), (0.5, 0, 1, 0.5), (0.5, 0, 0.5, 0.5)),  # the whole tile
        ((0.5, 0.5, 0.2, 0.2), (0.5, 0.5, 1, 1), (0.75, 0.75, 0.1, 0.1)),
        ((0.5, 0.5, 0, 0), (0.2, 0.4, 0.6, 0.8), (0.4, 0.6, 0, 0)),  # a degenerate box stays degenerate
    ],
)
def test_a_box_found_in_a_tile_maps_back_to_the_image(rel_xywh, tile, expected):
    assert xywh_to_image(rel_xywh, tile) == approx(expected)


@pytest.mark.parametrize(
    ("points", "tile", "expected"),
    [
        ((), (0.5, 0.5, 1, 1), ()),
        (((0, 0), (1, 1)), (0.25, 0.5, 0.75, 1), ((0.25, 0.5), (0.75, 1))),
        (((0.5, 0.5),), (A, 0, 1, B), ((A + 0.5 * B, 0.5 * B),)),
    ],
)
def test_points_found_in_a_tile_map_back_to_the_image(points, tile, expected):
    assert [approx(p) for p in points_to_image(points, tile)] == list(expected)


@pytest.mark.parametrize(
    ("view_wh", "grid", "overlap", "expected"),
    [((768, 768), 1, 0.2, (768, 768)), ((768, 768), 2, 0.0, (1536, 1536)), ((768, 768), 2, 0.2, (1383, 1383)),
     ((64, 64), 4, 0.2, (218, 218))],
)  # fmt: skip
def test_an_image_is_decoded_large_enough_for_each_tile(view_wh, grid, overlap, expected):
    assert decode_wh(view_wh, grid, overlap) == expected


def test_pixel_boxes_are_relative_to_their_image_and_enclosing_needs_boxes():
    assert pixel_box_to_rel((44, 0, 100, 28), (100, 50)) == (0.44, 0.0, 1.0, 0.56)
    assert enclosing_xyxy([(0.1, 0.5, 0.2, 0.6), (0.0, 0.7, 0.3, 0.8)]) == (0.0, 0.5, 0.3, 0.8)
    with pytest.raises(ValueError):
        enclosing_xyxy([])


# --- options and the task table -------------------------------------------------------------------


def test_tiles_apply_to_the_tasks_that_find_their_own_boxes():
    tiled = {task.name for task in TASKS if task.finds_instances}
    assert tiled == {"ocr_with_region", "detection", "dense_region_caption", "region_proposal",
                     "phrase_grounding", "segmentation", "open_vocabulary_detection"}  # fmt: skip
    for name in ("tiles", "tile_overlap", "nms_iou"):
        assert {task.name for task in TASKS if OPTIONS[name].applies(task)} == tiled


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"tiles": 0}, "at least 1"),
        ({"tiles": 9}, "at most 8"),
        ({"tiles": 2.5}, "whole number"),
        ({"tiles": True}, "whole number"),
        ({"tile_overlap": 0.9}, "below 0.9"),
        ({"tile_overlap": -0.1}, "below 0.9"),
        ({"tile_overlap": float("nan")}, "below 0.9"),
        ({"nms_iou": 1.5}, "from 0 to 1"),
        ({"nms_iou": "0.5"}, "from 0 to 1"),
        ({"task": "caption", "tiles": 2}, "none of the tasks"),
        ({"tile_overlap": 0.3}, "tile_overlap was given, but tiles is 1"),
        ({"tiles": 1, "tile_overlap": 0}, "tile_overlap was given, but tiles is 1"),
        ({"task": "region_to_category", "regions_field": "gt", "nms_iou": 0.5}, "none of the tasks"),
    ],
)
def test_bad_tile_options_are_refused(options, error):
    with pytest.raises(ValueError, match=error):
        Florence2ModelConfig({"task": "detection", "model": "org/any", **options})


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"task": "detection"}, None),
        ({"task": "caption", "tiles": 1, "tile_overlap": 0.2}, None),  # the defaults, said out loud
        ({"task": "detection", "tiles": 3, "tile_overlap": 0}, (3, 0.0, False)),
        ({"task": ["caption", "detection"], "tiles": 2}, (2, 0.2, True)),  # the caption reads the whole image
    ],
)
def test_the_config_says_how_to_tile(options, expected):
    tiling = Florence2ModelConfig({"model": "org/any", **options}).tiling
    assert (tiling and (tiling.grid, tiling.overlap, tiling.whole)) == expected


# --- merge and suppression on labels --------------------------------------------------------------


def det(label, xywh, confidence=None, mask=None):
    return fol.Detection(label=label, bounding_box=list(xywh), confidence=confidence, mask=mask)


def boxes_of(instances):
    return [(x.label, approx(x.bounding_box), x.confidence) for x in instances]


@pytest.mark.parametrize(
    ("instances", "tiled", "nms_iou", "expected"),
    [
        ([], True, 0.5, []),
        ([det("car", (0.1, 0.1, 0.2, 0.2), 0.9)], True, 0.1, [("car", [0.1, 0.1, 0.2, 0.2], 0.9)]),
        # The same object seen by two tiles: one box, enclosing both, with the surer confidence.
        ([det("car", (0.40, 0.1, 0.2, 0.2), 0.6), det("car", (0.41, 0.1, 0.2, 0.2), 0.8)], True, None,
         [("car", [0.40, 0.1, 0.21, 0.2], 0.8)]),
        # Two labels are two objects, and boxes that barely touch are too.
        ([det("car", (0.4, 0.1, 0.2, 0.2), 0.6), det("bus", (0.4, 0.1, 0.2, 0.2), 0.8)], True, None,
         [("car", [0.4, 0.1, 0.2, 0.2], 0.6), ("bus", [0.4, 0.1, 0.2, 0.2], 0.8)]),
        ([det("car", (0.1, 0.1, 0.2, 0.2), 0.6), det("car", (0.25, 0.1, 0.2, 0.2), 0.8)], True, None,
         [("car", [0.1, 0.1, 0.2, 0.2], 0.6), ("car", [0.25, 0.1, 0.2, 0.2], 0.8)]),
        # No tiles and no suppression: repeats stay.
        ([det("car", (0.1, 0.1, 0.2, 0.2), 0.6), det("car", (0.1, 0.1, 0.2, 0.2), 0.8)], False, None,
         [("car", [0.1, 0.1, 0.2, 0.2], 0.6), ("car", [0.1, 0.1, 0.2, 0.2], 0.8)]),
        # Suppression keeps the surer of a repeat, and boxes that overlap less than asked.
        ([det("car", (0.1, 0.1, 0.2, 0.2), 0.6), det("car", (0.1, 0.1, 0.2, 0.21), 0.8),
          det("car", (0.2, 0.1, 0.2, 0.2), 0.7)], False, 0.5,
         [("car", [0.1, 0.1, 0.2, 0.21], 0.8), ("car", [0.2, 0.1, 0.2, 0.2], 0.7)]),
        # Without scores (scores=False), a repeat still goes.
        ([det("car", (0.1, 0.1, 0.2, 0.2)), det("car", (0.1, 0.1, 0.2, 0.2))], False, 0.9,
         [("car", [0.1, 0.1, 0.2, 0.2], None)]),
    ],
    ids=["empty", "one", "repeat-across-tiles", "two-labels", "neighbours", "off", "nms", "no-scores"],
)  # fmt: skip
def test_merge_and_suppression(instances, tiled, nms_iou, expected):
    assert boxes_of(merge_instances(instances, tiled, nms_iou, (1000, 1000))) == expected


def test_merged_polylines_keep_every_ring_and_merged_masks_are_their_union():
    ring_a = [[0.40, 0.1], [0.6, 0.1], [0.6, 0.3]]
    ring_b = [[0.41, 0.1], [0.61, 0.1], [0.61, 0.3]]
    polylines = [fol.Polyline(label="car", points=[ring], confidence=c) for ring, c in ((ring_a, 0.5), (ring_b, 0.7))]
    (merged,) = merge_instances(polylines, True, None, (1000, 1000))
    assert merged.points == [ring_b, ring_a] and merged.confidence == 0.7
    left = det("car", (0.1, 0.1, 0.2, 0.2), 0.9, mask=np.eye(20, dtype=bool))
    right = det("car", (0.11, 0.1, 0.2, 0.2), 0.5)  # a box without a mask fills its box
    (merged,) = merge_instances([left, right], True, None, (100, 100))
    assert merged.mask.shape == (20, 21) and merged.confidence == 0.9
    assert merged.mask[:, 1:].all() and merged.mask[:, 0].sum() == 1


# --- a batch on the fake runner -------------------------------------------------------------------

TILES = tuple(tile_boxes(2, 0.2))


def tiled_items(*names, whole=False):
    """Items whose tiles' pixel values are ``<name><k>``; the fake runner answers with that label."""
    return [
        Item(name, pixel_values=name if whole else None, image_wh=(100, 100),
             tile_pixels=[f"{name}{k}" for k in range(4)], tiles=TILES)
        for name in names
    ]  # fmt: skip


def test_each_tile_is_a_row_of_one_shared_pass_and_its_boxes_come_back_in_its_place():
    runner = FakeRunner()
    outcomes = label_items(Florence2ModelConfig({"task": "detection", "model": "org/any"}), runner,
                           tiled_items("a", "b"))  # fmt: skip
    assert runner.vision_calls == [["a0", "a1", "a2", "a3", "b0", "b1", "b2", "b3"]]
    # The fake's box, (0.1005, 0.2005) to (0.5005, 0.9005) of each tile, in the whole image.
    for name, outcome in zip("ab", outcomes):
        found = {d.label: d.bounding_box for d in outcome.labels["detection"].detections}
        assert sorted(found) == [f"{name}{k}" for k in range(4)]
        for k, (x1, y1, _, _) in enumerate(TILES):
            assert found[f"{name}{k}"] == approx([x1 + 0.1005 * B, y1 + 0.2005 * B, 0.4 * B, 0.7 * B])


def test_a_task_on_the_whole_image_reads_its_own_row_beside_the_tiles():
    runner = FakeRunner()
    config = Florence2ModelConfig({"task": ["caption", "detection"], "model": "org/any", "tiles": 2})
    (outcome,) = label_items(config, runner, tiled_items("a", whole=True))
    assert runner.vision_calls == [["a", "a0", "a1", "a2", "a3"]]
    assert outcome.labels["caption"].label == "a" and len(outcome.labels["detection"].detections) == 4


def test_an_image_whose_tiles_break_the_vision_pass_fails_alone():
    runner = FakeRunner(broken_images={"b2"})
    outcomes = label_items(Florence2ModelConfig({"task": "detection", "model": "org/any"}), runner,
                           tiled_items("a", "b", "c"))  # fmt: skip
    assert [bool(o.failed) for o in outcomes] == [False, True, False]
    assert "vision encoder failed (a broken image)" in outcomes[1].reason
    assert [d.label for d in outcomes[2].labels["detection"].detections] == ["c0", "c1", "c2", "c3"]


def test_the_vision_pass_reads_at_most_a_batch_of_views_and_never_splits_an_image():
    runner = FakeRunner()
    config = Florence2ModelConfig({"task": "detection", "model": "org/any", "batch_size": 6})
    outcomes = label_items(config, runner, tiled_items("a", "b", "c"))
    assert [len(call) for call in runner.vision_calls] == [4, 4, 4]
    assert all(len(o.labels["detection"].detections) == 4 for o in outcomes)


def test_a_whole_image_task_on_an_item_loaded_as_tiles_only_fails_with_a_reason():
    config = Florence2ModelConfig({"task": ["caption", "detection"], "model": "org/any"})
    (outcome,) = label_items(config, FakeRunner(), tiled_items("a"))
    assert outcome.failed == ["caption: the whole image was not loaded (only its tiles)"]
    assert len(outcome.labels["detection"].detections) == 4


# --- end to end on the tiny model -----------------------------------------------------------------

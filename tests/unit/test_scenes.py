"""The drawn scenes the seeing model learnt from: exact boxes, captions in box order, every kind of image."""

from __future__ import annotations

import numpy as np
import pytest

from fiftyone_florence2 import scenes


@pytest.mark.parametrize(
    ("labels", "caption"),
    [
        ([], ""),
        (["red circle"], "a red circle"),
        (["red circle", "blue square"], "a red circle and a blue square"),
        (["red circle", "blue square", "green triangle"], "a red circle, a blue square and a green triangle"),
        (["red circle", "red circle"], "a red circle and a red circle"),
    ],
)
def test_caption_names_the_objects_in_order(labels, caption):
    assert scenes.caption_for(labels) == caption


@pytest.mark.parametrize(
    ("shape", "xyxy", "size_wh", "rel_xywh"),
    [
        ("square", (0, 0, 9, 9), (20, 10), (0.0, 0.0, 0.5, 1.0)),
        ("square", (5, 2, 5, 2), (10, 10), (0.5, 0.2, 0.1, 0.1)),  # one pixel
        ("circle", (10, 0, 29, 19), (40, 20), (0.25, 0.0, 0.5, 1.0)),
        ("triangle", (0, 0, 15, 15), (16, 32), (0.0, 0.0, 1.0, 0.5)),
        ("star", (0, 0, 3, 3), (8, 8), ValueError),
    ],
)
def test_a_shapes_box_is_the_extent_of_its_pixels(shape, xyxy, size_wh, rel_xywh):
    if rel_xywh is ValueError:
        with pytest.raises(ValueError, match="Unknown shape 'star'"):
            scenes.shape_mask(shape, xyxy, size_wh)
        return
    mask = scenes.shape_mask(shape, xyxy, size_wh)
    assert mask.shape == (size_wh[1], size_wh[0])
    assert scenes.mask_rel_xywh(mask) == pytest.approx(rel_xywh)


@pytest.mark.parametrize("kind", [*scenes.BACKGROUNDS, "stripes"])
def test_backgrounds_are_neutral_and_fill_the_image(kind):
    rng = np.random.default_rng(0)
    if kind not in scenes.BACKGROUNDS:
        with pytest.raises(ValueError, match="Unknown background 'stripes'"):
            scenes.background_pixels(rng, kind, (8, 6))
        return
    pixels = scenes.background_pixels(rng, kind, (8, 6))
    assert pixels.shape == (6, 8, 3)
    if kind != "noise":  # faintly tinted greys: no channel strays far from the others
        assert np.ptp(pixels, axis=2).max() <= 48


@pytest.mark.parametrize("count", [0, 1, 3, 40])
def test_placed_boxes_stay_inside_and_apart(count):
    boxes = scenes.place_boxes(np.random.default_rng(1), count, (96, 64))
    assert len(boxes) <= count and (count == 0 or boxes)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        assert 0 <= x0 <= x1 < 96 and 0 <= y0 <= y1 < 64
        assert all(scenes._apart(boxes[i], other, 2) for other in boxes[i + 1 :])


def test_scenes_are_deterministic_varied_and_exact():
    drawn = scenes.draw_scenes(60, seed=5)
    again = scenes.draw_scenes(60, seed=5)
    assert [s.objects for s in drawn] == [s.objects for s in again]
    assert np.array_equal(np.asarray(drawn[0].image), np.asarray(again[0].image))
    assert {s.image.size for s in drawn} == set(scenes.SIZES_WH)
    assert {s.background for s in drawn} == set(scenes.BACKGROUNDS)
    assert {len(s.objects) for s in drawn} == {1, 2, 3}
    labels = {label for s in drawn for label, _ in s.objects}
    assert labels <= set(scenes.classes()) and len(labels) >= 8
    for scene in drawn:
        xs = [box[0] for _, box in scene.objects]
        assert xs == sorted(xs)
        assert scene.caption == scenes.caption_for([label for label, _ in scene.objects])
        for _, (x, y, w, h) in scene.objects:
            assert 0 <= x < x + w <= 1 and 0 <= y < y + h <= 1


def test_a_scene_takes_shapes_and_colours_it_was_never_trained_on():
    scene = scenes.draw_scene(np.random.default_rng(2), shapes=("circle",), colours={"purple": (150, 60, 190)})
    assert {label for label, _ in scene.objects} == {"purple circle"}

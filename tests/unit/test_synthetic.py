"""The synthetic training data (exact boxes, seeded, a curriculum order) and the "seeing" random shape."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from support import synthetic  # noqa: E402


@pytest.mark.parametrize(
    "kind, xyxy, rel_xywh",
    [
        ("square", (0, 0, 63, 63), (0.0, 0.0, 1.0, 1.0)),
        ("square", (4, 8, 11, 9), (4 / 64, 8 / 64, 8 / 64, 2 / 64)),
        ("disk", (10, 20, 29, 39), (10 / 64, 20 / 64, 20 / 64, 20 / 64)),
        ("triangle", (32, 32, 47, 47), (32 / 64, 32 / 64, 16 / 64, 16 / 64)),
    ],
)
def test_a_box_is_the_extent_of_the_drawn_pixels(kind, xyxy, rel_xywh):
    assert synthetic.mask_rel_xywh(synthetic.draw_shape(kind, xyxy)) == pytest.approx(rel_xywh)


def test_unknown_shapes_and_styles_are_refused():
    with pytest.raises(ValueError, match="Unknown shape"):
        synthetic.draw_shape("star", (0, 0, 5, 5))
    with pytest.raises(ValueError, match="style must be one of"):
        synthetic.colours(np.random.default_rng(0), "sepia", 1)
    with pytest.raises(ValueError, match="kind must be"):
        synthetic.generate("many", ["bw"])


@pytest.mark.parametrize("kind", ["one", "multi"])
def test_images_are_seeded_and_boxes_match_the_pixels(kind):
    first = synthetic.generate(kind, ["colour", "bw"] * 10, seed=7)
    again = synthetic.generate(kind, ["colour", "bw"] * 10, seed=7)
    assert [i.objects for i in first] == [i.objects for i in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(first, again))
    for item in first:
        pixels = np.asarray(item.image)
        background = pixels[0, 0] if item.style == "colour" else np.zeros(3, np.uint8)
        changed = np.any(pixels != background, axis=-1)
        union = np.zeros_like(changed)
        for _, (x, y, w, h) in item.objects:
            union[round(y * 64) : round((y + h) * 64), round(x * 64) : round((x + w) * 64)] = True
        assert not np.any(changed & ~union)  # nothing is drawn outside the boxes
        assert [box[0] for _, box in item.objects] == sorted(box[0] for _, box in item.objects)
    if kind == "multi":
        assert {len(i.objects) for i in first} <= {1, 2, 3, 4}
        assert {label for i in first for label, _ in i.objects} <= set(synthetic.CLASSES)


@pytest.mark.parametrize(
    "step, share", [(0, 1.0), (799, 1.0), (800, 1.0), (1200, 0.5), (1599, 1 / 800), (1600, 0.0), (5000, 0.0)]
)
def test_the_curriculum_share_of_black_and_white(step, share):
    assert synthetic.bw_share(step, 800, 1600) == pytest.approx(share)


def test_the_curriculum_lays_out_each_step():
    styles = synthetic.curriculum(40, 4, bw_steps=10, fade_steps=30, seed=0)
    assert len(styles) == 160 and set(styles[:40]) == {"bw"} and set(styles[120:]) == {"colour"}
    assert 10 < styles[40:120].count("bw") < 70
    with pytest.raises(ValueError, match="bw_steps <= fade_steps"):
        synthetic.curriculum(4, 1, bw_steps=5, fade_steps=2)

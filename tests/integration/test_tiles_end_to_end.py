"""Tiled detection end to end on the tiny model, through apply_model and label_samples."""

from __future__ import annotations

import math

import fiftyone as fo
import numpy as np
import pytest
from helpers import force
from PIL import Image

import fiftyone_florence2 as f2
from fiftyone_florence2.core.tiling import tile_boxes
from fiftyone_florence2.engine.items import Item, load_item
from fiftyone_florence2.runs.labelling import label_samples

approx = pytest.approx
TILES = tuple(tile_boxes(2, 0.2))


def bins(xyxy):
    return "".join(f"<loc_{min(999, max(0, math.floor(v * 1000)))}>" for v in xyxy)


def in_tile(xyxy, tile):
    """Whole-image ``xyxy`` relative to ``tile``."""
    x1, y1, x2, y2 = tile
    w, h = x2 - x1, y2 - y1
    return ((xyxy[0] - x1) / w, (xyxy[1] - y1) / h, (xyxy[2] - x1) / w, (xyxy[3] - y1) / h)


# Each tile's answer, in its own coordinates: a box at its centre, and (tiles 0 and 1) the same car in
# their overlap, seen once by each.
CAR = (0.46, 0.10, 0.54, 0.20)
TILE_ANSWERS = [
    f"t{k}" + bins((0.4, 0.4, 0.6, 0.6)) + ("car" + bins(in_tile(CAR, TILES[k])) if k < 2 else "") for k in range(4)
]


@pytest.fixture
def large(tmp_path):
    """Two large photos (1,600 x 1,200 px) and one broken file."""
    dataset = fo.Dataset()
    paths = []
    for i in range(2):
        path = tmp_path / f"large_{i}.png"
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    dataset.add_samples([fo.Sample(filepath=p) for p in [paths[0], str(broken), paths[1]]])
    yield dataset
    dataset.delete()


def tiled_model(checkpoint, tokenizer, **options):
    answers = iter(TILE_ANSWERS * 2)  # two good images, four tiles each, in order
    forced = force(tokenizer, lambda task, question: next(answers))
    return f2.load_model("detection", model=str(checkpoint), num_beams=1, generate_kwargs=forced, **options)


@pytest.mark.parametrize("route", ["apply_model", "label_samples"])
def test_tiled_detection_puts_each_tiles_boxes_in_their_place_and_merges_the_car(large, tiny_checkpoint, tokenizer,
                                                                                 route):  # fmt: skip
    model = tiled_model(tiny_checkpoint, tokenizer, tiles=2, batch_size=8)
    if route == "apply_model":
        large.apply_model(model, label_field="tiled", batch_size=3)
        failures = model.failures
    else:
        failures = label_samples(large, model, "tiled", batch_size=3, progress=False).failures
    broken = large.skip(1).first()
    assert list(failures) == [broken.id] and "not an image file" in failures[broken.id]
    for sample in (large.first(), large.last()):
        found = {d.label: d.bounding_box for d in sample["tiled"].detections}
        assert sorted(found) == ["car", "t0", "t1", "t2", "t3"]  # the car once, merged across the border
        for k, (x1, y1, x2, y2) in enumerate(TILES):
            x, y, w, h = found[f"t{k}"]
            assert (x + w / 2, y + h / 2) == approx(((x1 + x2) / 2, (y1 + y2) / 2), abs=0.01)
        assert found["car"] == approx([0.46, 0.10, 0.08, 0.10], abs=0.01)


def test_without_tiles_the_car_is_one_box_only_with_nms(large, tiny_checkpoint, tokenizer):
    repeated = "car" + bins(CAR) + bins((0.461, 0.10, 0.541, 0.201))  # Florence-2 repeating a box
    view = large.select([large.first().id])
    for nms_iou, expected in ((None, 2), (0.5, 1)):
        model = f2.load_model("detection", model=str(tiny_checkpoint), num_beams=1, nms_iou=nms_iou,
                              generate_kwargs=force(tokenizer, repeated))  # fmt: skip
        view.apply_model(model, label_field="plain")
        assert len(view.first()["plain"].detections) == expected


def test_tiles_are_decoded_once_at_the_size_they_need(tiny_checkpoint, large):
    """A tile holds at least the model's input size, so a large image is decoded shrunk, not at full size."""
    model = f2.load_model("detection", model=str(tiny_checkpoint), tiles=2)
    item = load_item(Item("x"), large.first().filepath, model.runner.preprocess, model.runner.image_size,
                     model.config.tiling)  # fmt: skip
    assert item.error is None and item.image_wh == (1600, 1200) and item.pixel_values is None
    assert len(item.tile_pixels) == 4 and item.tile_pixels[0].shape == (3, 64, 64)
    assert [approx(t, abs=0.01) for t in item.tiles] == list(TILES)


def test_the_cli_offers_the_tile_options():
    from fiftyone_florence2.cli import build_parser

    args = build_parser().parse_args(["label", "--images", "x", "--task", "detection", "--tiles", "3",
                                      "--tile-overlap", "0.1", "--nms-iou", "0.6"])  # fmt: skip
    assert (args.tiles, args.tile_overlap, args.nms_iou) == (3, 0.1, 0.6)

"""Tile geometry: the N x N grid of overlapping tiles and the way back to whole-image coordinates. Pure.

Florence-2 sees every image at one size (768 x 768 on the released
checkpoints), so a small object in a large photo covers a few pixels. Tiles
are crops of the image that the model sees at that full size each. A tile's
answer is relative to the tile; :func:`xywh_to_image` and
:func:`points_to_image` put it back relative to the whole image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fiftyone_florence2.core.parsing import XYWH, Point

XYXY = tuple[float, float, float, float]
PixelBox = tuple[int, int, int, int]

# In a tiled run, boxes of one label whose IoU is at least this are merged into one: above all the
# object seen by two tiles in their overlap. supervision's own default for its slicer.
TILE_MERGE_IOU = 0.5


@dataclass(frozen=True)
class Tiling:
    """How a run tiles each image: a ``grid`` x ``grid`` of tiles overlapping by ``overlap`` of a tile;
    ``whole`` when some task also reads the whole image."""

    grid: int
    overlap: float
    whole: bool = False


def tile_side(grid: int, overlap: float) -> float:
    """A tile's side as a fraction of the image's side: ``grid`` tiles, each overlapping the next by
    ``overlap`` of a tile, span the image exactly."""
    if grid < 1 or not 0 <= overlap < 1:
        raise ValueError(f"A grid needs at least one tile and an overlap in [0, 1), got {grid} and {overlap}.")
    return 1.0 / (grid - (grid - 1) * overlap)


def tile_starts(grid: int, overlap: float) -> list[float]:
    """Where each tile of a row (or column) starts, relative; the last one ends at exactly 1."""
    side = tile_side(grid, overlap)
    return [k * side * (1 - overlap) for k in range(grid)]


def tile_boxes(grid: int, overlap: float) -> list[XYXY]:
    """The tiles as relative ``[x1, y1, x2, y2]`` boxes, row by row from the top left."""
    side = tile_side(grid, overlap)
    starts = tile_starts(grid, overlap)
    return [(x, y, min(1.0, x + side), min(1.0, y + side)) for y in starts for x in starts]


def tile_pixel_boxes(image_wh: tuple[int, int], grid: int, overlap: float) -> list[PixelBox]:
    """The tiles as whole-pixel ``[x1, y1, x2, y2]`` crops (PIL's crop boxes) of an image of ``image_wh``:
    each at least one pixel each way, and together covering every pixel."""
    width, height = image_wh
    if width < 1 or height < 1:
        raise ValueError(f"An image to tile needs pixels, got {width} x {height}.")
    boxes = []
    for x1, y1, x2, y2 in tile_boxes(grid, overlap):
        (left, right), (top, bottom) = _pixel_span(x1, x2, width), _pixel_span(y1, y2, height)
        boxes.append((left, top, right, bottom))
    return boxes


def _pixel_span(start: float, end: float, size: int) -> tuple[int, int]:
    """Whole pixels ``[lo, hi)`` that cover ``[start, end)`` of ``size`` pixels; never empty."""
    lo = min(size - 1, math.floor(start * size + 1e-9))
    return lo, max(lo + 1, min(size, math.ceil(end * size - 1e-9)))


def pixel_box_to_rel(box: PixelBox, image_wh: tuple[int, int]) -> XYXY:
    """A pixel box ``[x1, y1, x2, y2]`` of an image of ``image_wh`` as a relative box."""
    return (box[0] / image_wh[0], box[1] / image_wh[1], box[2] / image_wh[0], box[3] / image_wh[1])


def decode_wh(view_wh: tuple[int, int], grid: int, overlap: float) -> tuple[int, int]:
    """The smallest decoded size at which each tile still holds ``view_wh`` pixels (the model's input)."""
    side = tile_side(grid, overlap)
    return (math.ceil(view_wh[0] / side), math.ceil(view_wh[1] / side))


def points_to_image(points: Sequence[Point], tile: XYXY) -> tuple[Point, ...]:
    """Points relative to ``tile`` as points relative to the whole image."""
    x1, y1, x2, y2 = tile
    return tuple((x1 + x * (x2 - x1), y1 + y * (y2 - y1)) for x, y in points)


def xywh_to_image(rel_xywh: XYWH, tile: XYXY) -> XYWH:
    """A box ``[x, y, w, h]`` relative to ``tile`` as a box relative to the whole image."""
    x1, y1, x2, y2 = tile
    x, y, w, h = rel_xywh
    return (x1 + x * (x2 - x1), y1 + y * (y2 - y1), w * (x2 - x1), h * (y2 - y1))


def xywh_to_xyxy(rel_xywh: Sequence[float]) -> XYXY:
    """``[x, y, w, h]`` as ``[x1, y1, x2, y2]``."""
    x, y, w, h = rel_xywh
    return (x, y, x + w, y + h)


def xyxy_to_xywh(xyxy: Sequence[float]) -> XYWH:
    """``[x1, y1, x2, y2]`` as ``[x, y, w, h]``."""
    x1, y1, x2, y2 = xyxy
    return (x1, y1, x2 - x1, y2 - y1)


def enclosing_xyxy(boxes: Sequence[Sequence[float]]) -> XYXY:
    """The smallest ``[x1, y1, x2, y2]`` box holding every box."""
    if not boxes:
        raise ValueError("No boxes to enclose.")
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))

"""Drawn scenes of coloured shapes with exact boxes and a short caption: numpy and PIL only.

The shipped ``florence2-seeing-tiny`` checkpoint learnt from these scenes, the
demo draws them when the Hub is out of reach, and the tests fine-tune on them.
Each scene has 1 to ``max_objects`` shapes of :data:`SHAPES` in :data:`COLOURS`
(a class is ``"<colour> <shape>"``), small to large, apart from each other, on
a plain, gradient or noisy neutral background, in a square or non-square image.
Objects are listed left to right (then top to bottom): one fixed order for the
answer text to learn, and the caption names them in the same order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 230), "yellow": (240, 210, 40)}
BACKGROUNDS = ("plain", "gradient", "noise")
# Width x height of the drawn images: square and non-square, all resized to the model's square input.
SIZES_WH = ((64, 64), (96, 64), (64, 96), (96, 72), (72, 96), (80, 80))
MIN_FRACTION, MAX_FRACTION = 0.12, 0.5  # a shape's side, as a share of the image's shorter side


@dataclass(frozen=True)
class Scene:
    """One drawn image: its objects as ``(class, relative [x, y, w, h])`` left to right, and its caption."""

    image: Image.Image
    objects: tuple[tuple[str, tuple[float, float, float, float]], ...]
    caption: str
    background: str


def classes() -> list[str]:
    """Every class a scene can hold, ``"<colour> <shape>"``."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def caption_for(labels: Sequence[str]) -> str:
    """``a red circle``, ``a red circle and a blue square``, ``a red circle, a blue square and ...``."""
    named = [f"a {label}" for label in labels]
    if len(named) <= 1:
        return "".join(named)
    return ", ".join(named[:-1]) + " and " + named[-1]


def shape_mask(shape: str, xyxy: Sequence[int], size_wh: tuple[int, int]) -> np.ndarray:
    """The boolean mask of ``shape`` drawn inside the pixel box ``xyxy`` (inclusive corners)."""
    mask = Image.new("L", size_wh, 0)
    draw = ImageDraw.Draw(mask)
    x0, y0, x1, y1 = xyxy
    if shape == "square":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif shape == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) / 2, y0)], fill=255)
    else:
        raise ValueError(f"Unknown shape {shape!r}; choose one of {', '.join(SHAPES)}.")
    return np.asarray(mask) > 0


def mask_rel_xywh(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The relative ``[x, y, w, h]`` extent of a mask's pixels (a pixel spans [i, i + 1))."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    x0, x1, y0, y1 = cols.min(), cols.max() + 1, rows.min(), rows.max() + 1
    return (float(x0 / width), float(y0 / height), float((x1 - x0) / width), float((y1 - y0) / height))


def background_pixels(rng: np.random.Generator, kind: str, size_wh: tuple[int, int]) -> np.ndarray:
    """A neutral (grey, faintly tinted) background: plain, a linear gradient between two, or plain with noise;
    or ``black``."""
    width, height = size_wh
    if kind == "black":  # the easy start of a curriculum: nothing but the shapes stands out
        return np.zeros((height, width, 3), np.float32)
    first = rng.integers(20, 236) + rng.integers(-12, 13, 3)
    pixels = np.broadcast_to(first.astype(np.float32), (height, width, 3)).copy()
    if kind == "gradient":
        second = rng.integers(20, 236) + rng.integers(-12, 13, 3)
        ramp = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height, dtype=np.float32)
        ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
        pixels = first + (second - first) * ramp + np.zeros_like(pixels)
    elif kind == "noise":
        pixels += rng.normal(0.0, rng.uniform(6, 20), pixels.shape)
    elif kind != "plain":
        raise ValueError(f"Unknown background {kind!r}; choose one of {', '.join(BACKGROUNDS)} or black.")
    return pixels


def _apart(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def place_boxes(
    rng: np.random.Generator,
    count: int,
    size_wh: tuple[int, int],
    fractions: tuple[float, float] = (MIN_FRACTION, MAX_FRACTION),
    gap: int = 2,
) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` square pixel boxes ``(x0, y0, x1, y1)``, ``gap`` pixels apart, inside the image."""
    width, height = size_wh
    shorter = min(width, height)
    low, high = max(4, round(fractions[0] * shorter)), max(4, round(fractions[1] * shorter))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(100 * count):
        if len(boxes) == count:
            break
        side = int(rng.integers(low, high + 1))
        x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        if all(_apart(box, other, gap) for other in boxes):
            boxes.append(box)
    return boxes


def draw_scene(rng: np.random.Generator, max_objects: int = 3, backgrounds: Sequence[str] = BACKGROUNDS,
               sizes_wh: Sequence[tuple[int, int]] = SIZES_WH, shapes: Sequence[str] = SHAPES,
               colours: Mapping[str, tuple[int, int, int]] = COLOURS,
               fractions: tuple[float, float] = (MIN_FRACTION, MAX_FRACTION)) -> Scene:  # fmt: skip
    """One scene drawn from ``rng``: 1 to ``max_objects`` shapes of ``shapes`` in ``colours`` (name to RGB),
    their sides ``fractions`` of the image's shorter side, on one of ``backgrounds``."""
    names = list(colours)
    size_wh = tuple(sizes_wh[int(rng.integers(len(sizes_wh)))])
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    pixels = background_pixels(rng, background, size_wh)
    objects = []
    for box in place_boxes(rng, int(rng.integers(1, max_objects + 1)), size_wh, fractions):
        shape, colour = shapes[int(rng.integers(len(shapes)))], names[int(rng.integers(len(names)))]
        mask = shape_mask(shape, box, size_wh)
        pixels[mask] = np.asarray(colours[colour]) + rng.integers(-15, 16, 3)
        objects.append((f"{colour} {shape}", mask_rel_xywh(mask)))
    objects.sort(key=lambda obj: (round(obj[1][0], 6), obj[1][1]))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return Scene(image, tuple(objects), caption_for([label for label, _ in objects]), background)


def draw_scenes(count: int, seed: int = 0, **options) -> list[Scene]:
    """``count`` scenes from one seed (options as :func:`draw_scene`)."""
    rng = np.random.default_rng(seed)
    return [draw_scene(rng, **options) for _ in range(count)]

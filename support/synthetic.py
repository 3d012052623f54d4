"""Synthetic detection data with exact boxes, for checking that fine-tuning learns: numpy and PIL only.

Two kinds of image, both seeded and deterministic:

- **one object**: one rectangle on a plain background. Style ``colour`` draws both in random colours
  (at least :data:`MIN_CONTRAST` apart in RGB); style ``bw`` is a white rectangle on black, the easy
  start of the curriculum.
- **multi object**: 1 to 4 non-overlapping shapes of three classes (:data:`CLASSES`) in random
  colours on a random background (style ``bw``: white on black).

A box is the extent of the shape's own pixels, in relative ``[x, y, w, h]``, so a model's answer can
be checked to the pixel. Boxes are listed left to right (then top to bottom), one fixed order for the
answer text to learn.

:func:`curriculum` lays out a training stream (one style per sample, step by step) and
:func:`write_dataset` writes PNGs plus a FiftyOne dataset whose ``order`` field replays it:
``dataset.sort_by("order")`` trained with ``shuffle=False``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fiftyone_florence2.scenes import mask_rel_xywh, shape_mask

SIZE = 64
CLASSES = ("square", "disk", "triangle")
ONE_OBJECT_LABEL = "rectangle"
MIN_CONTRAST = 80.0  # Euclidean RGB distance between a shape and its background
STYLES = ("bw", "colour")


@dataclass(frozen=True)
class Item:
    """One image and its objects: ``(label, relative [x, y, w, h])`` each, left to right."""

    image: Image.Image
    objects: tuple[tuple[str, tuple[float, float, float, float]], ...]
    style: str


def colours(rng: np.random.Generator, style: str, count: int) -> tuple[tuple[int, int, int], list[tuple[int, ...]]]:
    """A background and ``count`` shape colours, each at least :data:`MIN_CONTRAST` from the background."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}.")
    if style == "bw":
        return (0, 0, 0), [(255, 255, 255)] * count
    background = rng.integers(0, 256, 3)
    shapes = []
    while len(shapes) < count:
        colour = rng.integers(0, 256, 3)
        if np.linalg.norm(colour - background) >= MIN_CONTRAST:
            shapes.append(tuple(int(c) for c in colour))
    return tuple(int(c) for c in background), shapes


def draw_shape(kind: str, xyxy: Sequence[int], size: int = SIZE) -> np.ndarray:
    """The boolean mask of one shape drawn inside the pixel box ``xyxy`` (inclusive corners)."""
    shapes = {"square": "square", ONE_OBJECT_LABEL: "square", "disk": "circle", "triangle": "triangle"}
    if kind not in shapes:
        raise ValueError(f"Unknown shape {kind!r}.")
    return shape_mask(shapes[kind], xyxy, (size, size))


def _render(shapes: list[tuple[str, tuple[int, int, int, int]]], style: str, rng, size: int) -> Item:
    background, fills = colours(rng, style, len(shapes))
    pixels = np.empty((size, size, 3), np.uint8)
    pixels[:] = background
    objects = []
    for (kind, xyxy), fill in zip(shapes, fills):
        mask = draw_shape(kind, xyxy, size)
        pixels[mask] = fill
        objects.append((kind, mask_rel_xywh(mask)))
    objects.sort(key=lambda obj: (obj[1][0], obj[1][1]))
    return Item(Image.fromarray(pixels), tuple(objects), style)


def one_object(rng: np.random.Generator, style: str = "colour", size: int = SIZE,
               min_side: int = 6, max_side: int = 48) -> Item:  # fmt: skip
    """One rectangle, each side ``min_side`` to ``max_side`` pixels, anywhere in the image."""
    w, h = rng.integers(min_side, max_side + 1, 2)
    x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
    return _render([(ONE_OBJECT_LABEL, (int(x0), int(y0), int(x0 + w - 1), int(y0 + h - 1)))], style, rng, size)


def multi_object(rng: np.random.Generator, style: str = "colour", size: int = SIZE, max_objects: int = 4,
                 min_side: int = 10, max_side: int = 28, gap: int = 2) -> Item:  # fmt: skip
    """1 to ``max_objects`` shapes of :data:`CLASSES`, at least ``gap`` pixels apart."""
    wanted = int(rng.integers(1, max_objects + 1))
    placed: list[tuple[str, tuple[int, int, int, int]]] = []
    for _ in range(200 * wanted):
        if len(placed) == wanted:
            break
        side = int(rng.integers(min_side, max_side + 1))
        x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        if all(_apart(box, other, gap) for _, other in placed):
            placed.append((CLASSES[int(rng.integers(len(CLASSES)))], box))
    return _render(placed, style, rng, size)


def _apart(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def bw_share(step: int, bw_steps: int, fade_steps: int) -> float:
    """The curriculum's share of black-and-white samples at ``step``: 1 until ``bw_steps``, then a linear
    fall to 0 at ``fade_steps``."""
    if step < bw_steps:
        return 1.0
    if step >= fade_steps:
        return 0.0
    return 1.0 - (step - bw_steps) / (fade_steps - bw_steps)


def curriculum(steps: int, batch_size: int, bw_steps: int = 800, fade_steps: int = 1600, seed: int = 0) -> list[str]:
    """One style per training sample, ``steps * batch_size`` of them, in training order."""
    if not 0 <= bw_steps <= fade_steps:
        raise ValueError(f"Need 0 <= bw_steps <= fade_steps, got {bw_steps} and {fade_steps}.")
    rng = np.random.default_rng(seed)
    draws = rng.random(steps * batch_size)
    return ["bw" if draws[i] < bw_share(i // batch_size, bw_steps, fade_steps) else "colour" for i in range(len(draws))]


def generate(kind: str, styles: Iterable[str], seed: int = 0, **shape_options) -> list[Item]:
    """Images of ``kind`` (``one`` or ``multi``), one per style given, from one seed."""
    make = {"one": one_object, "multi": multi_object}.get(kind)
    if make is None:
        raise ValueError(f"kind must be 'one' or 'multi', got {kind!r}.")
    rng = np.random.default_rng(seed)
    return [make(rng, style, **shape_options) for style in styles]


def write_dataset(items: Sequence[Item], directory: str | Path, name: str | None = None,
                  label_field: str = "ground_truth"):  # fmt: skip
    """Writes the images as PNGs under ``directory`` and returns a FiftyOne dataset of them: boxes in
    ``label_field``, the style in ``style`` and the position in ``order``."""
    import fiftyone as fo

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, item in enumerate(items):
        path = directory / f"{i:06d}.png"
        item.image.save(path)
        width, height = item.image.size
        detections = [fo.Detection(label=label, bounding_box=list(box)) for label, box in item.objects]
        samples.append(fo.Sample(filepath=str(path), order=i, style=item.style,
                                 metadata=fo.ImageMetadata(width=width, height=height, num_channels=3),
                                 **{label_field: fo.Detections(detections=detections)}))  # fmt: skip
    dataset = fo.Dataset(name)
    dataset.add_samples(samples, progress=False)
    return dataset

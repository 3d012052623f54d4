"""Seeded images to label, shared by the tests and the benchmarks: numpy and PIL only.

:func:`write_image` writes random noise (the tests' images: any size, any mode); :func:`synthetic_image` and
:func:`write_images` make smooth photo-like pictures (the benchmarks' images: they decode like photos).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Sizes cycle through landscape and portrait photos of common resolutions.
_IMAGE_SIZES = [(640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720)]


def write_image(path: Path, size=(96, 64), mode="RGB", seed=0) -> str:
    """Writes a seeded random-noise image of ``size`` (width, height) in ``mode`` and returns its path."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return str(path)


def synthetic_image(size: tuple[int, int], seed: int) -> Image.Image:
    """A smooth picture with a few shapes: decodes like a photo, unlike random noise."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.15, 0.15, (3, 2))
    channels = [base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)]
    array = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.uniform(0, width * 0.8), rng.uniform(0, height * 0.8)
        x1, y1 = x0 + width * rng.uniform(0.05, 0.3), y0 + height * rng.uniform(0.05, 0.3)
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return image


def write_images(folder: str | Path, count: int, sizes=None, prefix: str = "img") -> list[str]:
    """Writes ``count`` JPEG files (reused when already there) and returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or _IMAGE_SIZES
    paths = []
    for i in range(count):
        size = sizes[i % len(sizes)]
        path = folder / f"{prefix}_{i:05d}_{size[0]}x{size[1]}.jpg"
        if not path.exists():
            synthetic_image(size, seed=i).save(path, quality=90)
        paths.append(str(path))
    return paths

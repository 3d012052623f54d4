"""What the benchmarks run on: settings, random-weight checkpoints, synthetic images, datasets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Sizes cycle through landscape and portrait photos of common resolutions.
_IMAGE_SIZES = [(640, 480), (800, 600), (1024, 768), (480, 640), (1280, 720)]


@dataclass
class Settings:
    """One benchmark run. ``quick`` picks small defaults; every field can be overridden."""

    quick: bool = False
    shape: str = "base"  # random-weight checkpoint shape, unless ``checkpoint`` is given
    checkpoint: str | None = None
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None
    # Full CPU runs compare in chunks of two images: at about 4 s per image and
    # generation, a shorter chunk pairs the contenders more tightly in time when
    # other processes load the machine, and batching gains nothing on a CPU.
    images: int = 20
    batch_size: int = 2
    chunk_images: int = 2  # images per side-by-side comparison unit
    new_tokens: int = 32
    beams: int = 3
    baseline_beams: int = 3  # the per-sample approach's beams, as existing integrations ship
    task: str = "caption"
    tasks: tuple[str, ...] = ("caption", "detection", "ocr")
    compare_dtype: str | None = None  # a second dtype to time against ``dtype``
    warmup: bool = True
    memory_images: int = 2000
    memory_batch_size: int = 16
    write_samples: int = 2000
    write_batch_size: int = 16
    boxes_per_label: int = 10
    workdir: str = "benchmarks/out"
    output: str | None = None  # the markdown file to write the section into; None prints only
    command: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"

    def as_dict(self) -> dict:
        return asdict(self)


def fixed_length(new_tokens: int) -> dict[str, int]:
    """``generate`` arguments that make every generation exactly ``new_tokens`` long, so runs compare."""
    return {"min_new_tokens": new_tokens, "max_new_tokens": new_tokens}


def checkpoint_path(workdir: str | Path, shape: str) -> Path:
    """A random-weight checkpoint of ``shape``, built once and kept under ``workdir``."""
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    path = Path(workdir) / "checkpoints" / shape
    if not (path / "config.json").exists() or not any(path.glob("*.safetensors")):
        build_random_checkpoint(path, shape)
    return path


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


def make_dataset(paths: list[str], name: str | None = None):
    """A non-persistent dataset with one sample per path, in order."""
    import fiftyone as fo

    dataset = fo.Dataset(name)
    dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return dataset

"""What the benchmarks run on: settings, random-weight checkpoints, datasets (images: :mod:`support.images`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


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


def make_dataset(paths: list[str], name: str | None = None):
    """A non-persistent dataset with one sample per path, in order."""
    import fiftyone as fo

    dataset = fo.Dataset(name)
    dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return dataset

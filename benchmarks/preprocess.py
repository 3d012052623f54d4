"""Preprocessing time per image: transformers' fast (torchvision) vs slow (PIL) image processor backend.

Each call is the library's own (``fiftyone_florence2.engine.runner.ImagePreprocessor``:
``image_processor(images=image, return_tensors="pt")["pixel_values"][0]``), one
image per call as its loader threads make them, on an image decoded the way the
library decodes it (``images.load_rgb`` with the processor's size as the JPEG
draft size).

python -m benchmarks.preprocess                       # 64 px (tiny checkpoint) and 768 px (Florence-2's size)
python -m benchmarks.preprocess --calls 10 --warmup 2 # quicker
"""

from __future__ import annotations

import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path

from . import report

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ((640, 480), (1920, 1080))
# What transformers 5 calls the backends; use_fast=True/False is the deprecated spelling of the same choice.
BACKENDS = {"fast": {"backend": "torchvision"}, "slow": {"backend": "pil"}}
LEGACY = {"fast": {"use_fast": True}, "slow": {"use_fast": False}}
REAL_PX = 768


def checkpoints(workdir: Path) -> dict[int, Path]:
    """The tiny random checkpoint (64 px), and a copy of its processor at Florence-2's 768 px.

    ``build_random_checkpoint(..., "base")`` writes the same image processor at
    768 px, with 231M random weights this does not need.
    """
    from fiftyone_florence2.engine.random_checkpoint import SHAPES, build_random_checkpoint

    tiny = workdir / "tiny"
    if not (tiny / "config.json").is_file():
        build_random_checkpoint(tiny, "tiny")
    real = workdir / f"processor-{REAL_PX}"
    if not (real / "processor_config.json").is_file():
        real.mkdir(parents=True, exist_ok=True)
        for path in tiny.iterdir():
            if path.suffix != ".safetensors":
                shutil.copy(path, real / path.name)
        config = json.loads((real / "processor_config.json").read_text())
        image = config["image_processor"]
        image["size"] = image["crop_size"] = {"height": REAL_PX, "width": REAL_PX}
        image["image_seq_length"] = (REAL_PX // 32) ** 2 + 1  # 577, as in Florence-2
        (real / "processor_config.json").write_text(json.dumps(config, indent=2))
    return {SHAPES["tiny"]["image_px"]: tiny, REAL_PX: real}


def write_images(workdir: Path) -> dict[tuple[int, int], Path]:
    """Photo-like JPEGs (smooth gradients with grain, quality 90) of each size in ``IMAGES``."""
    import numpy as np
    from PIL import Image

    paths = {}
    rng = np.random.default_rng(0)
    for w, h in IMAGES:
        path = workdir / f"image_{w}x{h}.jpg"
        if not path.is_file():
            y, x = np.mgrid[0:h, 0:w]
            base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
            pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
        paths[(w, h)] = path
    return paths


def load_processor(path: Path, **backend):
    from transformers import Florence2Processor

    return Florence2Processor.from_pretrained(path, **backend).image_processor


def timed_ms(fn, calls: int, warmup: int) -> tuple[float, float, object]:
    """Median and minimum milliseconds of ``calls`` calls after ``warmup`` untimed ones, and the last result."""
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times), result


def run(workdir: Path, calls: int, warmup: int, log=print) -> tuple[list[dict], dict[str, str]]:
    from transformers.utils import logging as hf_logging

    from fiftyone_florence2.engine.images import load_rgb
    from fiftyone_florence2.engine.runner import ImagePreprocessor

    workdir.mkdir(parents=True, exist_ok=True)
    paths = write_images(workdir)
    rows, classes = [], {}
    for px, checkpoint in checkpoints(workdir).items():
        processors = {name: load_processor(checkpoint, **kwargs) for name, kwargs in BACKENDS.items()}
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # use_fast's deprecation notice
        try:
            legacy = {name: type(load_processor(checkpoint, **kwargs)) for name, kwargs in LEGACY.items()}
        finally:
            hf_logging.set_verbosity(verbosity)
        default = type(load_processor(checkpoint))  # what the library's runner gets
        for name, processor in processors.items():
            cls = type(processor)
            if legacy[name] is not cls:
                raise RuntimeError(f"{LEGACY[name]} gives {legacy[name].__name__}, {BACKENDS[name]} {cls.__name__}")
            classes[name] = f"{cls.__module__}.{cls.__name__}"
        classes["default (what the library loads for a native checkpoint)"] = f"{default.__module__}.{default.__name__}"
        size = processors["fast"].size
        if (size.height, size.width) != (px, px):
            raise RuntimeError(f"{checkpoint}: the processor resizes to {size}, not {px} px")
        for wh, path in paths.items():
            decode_ms, _, loaded = timed_ms(lambda p=path, wh=(px, px): load_rgb(str(p), wh), calls, warmup)
            image = loaded.image
            row = {"px": px, "file": wh, "decoded": image.size, "decode_ms": decode_ms}
            outputs = {}
            for name, processor in processors.items():
                preprocess = ImagePreprocessor(processor)
                row[f"{name}_ms"], row[f"{name}_min_ms"], outputs[name] = timed_ms(
                    lambda f=preprocess, i=image: f(i), calls, warmup
                )
            fast, slow = outputs["fast"], outputs["slow"]
            if fast.shape != slow.shape or tuple(fast.shape) != (3, px, px):
                raise RuntimeError(f"pixel values differ in shape: {tuple(fast.shape)} vs {tuple(slow.shape)}")
            diff = (fast.float() - slow.float()).abs()
            row["max_abs_diff"], row["mean_abs_diff"] = float(diff.max()), float(diff.mean())
            row["dtype"] = f"{fast.dtype} / {slow.dtype}"
            log(f"  {px} px, {wh[0]}x{wh[1]}: fast {row['fast_ms']:.2f} ms, slow {row['slow_ms']:.2f} ms")
            rows.append(row)
    return rows, classes


def table(rows: list[dict]) -> str:
    lines = [
        "| processor size | JPEG → decoded as the library does | decode ms | fast ms/image | slow ms/image "
        "| slow / fast | faster | max abs diff | mean abs diff |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        ratio = r["slow_ms"] / r["fast_ms"]
        faster = "fast" if r["fast_ms"] < r["slow_ms"] else "slow"
        lines.append(
            f"| {r['px']}x{r['px']} | {r['file'][0]}x{r['file'][1]} → {r['decoded'][0]}x{r['decoded'][1]} "
            f"| {r['decode_ms']:.2f} | {r['fast_ms']:.2f} | {r['slow_ms']:.2f} | {ratio:.2f} | {faster} "
            f"| {r['max_abs_diff']:.4f} | {r['mean_abs_diff']:.5f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = report.parser("python -m benchmarks.preprocess", __doc__)
    p.add_argument("--calls", type=int, default=50, help="timed calls per cell (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls first (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, as in loader workers)")
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "out" / "preprocess"))
    report.add_output_options(p)
    args = p.parse_args(argv)
    import os

    import torch

    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    rows, classes = run(Path(args.workdir), args.calls, args.warmup)
    threads = torch.get_num_threads()
    lines = [
        "## Image preprocessing per image: torchvision (fast) vs PIL (slow) backend",
        "",
        f"`python -m benchmarks.preprocess`, {args.calls} calls after {args.warmup} warm-up, torch threads {threads}. "
        f"{report.conditions(load)}",
        "",
        table(rows),
        "",
        "Times are medians. Backends (Florence2Processor.from_pretrained(path, backend=...); "
        "use_fast=True/False gives the same classes):",
        "",
        *[f"- {name}: `{cls}`" for name, cls in classes.items()],
        "",
        "A checkpoint converted from the original format loads the slow (PIL) one: its pixel values are the "
        "original processor's exactly, and the fast one's differ by up to the max abs diff above.",
    ]
    report.publish(lines, args.output, "preprocess")
    return 0


if __name__ == "__main__":
    sys.exit(main())

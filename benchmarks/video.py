"""Video frames labelled per second against the same frames as image files, and memory over a long video.

python -m benchmarks.video                  # 300 frames side by side, then a 2,000-frame memory run
python -m benchmarks.video --frames 60 --memory-frames 200   # a quick look

Both sides run ``label_samples`` with the tiny random model and a fixed generation length on the
same frames: once as a video dataset's frames view (what ``label_samples`` on a video labels), once as
an image dataset of the very files FiftyOne sampled. Sampling the frames (ffmpeg) is timed apart.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from support import mongod

from . import report

ROOT = Path(__file__).resolve().parents[1]


def write_video(path: Path, frames: int, size=(320, 240), fps: int = 25) -> str:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, i, axis=1))
    writer.release()
    return str(path)


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def main(argv: list[str] | None = None) -> int:
    p = report.parser("python -m benchmarks.video", __doc__)
    p.add_argument("--frames", type=int, default=300, help="frames timed side by side (default 300)")
    p.add_argument("--memory-frames", type=int, default=2000, help="frames of the memory run (default 2000)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per side (default 2)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=8, help="fixed generated length (default 8)")
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "out" / "video"))
    report.add_output_options(p)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    work = Path(args.workdir)
    mongod.isolate(work / "mongod")

    import fiftyone as fo
    import torch

    from fiftyone_florence2 import load_model
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint
    from fiftyone_florence2.runs.labelling import label_samples

    torch.set_num_threads(1)
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = build_random_checkpoint(work / "tiny", "tiny")
    fixed = {"min_new_tokens": args.new_tokens, "max_new_tokens": args.new_tokens}
    model = load_model("caption", model=str(checkpoint), num_beams=1, batch_size=args.batch_size,
                       generate_kwargs=fixed)  # fmt: skip

    def video_dataset(frames: int, name: str):
        dataset = fo.Dataset()
        dataset.add_sample(fo.Sample(filepath=write_video(work / f"{name}.mp4", frames)))
        dataset.compute_metadata()
        start = time.perf_counter()
        view = dataset.to_frames(sample_frames=True, output_dir=str(work / f"{name}-frames"))
        return dataset, view, time.perf_counter() - start

    _, frames, sampling = video_dataset(args.frames, "side-by-side")
    images = fo.Dataset()
    images.add_samples([fo.Sample(filepath=path) for path in frames.values("filepath")])
    seconds: dict[str, list[float]] = {"frames view": [], "image files": []}
    for _ in range(args.rounds):
        for name, samples in (("frames view", frames), ("image files", images)):
            summary = label_samples(samples, model, "cap", overwrite=True, progress=False)
            assert summary.labelled == args.frames, summary
            seconds[name].append(summary.seconds)
    rates = {name: args.frames / statistics.median(values) for name, values in seconds.items()}

    _, long_frames, long_sampling = video_dataset(args.memory_frames, "memory")
    readings: list[float] = []
    label_samples(long_frames, model, "cap", progress=lambda done, total: readings.append(rss_mib()))
    warm = readings[max(1, len(readings) // 4)]
    lines = [
        "## Video: frames labelled per second, and memory over a long video",
        "",
        f"`python -m benchmarks.video --frames {args.frames} --memory-frames {args.memory_frames}`; tiny random "
        f"model, caption, {args.new_tokens} new tokens, batch {args.batch_size}, one torch thread, 320x240 frames. "
        f"{report.conditions(load)}",
        "",
        "| measure | result |",
        "|---|---|",
        f"| frames view of a video (`label_samples`) | {rates['frames view']:.1f} frames/s |",
        f"| the same frames as image files | {rates['image files']:.1f} images/s |",
        f"| frames / images | {rates['frames view'] / rates['image files']:.2f}x (target: within 10%) |",
        f"| sampling {args.frames} frames to images (ffmpeg, once) | {sampling:.1f} s |",
        f"| memory over {args.memory_frames} frames (sampling took {long_sampling:.1f} s) | "
        f"{warm:.0f} -> {readings[-1]:.0f} MiB RSS after the first quarter ({readings[-1] - warm:+.0f} MiB) |",
    ]
    report.publish(lines, args.output, "video")
    return 0


if __name__ == "__main__":
    sys.exit(main())

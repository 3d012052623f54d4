"""The measurements: contenders timed side by side on the same images, writes, memory over a long run.

Side by side means: the images are cut into chunks, and every contender runs
on a chunk before the next chunk starts, in an order that rotates from chunk
to chunk. A ratio is computed per chunk, so that a burst of load from other
processes hits both sides of a comparison rather than one.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch
from PIL import Image, ImageOps

from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.engine.runner import Florence2Runner
from fiftyone_florence2.runs.batching import Outcome
from fiftyone_florence2.runs.labelling import label_samples
from fiftyone_florence2.runs.model import Florence2Model, Florence2ModelConfig
from support.images import write_images

from .reference import per_sample_approach, plain_generate, sync
from .workload import Settings, fixed_length, make_dataset

MIB = 1024 * 1024


@dataclass
class Timed:
    """Wall-clock and process CPU seconds of one contender on one chunk, with our runner's stages."""

    wall: float
    cpu: float
    stages: dict[str, float] = field(default_factory=dict)
    rss_mib: float = 0.0  # resident memory right after the run


@dataclass
class Contender:
    """One way of labelling a chunk of samples: ``run(view, images)``; ``runner`` is read for stages."""

    name: str
    run: Callable[[object, list[Image.Image]], object]
    runner: Florence2Runner | None = None


def _stage_snapshot(runner: Florence2Runner | None) -> dict[str, float]:
    if runner is None:
        return {}
    t = runner.timings
    return {"vision": t.vision, "generate": t.generate, "score": t.score}


def time_once(contender: Contender, view, images: list[Image.Image]) -> Timed:
    """Runs a contender once and times it; garbage is collected first, outside the timing."""
    gc.collect()
    before = _stage_snapshot(contender.runner)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    contender.run(view, images)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    after = _stage_snapshot(contender.runner)
    rss = psutil.Process().memory_info().rss / MIB
    return Timed(wall, cpu, {k: after[k] - before[k] for k in after}, rss)


def side_by_side(contenders: list[Contender], chunks: list[tuple[object, list[Image.Image]]], log=print):
    """Times every contender on every chunk, rotating the order; returns ``{name: [Timed per chunk]}``."""
    results: dict[str, list[Timed]] = {c.name: [] for c in contenders}
    for k, (view, images) in enumerate(chunks):
        order = contenders[k % len(contenders) :] + contenders[: k % len(contenders)]
        for contender in order:
            timed = time_once(contender, view, images)
            results[contender.name].append(timed)
            log(f"  chunk {k + 1}/{len(chunks)} {contender.name:<12} {timed.wall:8.2f} s")
    return results


def ratio_summary(numerator: list[Timed], denominator: list[Timed]) -> dict:
    """Per-chunk ratios of wall time, their median (the headline) and the ratio of totals."""
    per_chunk = [a.wall / b.wall for a, b in zip(numerator, denominator)]
    total_a, total_b = sum(t.wall for t in numerator), sum(t.wall for t in denominator)
    return {
        "median": statistics.median(per_chunk),
        "per_chunk": per_chunk,
        "total_ratio": total_a / total_b,
        "cpu_ratio": sum(t.cpu for t in numerator) / sum(t.cpu for t in denominator),
        "numerator_s": total_a,
        "denominator_s": total_b,
    }


def upright_images(paths: list[str]) -> list[Image.Image]:
    """Decoded RGB images, for the contenders that start from images in memory."""
    images = []
    for path in paths:
        with Image.open(path) as file:
            images.append(ImageOps.exif_transpose(file).convert("RGB"))
    return images


def model_class() -> type[Florence2Model]:
    """The class ``load_model`` returns: FiftyOne's data loader feeds it."""
    return Florence2Model


def model_for(runner: Florence2Runner, settings: Settings, task, beams: int | None = None) -> Florence2Model:
    """Our FiftyOne model, of the class ``load_model`` returns, on a shared runner, with the length fixed."""
    config = Florence2ModelConfig(
        {
            "task": task,
            "model": str(runner.checkpoint),
            "batch_size": settings.batch_size,
            "num_beams": settings.beams if beams is None else beams,
            "device": str(runner.device),
            "dtype": str(runner.dtype).removeprefix("torch."),
            "generate_kwargs": fixed_length(settings.new_tokens),
        }
    )
    return model_class()(config, runner=runner)


def speed_contenders(settings: Settings, runner: Florence2Runner, other: Florence2Runner | None) -> list[Contender]:
    """Plain generate, our apply_model, the per-sample approach, one multi-task run, separate runs."""
    token = get_task(settings.task).token
    ours = model_for(runner, settings, settings.task)
    multi = model_for(runner, settings, list(settings.tasks))
    singles = [model_for(runner, settings, task) for task in settings.tasks]
    size = settings.batch_size

    def generate(view, images):
        for lo in range(0, len(images), size):
            plain_generate(runner, images[lo : lo + size], token, settings.beams, settings.new_tokens)

    def apply(model, field_name):
        def run(view, images):
            view.apply_model(model, label_field=field_name, batch_size=size, progress=False)
            if model.failures:
                raise RuntimeError(f"{field_name}: samples failed: {model.failures}")

        return run

    def separate(view, images):
        for task, model in zip(settings.tasks, singles):
            apply(model, f"bench_single_{task}")(view, images)

    def baseline(view, images):
        per_sample_approach(view, runner, token, "bench_baseline", settings.baseline_beams, settings.new_tokens)

    contenders = [
        Contender("generate", generate),
        Contender("ours", apply(ours, "bench_ours"), runner),
        Contender("baseline", baseline),
        Contender("multi", apply(multi, "bench_multi"), runner),
        Contender("separate", separate, runner),
    ]
    if other is not None:
        other_model = model_for(other, settings, settings.task)
        contenders.append(Contender("ours_dtype", apply(other_model, "bench_ours_dtype"), other))
    return contenders


def speed(settings: Settings, runner: Florence2Runner, other: Florence2Runner | None, log=print) -> dict:
    """All timed comparisons on the same images: see :func:`side_by_side`."""
    paths = write_images(os.path.join(settings.workdir, "images"), settings.images)
    dataset = make_dataset(paths)
    try:
        ids = dataset.values("id")
        images = upright_images(paths)
        contenders = speed_contenders(settings, runner, other)
        if settings.warmup:
            log("warm-up on one image")
            side_by_side(contenders, [(dataset.select(ids[:1]), images[:1])], log=lambda *_: None)
        step = settings.chunk_images
        chunks = [
            (dataset.select(ids[lo : lo + step], ordered=True), images[lo : lo + step])
            for lo in range(0, len(ids), step)
        ]
        results = side_by_side(contenders, chunks, log=log)
        labelled = {name: dataset.count(name) for name in ("bench_ours", "bench_baseline")}
    finally:
        dataset.delete()
    summary = {
        "images": len(paths),
        "chunks": len(chunks),
        "runs": results,
        "labelled": labelled,
        "e2e": ratio_summary(results["ours"], results["generate"]),
        "multitask": ratio_summary(results["multi"], results["separate"]),
        "baseline": ratio_summary(results["baseline"], results["ours"]),
    }
    if other is not None:
        summary["dtype"] = ratio_summary(results["ours"], results["ours_dtype"])
    return summary


class _Precomputed:
    """Hands out labels built beforehand instead of running the model, so that only writes are timed."""

    labels: Iterator = iter(())

    def label_items(self, items, embed: bool = False):
        return [Outcome(labels={self.config.tasks[0].name: next(self.labels)}) for _ in items]


def _detections(count: int, boxes: int) -> list:
    import fiftyone.core.labels as fol

    return [
        fol.Detections(
            detections=[
                fol.Detection(label=f"object {j}", bounding_box=[0.01 * j, 0.02, 0.1, 0.2], confidence=0.5)
                for j in range(boxes)
            ]
        )
        for _ in range(count)
    ]


def writes(settings: Settings, runner: Florence2Runner, log=print) -> dict:
    """Labels written per second by ``label_samples``, by ``apply_model`` and by per-sample saves.

    The labels are built before the clock starts; what is timed is reading the
    (tiny) images, FiftyOne's loop and the database writes.
    """
    paths = write_images(os.path.join(settings.workdir, "tiny-images"), 20, sizes=[(64, 48)], prefix="tiny")
    count, boxes, size = settings.write_samples, settings.boxes_per_label, settings.write_batch_size
    dataset = make_dataset([paths[i % len(paths)] for i in range(count)])
    precomputed = type("PrecomputedModel", (_Precomputed, model_class()), {})
    model = precomputed(model_for(runner, settings, "detection").config, runner=runner)

    def per_sample():
        for sample in dataset.iter_samples():
            sample["w_save"] = next(model.labels)
            sample.save()

    paths_timed = {
        "label_samples": lambda: label_samples(dataset, model, "w_engine", batch_size=size, progress=False),
        "apply_model": lambda: dataset.apply_model(model, label_field="w_apply", batch_size=size, progress=False),
        "sample.save": per_sample,
    }
    out = {}
    try:
        for name, run in paths_timed.items():
            model.labels = iter(_detections(count, boxes))
            gc.collect()
            start = time.perf_counter()
            run()
            seconds = time.perf_counter() - start
            out[name] = {"seconds": seconds, "samples_per_s": count / seconds, "labels_per_s": count * boxes / seconds}
            log(f"  writes {name:<14} {out[name]['labels_per_s']:10.0f} labels/s")
        written = [dataset.count(f"{f}.detections") for f in ("w_engine", "w_apply", "w_save")]
        if written != [count * boxes] * 3:
            raise RuntimeError(f"write benchmark wrote {written} labels, expected {count * boxes} each")
    finally:
        dataset.delete()
    return {"samples": count, "boxes_per_label": boxes, "batch_size": size, "paths": out}


def memory(settings: Settings, runner: Florence2Runner, log=print) -> dict:
    """Resident memory after every batch of one long ``apply_model`` run."""
    paths = write_images(
        os.path.join(settings.workdir, "memory-images"), 50, sizes=[(320, 240), (240, 320)], prefix="mem"
    )
    count = settings.memory_images
    dataset = make_dataset([paths[i % len(paths)] for i in range(count)])
    model = model_for(runner, settings, settings.task)
    process = psutil.Process()
    rss: list[float] = []
    gpu: list[float] = []
    predict_all = model.predict_all

    def recording(*args, **kwargs):
        out = predict_all(*args, **kwargs)
        rss.append(process.memory_info().rss / MIB)
        if runner.device.type == "cuda":
            gpu.append(torch.cuda.memory_allocated(runner.device) / MIB)
        return out

    model.predict_all = recording
    size = settings.memory_batch_size
    start = time.perf_counter()
    try:
        dataset.apply_model(model, label_field="mem", batch_size=size, progress=False)
    finally:
        dataset.delete()
    seconds = time.perf_counter() - start
    summary = memory_summary(rss, size)
    summary.update({"images": count, "batch_size": size, "seconds": seconds, "rss_mib": rss, "gpu_mib": gpu})
    if gpu:
        summary["gpu_growth_mib"] = gpu[-1] - gpu[min(len(gpu) - 1, len(gpu) // 4)]
    log(f"  memory {count} images: growth after warm-up {summary['growth_mib']:+.1f} MiB")
    return summary


def memory_summary(rss: list[float], batch_size: int) -> dict:
    """Growth of resident memory after the first quarter of the run (warm-up), and its slope."""
    if len(rss) < 4:
        return {"first_mib": rss[0] if rss else 0.0, "last_mib": rss[-1] if rss else 0.0, "growth_mib": 0.0,
                "slope_mib_per_1000": 0.0, "peak_mib": max(rss, default=0.0)}  # fmt: skip
    warm = len(rss) // 4
    tail = rss[warm:]
    slope = float(np.polyfit(np.arange(len(tail)) * batch_size, tail, 1)[0]) * 1000
    return {
        "first_mib": rss[0],
        "warm_mib": rss[warm],
        "last_mib": rss[-1],
        "growth_mib": statistics.median(rss[-max(1, len(rss) // 10) :])
        - statistics.median(rss[warm : warm + max(1, len(rss) // 10)]),
        "slope_mib_per_1000": slope,
        "peak_mib": max(rss),
    }


def load_runner(checkpoint, settings: Settings, dtype: str | None = None) -> Florence2Runner:
    runner = Florence2Runner(str(checkpoint), device=settings.device, dtype=dtype or settings.dtype)
    sync(runner.device)
    return runner

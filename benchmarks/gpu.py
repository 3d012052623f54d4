"""Florence-2 throughput on a GPU: images per second, our runner against the model's plain ``generate``.

python -m benchmarks.gpu --output-dir OUT               # base and large, the full grid (about 5 minutes on an H100)
python -m benchmarks.gpu --quick --device cpu            # a seconds-long smoke run of every code path

Random weights at Florence-2-base's and -large's dimensions (vocabulary padded
to the real 51,328 entries), a fixed number of new tokens, synthetic 768x768
images preprocessed once. For each shape, dtype, number of beams, task and
batch size it times:

- ``runner``: what labelling runs per batch: one vision pass, then
  ``Florence2Runner.generate`` (encoder once, shared cross-attention cache)
  and the confidence pass that scores every generated token;
- ``generate``: ``model.generate(pixel_values=..., input_ids=...)`` on the same
  inputs, and nothing else (no confidences).

It needs torch, transformers, numpy and pillow, and never imports FiftyOne.
Figures go to ``OUTPUT_DIR/gpu.md`` and ``gpu.json``; ``--write-benchmarks``
also puts the table into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.engine.random_checkpoint import random_model
from fiftyone_florence2.engine.runner import Florence2Runner
from support.images import synthetic_image

REAL_VOCABULARY = 51328  # Florence-2's 51,289 tokens and <image>, padded to a multiple of 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
MARKERS = ("<!-- gpu-benchmark -->", "<!-- /gpu-benchmark -->")
FULL = {"shapes": "base,large", "batch_sizes": "1,2,4,8,16,32,64", "dtypes": "bf16,fp16,fp32", "beams": "1,3",
        "tasks": "caption,detection", "new_tokens": 32, "min_seconds": 1.0, "max_reps": 5}  # fmt: skip
QUICK = {"shapes": "tiny", "batch_sizes": "1,2", "dtypes": "fp32", "beams": "1,3", "tasks": "caption,detection",
         "new_tokens": 4, "min_seconds": 0.0, "max_reps": 1}  # fmt: skip


@dataclass
class Row:
    """One timed configuration; ``images_per_s`` is None when it ran out of memory or time."""

    shape: str
    dtype: str
    beams: int
    task: str
    batch: int
    path: str
    images_per_s: float | None = None
    seconds_per_batch: float | None = None
    note: str = ""


@dataclass
class Report:
    device: str
    settings: dict[str, Any]
    versions: dict[str, str]
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


class _OnlyTokenizerIds:
    """A logits processor that keeps generation inside the tokenizer's vocabulary (the padded rows of a
    random model's output layer are computed, as in a real one, but never chosen)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.size :] = -float("inf")
        return scores


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(run, device: torch.device, min_seconds: float, max_reps: int) -> float:
    """The median seconds of ``run()`` after one warm-up call, repeated until ``min_seconds`` have passed."""
    run()
    _sync(device)
    times: list[float] = []
    while len(times) < max_reps and (len(times) < 2 or sum(times) < min_seconds):
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _contenders(runner: Florence2Runner, pixels: torch.Tensor, task, beams: int, new_tokens: int):
    """The two ways of labelling one batch of preprocessed images, as zero-argument callables."""
    question = build_question(task)
    batch = len(pixels)
    keep = _OnlyTokenizerIds(len(runner.tokenizer))
    fixed = {"min_new_tokens": new_tokens, "logits_processor": [keep]}

    @torch.inference_mode()
    def ours():
        features = runner.image_features(pixels)
        runner.generate(task, features, [question] * batch, list(range(batch)), num_beams=beams,
                        max_new_tokens=new_tokens, generate_kwargs=fixed)  # fmt: skip

    text = [f"{runner._image_prefix}{runner.tokenizer.bos_token}{question}{runner.tokenizer.eos_token}"] * batch
    encoded = runner.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(runner.device)

    @torch.inference_mode()
    def plain():
        runner.model.generate(
            pixel_values=pixels,
            input_ids=encoded["input_ids"],
            attention_mask=encoded["attention_mask"],
            num_beams=beams,
            do_sample=False,
            max_new_tokens=new_tokens,
            **fixed,
        )

    return {"runner": ours, "generate": plain}


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure(args: argparse.Namespace, log=print) -> Report:
    """Times every configuration of ``args``, smallest batches first, within ``args.budget_s``."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "python": platform.python_version()}  # fmt: skip
    report = Report(device=f"{device.type}: {name}", settings=vars(args).copy(), versions=versions)
    started = time.monotonic()
    images = [synthetic_image((768, 768), seed) for seed in range(8)]
    for shape in args.shapes:
        base, processor = random_model(shape, vocab_size=None if shape == "tiny" else REAL_VOCABULARY)
        for dtype_name in args.dtypes:
            if dtype_name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
                continue
            model = base.to(device=device, dtype=DTYPES[dtype_name])  # in place: one copy of the weights
            runner = Florence2Runner.from_loaded(model, processor, f"random-{shape}")
            runner.model.generation_config.no_repeat_ngram_size = 0
            out_of_memory: set[tuple[int, str, str]] = set()
            for batch in args.batch_sizes:
                pixels = torch.stack([runner.preprocess(images[i % len(images)]) for i in range(batch)])
                pixels = pixels.to(device, runner.dtype)
                for beams in args.beams:
                    for task_name in args.tasks:
                        task = get_task(task_name)
                        for path, run in _contenders(runner, pixels, task, beams, args.new_tokens).items():
                            row = Row(shape, dtype_name, beams, task_name, batch, path)
                            report.rows.append(row)
                            if time.monotonic() - started > args.budget_s:
                                row.note = "not run: time budget spent"
                                continue
                            if (beams, task_name, path) in out_of_memory:
                                row.note = "out of memory at a smaller batch"
                                continue
                            try:
                                seconds = _timed(run, device, args.min_seconds, args.max_reps)
                            except (RuntimeError, torch.cuda.OutOfMemoryError) as error:
                                if not _is_oom(error):
                                    raise
                                out_of_memory.add((beams, task_name, path))
                                row.note = "out of memory"
                                torch.cuda.empty_cache() if device.type == "cuda" else None
                                continue
                            row.seconds_per_batch = seconds
                            row.images_per_s = batch / seconds
                            log(f"{shape} {dtype_name} beams={beams} {task_name} batch={batch} {path}: "
                                f"{row.images_per_s:.2f} images/s")  # fmt: skip
                del pixels
        del base, model, runner  # the next shape needs the memory
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report.seconds = time.monotonic() - started
    return report


def render(report: Report) -> str:
    """The report as markdown: one table per shape and dtype, batch sizes across, runner vs generate."""
    lines = [
        MARKERS[0],
        f"Device: {report.device}; {', '.join(f'{k} {v}' for k, v in report.versions.items())}; "
        f"random weights, {report.settings['new_tokens']} new tokens per answer, SDPA attention, "
        f"768x768 images preprocessed once; {report.seconds:.0f} s in all.",
        "",
    ]
    batches = sorted({row.batch for row in report.rows})
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in report.rows:
        groups.setdefault((row.shape, row.dtype), []).append(row)
    for (shape, dtype), rows in groups.items():
        lines += [f"**{shape}, {dtype}** (images/s; runner / plain generate)", ""]
        lines.append("| task | beams | " + " | ".join(f"batch {b}" for b in batches) + " |")
        lines.append("|---|---|" + "---|" * len(batches))
        for task, beams in dict.fromkeys((row.task, row.beams) for row in rows):
            cells = []
            for batch in batches:
                pair = {r.path: r for r in rows if (r.task, r.beams, r.batch) == (task, beams, batch)}
                cells.append(" / ".join(_cell(pair.get(path)) for path in ("runner", "generate")))
            lines.append(f"| {task} | {beams} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(MARKERS[1])
    return "\n".join(lines)


def _cell(row: Row | None) -> str:
    if row is None:
        return "-"
    if row.images_per_s is None:
        return "OOM" if "memory" in row.note else "n/a"
    return f"{row.images_per_s:.1f}"


def write_benchmarks(markdown: str, path: Path) -> None:
    """Replaces the GPU section of ``path`` (between its markers), or appends one."""
    text = path.read_text() if path.exists() else ""
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        tail = rest.split(MARKERS[1], 1)[1]
        text = head + markdown + tail
    else:
        text = text.rstrip() + "\n\n## GPU throughput (`python -m benchmarks.gpu`)\n\n" + markdown + "\n"
    path.write_text(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the tiny shape, batches 1-2, 4 tokens: a smoke run")
    p.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda when there is one)")
    p.add_argument("--shapes", help="comma-separated: base, large, tiny (default base,large)")
    p.add_argument("--batch-sizes", help="comma-separated (default 1,2,4,8,16,32,64)")
    p.add_argument("--dtypes", help="comma-separated: bf16, fp16, fp32 (default all three)")
    p.add_argument("--beams", help="comma-separated beam counts (default 1,3)")
    p.add_argument("--tasks", help="comma-separated task names (default caption,detection)")
    p.add_argument("--new-tokens", type=int, help="tokens generated per answer (default 32)")
    p.add_argument("--min-seconds", type=float, help="time each configuration at least this long (default 1; quick 0)")
    p.add_argument("--max-reps", type=int, help="at most this many timed calls per configuration (default 5; quick 1)")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop timing after this many seconds")
    p.add_argument("--output-dir", default="benchmarks/out/gpu", help="where gpu.md and gpu.json go")
    p.add_argument("--write-benchmarks", action="store_true", help="also put the table into BENCHMARKS.md")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key in ("shapes", "batch_sizes", "dtypes", "beams", "tasks"):
        raw = getattr(args, key) or defaults[key]
        items = [item.strip() for item in raw.split(",") if item.strip()]
        setattr(args, key, [int(item) for item in items] if key in ("batch_sizes", "beams") else items)
    for key in ("new_tokens", "min_seconds", "max_reps"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        p.error(f"unknown dtype {unknown[0]!r}; choose from {', '.join(DTYPES)}")
    return args


def main(argv: list[str] | None = None) -> Report:
    args = parse_args(argv)
    report = measure(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = render(report)
    (out / "gpu.md").write_text(markdown + "\n")
    (out / "gpu.json").write_text(json.dumps({**asdict(report)}, indent=1, default=str))
    if args.write_benchmarks:
        write_benchmarks(markdown, Path("BENCHMARKS.md"))
    print(markdown)
    return report


if __name__ == "__main__":
    main()

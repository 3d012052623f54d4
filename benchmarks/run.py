"""Runs the benchmark suite and prints a table and its BENCHMARKS.md section (written there with --write-benchmarks).

python -m benchmarks.run            # full: Florence-2-base's dimensions, random weights
python -m benchmarks.run --quick    # the tiny random model, in about a minute
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import report
from .workload import Settings

# One thread for the tiny model: its operations are so small that two threads mostly wait for each
# other, and wait much longer when other processes share the cores.
QUICK = {"shape": "tiny", "threads": 1, "images": 16, "batch_size": 4, "new_tokens": 16, "write_samples": 1000}


def parse_args(argv: list[str] | None) -> Settings:
    p = report.parser("python -m benchmarks.run", __doc__)
    p.add_argument("--quick", action="store_true", help="the tiny random model and small sizes")
    p.add_argument("--shape", choices=["tiny", "base"], help="random-weight shape (default: base; quick: tiny)")
    p.add_argument("--checkpoint", help="a real local checkpoint (or Hub id) instead of random weights")
    p.add_argument("--device", help="cpu, cuda, cuda:N, mps (default: the best available)")
    p.add_argument("--dtype", help="float32, bfloat16, float16 (default: the library's choice for the device)")
    p.add_argument("--compare-dtype", help="also time ours with this dtype (default on CPUs with bf16: bfloat16)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--images", type=int, help="images timed side by side (default 20; quick: 16)")
    p.add_argument("--batch-size", type=int, help="images per generate call (default 2; quick: 4)")
    p.add_argument("--chunk-images", type=int, help="images per side-by-side unit (default: the batch size)")
    p.add_argument("--new-tokens", type=int, help="fixed generated length (default 32; quick: 16)")
    p.add_argument("--beams", type=int, help="beams for ours and the plain generate (default 3)")
    p.add_argument("--task", help="the single task timed (default caption)")
    p.add_argument("--tasks", help="the three tasks of the multi-task run (default caption,detection,ocr)")
    p.add_argument("--memory-images", type=int, help="images in the long memory run (default 2000)")
    p.add_argument("--write-samples", type=int, help="samples in the write benchmark (default 2000; quick: 1000)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", default=None)
    p.add_argument("--workdir", help="checkpoints, images, database and raw results (default benchmarks/out)")
    report.add_output_options(p)
    p.add_argument("--note", action="append", default=[], help="a line added to the report (repeatable)")
    p.add_argument("--from-results", help="re-render the report from a results JSON of an earlier run; no timing")
    args = p.parse_args(argv)
    values = {"quick": args.quick, **(QUICK if args.quick else {})}
    for key in ("shape", "checkpoint", "device", "dtype", "compare_dtype", "threads", "images", "batch_size",
                "chunk_images", "new_tokens", "beams", "task", "memory_images", "write_samples", "warmup",
                "workdir", "output"):  # fmt: skip
        value = getattr(args, key)
        if value is not None:
            values[key] = value
    if args.tasks:
        values["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if "chunk_images" not in values:
        values["chunk_images"] = values.get("batch_size", Settings.batch_size)
    settings = Settings(**values)
    settings.extra["notes"] = args.note
    settings.extra["from_results"] = args.from_results
    shown = _without_notes(sys.argv[1:] if argv is None else argv)
    settings.command = " ".join(["python -m benchmarks.run", shlex.join(shown)]).strip()
    return settings


def _without_notes(argv: list[str]) -> list[str]:
    """The arguments as typed, less ``--note`` texts (they are printed in the report anyway)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            shown.append(arg)
    return shown


def prepare_environment(settings: Settings) -> None:
    """An isolated FiftyOne database and quiet libraries; must run before fiftyone is imported."""
    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if "FIFTYONE_DATABASE_DIR" not in os.environ and "FIFTYONE_DATABASE_URI" not in os.environ:
        os.environ["FIFTYONE_DATABASE_DIR"] = str((workdir / "db").resolve())
    for key, value in {
        "FIFTYONE_DO_NOT_TRACK": "true",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(key, value)


def run(settings: Settings, log=print) -> dict:
    """Runs every measurement and returns the raw results."""
    import torch
    from transformers.utils import logging as hf_logging

    from . import measures
    from .report import machine, now, versions
    from .workload import checkpoint_path

    hf_logging.set_verbosity_error()
    initial_threads = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    load = [os.getloadavg()]
    stamp = {"date": now(), "machine": machine(), "versions": versions()}
    checkpoint = settings.checkpoint or checkpoint_path(settings.workdir, settings.shape)
    # The write and memory runs use the tiny model: they time the pipeline, not the network.
    tiny = checkpoint if settings.shape == "tiny" else checkpoint_path(settings.workdir, "tiny")
    runner = measures.load_runner(checkpoint, settings)
    compare = settings.compare_dtype
    if compare is None and not settings.quick and runner.device.type == "cpu" and _cpu_bf16():
        compare = settings.compare_dtype = "bfloat16"
    other = measures.load_runner(checkpoint, settings, dtype=compare) if compare and compare != "none" else None
    results = {**stamp, "device": str(runner.device), "dtype": str(runner.dtype), "attention": _attention(runner)}
    results["threads"] = torch.get_num_threads()
    results["apply_model_path"] = "FiftyOne's data loader"
    if other is not None:
        results["compare_dtype"] = str(other.dtype)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    log(f"speed: {settings.images} images, chunks of {settings.chunk_images}, batch {settings.batch_size}")
    results["speed"] = measures.speed(settings, runner, other, log=log)
    results["cpu_utilisation"] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    del other
    small = runner if tiny == checkpoint else measures.load_runner(tiny, settings, dtype=settings.dtype)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model: see QUICK
    try:
        log("writes")
        results["writes"] = measures.writes(settings, small, log=log)
        log("memory")
        results["memory"] = measures.memory(settings, small, log=log)
    finally:
        torch.set_num_threads(threads)
    load.append(os.getloadavg())
    results["load"] = load
    results["checkpoint"] = str(checkpoint)
    torch.set_num_threads(initial_threads)
    return results


def _cpu_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _attention(runner) -> str:
    config = runner.model.config
    parts = {"vision": config.vision_config, "text": config.text_config}
    return ", ".join(f"{name} {getattr(c, '_attn_implementation', '?')}" for name, c in parts.items())


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    prepare_environment(settings)
    from .report import write_section
    from .summary import render

    if settings.extra["from_results"]:
        settings, results = load_results(settings.extra["from_results"], output=settings.output)
    else:
        started = time.time()
        results = run(settings)
        results["seconds"] = time.time() - started
    table, key, section = render(settings, results)
    print()
    print(table)
    raw = Path(settings.workdir) / f"results-{key}.json"
    if not settings.extra.get("from_results"):
        raw.write_text(json.dumps({"settings": settings.as_dict(), "results": results}, indent=1, default=_plain))
    if not settings.extra.get("from_results"):
        print(f"\nRaw figures: {raw}")
    if settings.output:  # BENCHMARKS.md only when asked (--write-benchmarks)
        write_section(settings.output, key, section)
        print(f"Wrote {settings.output} (section {key})")
    else:
        print(f"\n{section}\n\n(printed only: --write-benchmarks puts this section into BENCHMARKS.md)")
    return 0


def load_results(path: str, output: str | None = None) -> tuple[Settings, dict]:
    """The settings and results of an earlier run, as :func:`run` returned them."""
    from .measures import Timed

    saved = json.loads(Path(path).read_text())
    values = saved["settings"]
    values["tasks"] = tuple(values["tasks"])
    settings = Settings(**values)
    settings.extra["from_results"] = path
    settings.output = output  # the earlier run's file is written again only when asked
    results = saved["results"]
    results["speed"]["runs"] = {
        name: [Timed(**timed) for timed in runs] for name, runs in results["speed"]["runs"].items()
    }
    return settings, results


def _plain(value):
    return vars(value) if hasattr(value, "__dict__") else str(value)


if __name__ == "__main__":
    raise SystemExit(main())

"""Training speed: samples per second and peak memory of ``train()``, full vs frozen vision vs LoRA.

python -m benchmarks.train_speed                                   # CPU: tiny, seeing and base shapes
python -m benchmarks.train_speed --shapes tiny --steps 2   # a quick look
python -m benchmarks.train_speed --device cuda --dtype bfloat16 --batch-size 16 --steps 20   # a GPU

Every run is a fresh process (so that its peak memory is its own) that trains a random-weight checkpoint
of the shape for ``--steps`` steps on synthetic images (64 px; the processor resizes them to the shape's
size). Samples per second are timed between logged steps (``train(on_progress=...)``; with one batch
of images an epoch, every step is logged) after ``--warmup`` steps, so that loading the model and the
first step's set-up do not count; no checkpoint is saved on the way. Peak memory is the process's peak
RSS (``resource``) and, on a GPU, torch's peak allocation.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import mongod

from . import report

ROOT = Path(__file__).resolve().parents[1]
TASK = "detection"
MODES = {"full": {}, "freeze_vision": {"freeze_vision": True}, "lora": {"lora": True}}


def parse_args(argv):
    p = report.parser("python -m benchmarks.train_speed", __doc__)
    p.add_argument("--shapes", default="tiny,seeing,base", help="random-checkpoint shapes (default all three)")
    p.add_argument("--modes", default=",".join(MODES), help=f"training modes (default {','.join(MODES)})")
    p.add_argument("--steps", type=int, default=4, help="timed steps per run (default 4)")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps (default 1, at least 1)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 16 on small shapes, 2 on base (CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", help="auto: bf16 mixed precision on GPUs that have it, fp32 on CPU")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    p.add_argument("--workdir", default=None, help="checkpoints and images (default: a temporary dir)")
    report.add_output_options(p)
    p.add_argument("--one", nargs=2, metavar=("SHAPE", "MODE"), help=argparse.SUPPRESS)  # a child run
    return p.parse_args(argv)


def batch_for(shape: str, args) -> int:
    if args.batch_size:
        return args.batch_size
    return 2 if shape == "base" and args.device == "cpu" else 16


def child(args) -> dict:
    """One shape and mode, in this process: two runs (warm-up, then warm-up + steps) and the peak memory."""
    import resource

    import torch

    import fiftyone_florence2 as ff2
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint
    from support import synthetic

    torch.set_num_threads(args.threads)
    shape, mode = args.one
    work = Path(args.workdir)
    checkpoint = work / f"checkpoint-{shape}"
    if not (checkpoint / "config.json").exists():
        build_random_checkpoint(checkpoint, shape)
    batch = batch_for(shape, args)
    dataset = synthetic.write_dataset(synthetic.generate("one", ["colour"] * batch, seed=1), work / f"images-{batch}")
    clock: dict[int, float] = {}
    ff2.train(dataset, task=TASK, output_dir=str(work / f"run-{shape}-{mode}"), model=str(checkpoint),
              max_steps=args.warmup + args.steps, batch_size=batch, learning_rate=1e-4, lr_schedule="constant",
              save_steps=10**6, device=args.device, dtype=args.dtype, overwrite=True, progress=False,
              on_progress=lambda entry: clock.setdefault(entry["step"], time.monotonic()), **MODES[mode])  # fmt: skip
    # One sample per image and a batch per epoch: every step is logged; time from the warm-up's last one.
    timed = clock[args.warmup + args.steps] - clock[args.warmup]
    out = {
        "shape": shape,
        "mode": mode,
        "batch": batch,
        "samples_per_second": args.steps * batch / timed,
        "seconds_per_step": timed / args.steps,
        "logged_steps": len(clock),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_child(shape: str, mode: str, args, argv: list[str]) -> dict:
    command = [sys.executable, "-m", "benchmarks.train_speed", *argv, "--workdir", args.workdir, "--one", shape, mode]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        return {"shape": shape, "mode": mode, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    gpu = any("peak_gpu_mib" in row for row in rows)
    headers = ["shape", "mode", "batch", "samples/s", "s/step", "peak RSS"] + (["peak GPU"] if gpu else [])
    cells = []
    for row in rows:
        if "error" in row:
            cells.append([row["shape"], row["mode"], "", "failed: " + row["error"], "", ""] + ([""] if gpu else []))
            continue
        cells.append([row["shape"], row["mode"], str(row["batch"]), f"{row['samples_per_second']:.2f}",
                      f"{row['seconds_per_step']:.3f}", f"{row['peak_rss_mib']:.0f} MiB"]
                     + ([f"{row.get('peak_gpu_mib', 0):.0f} MiB"] if gpu else []))  # fmt: skip
    return report.markdown_table(headers, cells)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1: the first step's end starts the clock.")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    if args.one:
        mongod.isolate(Path(args.workdir) / "mongod")  # a child started alone; normally the parent's URI
        print(json.dumps(child(args)))
        return 0
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="florence2-train-speed-")
    mongod.isolate(Path(args.workdir) / "mongod")
    load = os.getloadavg()[0]
    passed = [a for a in argv if a not in ("--output", args.output)]
    rows = [run_child(shape, mode, args, passed) for shape in args.shapes.split(",") for mode in args.modes.split(",")]
    where = args.device if args.device != "cpu" else f"CPU, {args.threads} torch thread(s)"
    lines = [
        f"## Training speed: full vs frozen vision vs LoRA ({args.device})",
        "",
        f"`python -m benchmarks.train_speed {' '.join(argv)}`: `train()` on random-weight checkpoints, "
        f"{TASK}, one box per image, {args.steps} timed steps after {args.warmup} warm-up step(s), dtype "
        f"{args.dtype}, {where}; each row a fresh process. {report.conditions(load)}",
        "",
        table(rows),
        "",
        "freeze_vision trains the text model only; lora trains rank-8 adapters (merged when saved). Peak RSS "
        "includes the interpreter, torch, FiftyOne and the model.",
    ]
    report.publish(lines, args.output, f"train-speed-{args.device.split(':')[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

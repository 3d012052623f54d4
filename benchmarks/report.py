"""The machine, the versions, the table printed to the terminal and the sections of ``BENCHMARKS.md``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

INTRO = """# Benchmarks

Produced by the benchmark suite in `benchmarks/`; every figure below was written by it, not by hand.

```bash
python -m benchmarks.run            # full: random weights with Florence-2-base's dimensions, CPU or GPU
python -m benchmarks.run --quick    # quick: the tiny random model (about a minute)
python -m benchmarks.run --device cuda --dtype bfloat16 --batch-size 16 --chunk-images 64 --images 256 --beams 1
```

`python -m benchmarks.run --help` lists every option (device, dtype, threads, images, batch size, new
tokens, beams, tasks, a real checkpoint with `--checkpoint`). A run prints its table and section; with
`--write-benchmarks` it also replaces its own section of this file (one per device and mode) and keeps the
others. Its raw figures go to `benchmarks/out/results-*.json`, and `--from-results` renders a section from
them again without timing anything.

How the figures are made:

- **Fixed length.** Every generation, ours and the references', makes exactly the same number of new
  tokens (`min_new_tokens = max_new_tokens`), so random weights time like real ones.
- **Side by side.** The images are cut into chunks; on each chunk every contender runs once, in an
  order that rotates from chunk to chunk, on the same model object (same weights, dtype and attention).
  A ratio is taken per chunk and the median is reported, so that load from other processes on the
  machine falls on both sides of a comparison. The ratio of the totals is shown too.
- **The model's own `generate`**: `processor(images=..., text=[token] * B)` and
  `model.generate(**inputs)` with the same beams and length, on images already decoded in memory.
  Nothing else.
- **Ours**: `dataset.apply_model(model, batch_size=B)` end to end on the chunk: reading the files,
  preprocessing, the vision tower, generation, the scoring pass for confidences, parsing, labels and the
  database writes. It can beat the plain `generate`: the runner computes each input's cross-attention
  keys and values once (not once per beam), and beam search does not copy them at every step.
- **Three tasks**: one `apply_model` with three tasks (vision features computed once per image, one field
  per task) against three `apply_model` runs of one task each.
- **Per-sample approach** (what existing FiftyOne Florence-2 integrations do): for each sample, read the
  image, `processor(text=token, images=image)`, `generate` with 3 beams for that one image,
  `batch_decode`, `post_process_generation`, convert to a FiftyOne label, `sample.save()`.
- **Labels written per second**: a model that returns precomputed `Detections` (no inference), so only
  reading the (tiny) files and writing to the database are timed; a label is one `Detection`.
- **Memory**: resident memory after every batch of one long `apply_model` run; growth is the change
  after the first quarter of the run (warm-up).
"""


@dataclass
class Row:
    measure: str
    ours: str
    reference: str
    ratio: str
    target: str
    result: str


def machine() -> dict[str, str]:
    """CPU model, cores, memory, GPU, and the load the machine was under."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    info = {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores" + (" (AVX-512 bf16)" if "avx512_bf16" in flags else ""),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "OS": platform.platform(),
    }
    return info


def versions() -> dict[str, str]:
    import fiftyone
    import torch
    import transformers

    import fiftyone_florence2

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fiftyone": fiftyone.__version__,
        "fiftyone-florence2": f"{fiftyone_florence2.__version__} ({git_commit()})",
    }


def git_commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fiftyone_florence2"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "no git"
    return commit + ("+local changes" if dirty else "")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def conditions(load_before: float) -> str:
    """The load the machine was under (before → now), its CPUs, the time and the commit: one sentence."""
    return (
        f"Load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; {now()}, "
        f"commit {git_commit()}."
    )


def text_table(rows: list[Row]) -> str:
    """A fixed-width table for the terminal."""
    header = Row("measure", "ours", "reference", "ratio", "target", "result")
    cells = [list(vars(r).values()) for r in [header, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def key_values(pairs: dict[str, str]) -> str:
    return markdown_table(["", ""], [[f"**{k}**", str(v)] for k, v in pairs.items()])


BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def isolated_work(workdir: str | Path | None, prefix: str, threads: int) -> Path:
    """The run's working folder (``workdir``, or a new temporary one named ``prefix...``) with a mongod of its
    own inside it, and ``threads`` torch threads (OpenMP's too, for the processes the run starts)."""
    import tempfile

    from support import mongod

    work = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    mongod.isolate(work / "mongod")
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    return work


def parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """A benchmark's argument parser whose ``--help`` shows its whole docstring (what it measures, examples)."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_output_options(p: argparse.ArgumentParser) -> None:
    """``--write-benchmarks`` and ``--output FILE``: without either, a run prints its figures and changes no file
    of the clone."""
    p.add_argument("--write-benchmarks", dest="output", action="store_const", const=str(BENCHMARKS_MD),
                   help="also write the section into the clone's BENCHMARKS.md (default: print only)")  # fmt: skip
    p.add_argument("--output", default=None, metavar="FILE", help="also write the section into this markdown file")


def publish(lines: list[str], output: str | Path | None, key: str) -> None:
    """Prints a standalone benchmark's section and, when ``output`` names a file, writes it there too."""
    print("\n".join(lines))
    if output:
        write_section(output, key, "\n".join(lines))
        print(f"Wrote {output} (section {key})")


def write_section(path: str | Path, key: str, body: str) -> None:
    """Puts ``body`` in the section ``key`` of the markdown file: in place where the section is, else at the end;
    everything else in the file stays as it is (a new file starts with the suite's introduction)."""
    path = Path(path)
    block = f"<!-- benchmark-run: {key} -->\n{body.strip()}\n<!-- /benchmark-run: {key} -->"
    old = path.read_text() if path.exists() else INTRO
    pattern = re.compile(
        rf"<!-- benchmark-run: {re.escape(key)} -->\n.*?\n<!-- /benchmark-run: {re.escape(key)} -->", re.S
    )
    new = pattern.sub(lambda _: block, old, count=1) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)

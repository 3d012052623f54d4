"""How tiles cost: the vision time against the grid (N x N tiles an image), and the merge's share of a run.

Tiled detection on large synthetic photos with a random-weight checkpoint. Every
tile is forced to answer the same grid of boxes (in its own coordinates), laid
out so that the boxes of neighbouring tiles meet in their overlap: the merge has
real repeats to merge, and every run generates the same number of tokens per tile.
Each image is loaded (decoded once, cropped, preprocessed) and then labelled by
the library's own batch path; the merge is timed where the labels call it.

python -m benchmarks.tiles                               # the tiny and base shapes, grids 1 to 4
python -m benchmarks.tiles --shapes tiny --grids 1,2 --images 1
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

from . import report

ROOT = Path(__file__).resolve().parents[1]
IMAGE_WH = (2000, 1500)
OVERLAP = 0.2
MERGE_SHARE_TARGET = 0.05


def box_grid(per_side: int, overlap: float = OVERLAP) -> str:
    """``per_side`` x ``per_side`` small boxes labelled ``obj``, spaced so that the boxes of one tile's right
    (or bottom) edge fall where its neighbour's left (or top) ones do."""
    step = (1 - overlap) / max(1, per_side - 1)
    starts = [0.02 + k * step for k in range(per_side)]
    bins = [(round(x * 1000), round(y * 1000)) for y in starts for x in starts]
    return "".join(f"obj<loc_{x}><loc_{y}><loc_{x + 60}><loc_{y + 60}>" for x, y in bins)


def forced(tokenizer, text: str) -> dict:
    """``generate`` arguments that make every row emit ``text`` then ``</s>``."""
    target = tokenizer(text + "</s>", add_special_tokens=False).input_ids

    def allowed(row, prefix):
        n = prefix.shape[-1] - 1
        return [target[n]] if n < len(target) else [tokenizer.pad_token_id]

    return {"prefix_allowed_tokens_fn": allowed, "max_new_tokens": len(target) + 1}


class MergeClock:
    """Seconds spent in ``labels.merge_instances`` while installed."""

    def __init__(self):
        self.seconds = 0.0
        self.calls = 0

    def install(self):
        from fiftyone_florence2.labels import convert as labels

        real = labels.merge_instances

        @functools.wraps(real)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        return mock.patch.object(labels, "merge_instances", timed)


def run_grid(model, paths: list[str], grid: int) -> dict:
    """Loads and labels ``paths`` with ``grid`` x ``grid`` tiles; seconds per stage, boxes written."""
    from fiftyone_florence2.engine.items import Item, load_item

    model.config.tiles = grid
    runner, clock = model.runner, MergeClock()
    before = (runner.timings.vision, runner.timings.generate, runner.timings.score, runner.timings.images)
    start = time.perf_counter()
    items = [load_item(Item(str(i)), p, runner.preprocess, runner.image_size, model.config.tiling)
             for i, p in enumerate(paths)]  # fmt: skip
    loaded = time.perf_counter()
    with clock.install():
        outcomes = model.label_items(items)
    total = time.perf_counter() - start
    failed = [o.reason for o in outcomes if o.failed]
    if failed:
        raise RuntimeError(f"grid {grid}: {failed[0]}")
    t = runner.timings
    return {
        "grid": grid,
        "views": t.images - before[3],
        "load": loaded - start,
        "vision": t.vision - before[0],
        "generate": t.generate - before[1] + t.score - before[2],
        "merge": clock.seconds,
        "total": total,
        "boxes": sum(len(o.labels["detection"].detections) for o in outcomes),
    }


def measure_shape(shape: str, grids: list[int], paths: list[str], per_side: int, workdir: Path, rounds: int):
    """Each grid's median run over ``rounds``, the grids' order rotating from round to round so that load
    from other processes falls on every grid."""
    from fiftyone_florence2 import load_model

    from .workload import checkpoint_path

    checkpoint = checkpoint_path(workdir, shape)
    model = load_model("detection", model=str(checkpoint), num_beams=1, tiles=max(grids), batch_size=8)
    model.config.generate_kwargs = forced(model.runner.tokenizer, box_grid(per_side))
    run_grid(model, paths[:1], min(2, max(grids)))  # warm-up, supervision's import included
    runs: dict[int, list[dict]] = {grid: [] for grid in grids}
    for r in range(rounds):
        for grid in grids[r % len(grids) :] + grids[: r % len(grids)]:
            runs[grid].append(run_grid(model, paths, grid))
    medians = [{key: statistics.median(run[key] for run in runs[grid]) for key in runs[grid][0]} for grid in grids]
    return [{**row, "grid": grid, "views": runs[grid][0]["views"]} for row, grid in zip(medians, grids)]


def table(rows: list[dict], images: int) -> str:
    base = rows[0]["vision"] / max(1, rows[0]["views"])
    lines = [
        "| grid | tiles an image | vision s | vision s a tile | vision ÷ grid 1 | generate + score s | load s "
        "| merge s | run s | merge share | boxes an image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        growth = r["vision"] / (base * images) if base else float("nan")
        lines.append(
            f"| {r['grid']} x {r['grid']} | {r['views'] // images} | {r['vision']:.2f} "
            f"| {r['vision'] / r['views']:.3f} | {growth:.1f} "
            f"| {r['generate']:.2f} | {r['load']:.2f} | {r['merge']:.4f} | {r['total']:.2f} "
            f"| {r['merge'] / r['total']:.2%} | {r['boxes'] / images:.0f} |"
        )
    return "\n".join(lines)


def parse_args(argv):
    p = report.parser("python -m benchmarks.tiles", __doc__)
    p.add_argument("--shapes", default="tiny,base", help="random-weight checkpoint shapes (default tiny,base)")
    p.add_argument("--grids", default="1,2,3,4", help="tiles per side to time (default 1,2,3,4)")
    p.add_argument("--images", type=int, default=2, help=f"{IMAGE_WH[0]}x{IMAGE_WH[1]} photos per grid (default 2)")
    p.add_argument("--boxes-per-side", type=int, default=5, help="forced answer: a grid of boxes a tile (default 5)")
    p.add_argument("--rounds", type=int, default=1, help="runs of every grid; medians are shown (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--workdir", default=str(ROOT / "benchmarks" / "out"), help="checkpoints and images")
    report.add_output_options(p)
    p.add_argument("--note", action="append", default=[], help="a line added to the section (repeatable)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    from support.images import write_images

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    grids = [int(g) for g in args.grids.split(",")]
    paths = write_images(workdir / "tiles-images", args.images, sizes=[IMAGE_WH], prefix="large")
    load = os.getloadavg()[0]
    sections = []
    for shape in args.shapes.split(","):
        rows = measure_shape(shape, grids, paths, args.boxes_per_side, workdir, args.rounds)
        worst = max(r["merge"] / r["total"] for r in rows)
        verdict = "under" if worst < MERGE_SHARE_TARGET else "NOT under"
        sections += [
            f"### {shape} shape",
            "",
            table(rows, args.images),
            "",
            f"The merge's largest share of a run: {worst:.2%}, {verdict} the {MERGE_SHARE_TARGET:.0%} target.",
            "",
        ]
    lines = [
        "## Tiles: vision time against the grid, and the merge's share",
        "",
        f"`python -m benchmarks.tiles {' '.join(argv if argv is not None else sys.argv[1:])}`: tiled "
        f"detection (overlap {OVERLAP}) on {args.images} synthetic {IMAGE_WH[0]}x{IMAGE_WH[1]} photos per grid, "
        f"median of {args.rounds} run(s) each, "
        f"random weights, greedy; every tile forced to answer {args.boxes_per_side**2} boxes that meet their "
        f"neighbours' in the overlaps; {torch.get_num_threads()} torch threads on "
        f"{'GPU ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}. {report.conditions(load)}",
        "",
        "Vision ÷ grid 1 is the vision time per image against grid 1's: N x N tiles are N x N images of vision "
        "work. Generate + score grows the same way (one generation a tile). The merge (supervision's non-max "
        "merge of every tile's boxes, in whole-image coordinates) is timed inside the run; supervision's one "
        "import (about 0.6 s a process) is paid in the warm-up. Run s is loading (decode once, crop, "
        "preprocess) plus labelling.",
        "",
        *sections,
        *([f"- {note}" for note in args.note]),
    ]
    report.publish(lines, args.output, "tiles")
    return 0


if __name__ == "__main__":
    sys.exit(main())

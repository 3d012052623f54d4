"""Does fine-tuning learn? Train the "seeing" random checkpoint on synthetic boxes through ``train()``, then
label held-out images with ``apply_model`` and score them.

python -m benchmarks.train_tiny --target one --minutes 10     # one rectangle per image (target IoU >= 0.85)
python -m benchmarks.train_tiny --target multi --minutes 20   # 1-4 shapes of 3 classes (target mAP@0.5 >= 0.6)
python -m benchmarks.train_tiny --target one --minutes 1 --val-images 8 --test-images 8   # a quick look

The training stream is a curriculum (``support.synthetic``): white shapes on black only for the first
``--bw-steps`` steps, then their share falls linearly to 0 by ``--fade-steps``, then random colours; it is
written in training order (``sort_by("order")``) and trained with ``shuffle=False``. The number of steps
comes from a short timing run, so that training takes about ``--minutes``. Data, checkpoints and the
database live in a temporary directory (``--workdir`` to keep them).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from support import synthetic

from . import report

ROOT = Path(__file__).resolve().parents[1]
TASK = "detection"
VAL_TAG = "val"
TARGETS = {
    "one": "mean IoU >= 0.85 and IoU >= 0.5 on at least 95% of images",
    "multi": "mAP@0.5 >= 0.6",
}


def parse_args(argv):
    p = report.parser("python -m benchmarks.train_tiny", __doc__)
    p.add_argument("--target", choices=sorted(TARGETS), default="one")
    p.add_argument("--minutes", type=float, default=10.0, help="training time to budget (default 10)")
    p.add_argument("--max-steps", type=int, default=None, help="train exactly this many steps (skips the timing)")
    p.add_argument("--timing-steps", type=int, default=30, help="steps of the timing run (default 30)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--lr-schedule", default="cosine")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW's weight decay (torch's own default: 0.01)")
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="gradient clipping (default 0: none; at the "
                   "Trainer's 1.0 the tiny model learns far slower)")  # fmt: skip
    p.add_argument("--bw-steps", type=int, default=800, help="steps of black-and-white only (default 800)")
    p.add_argument("--fade-steps", type=int, default=1600, help="step where black-and-white ends (default 1600)")
    p.add_argument("--val-images", type=int, default=32, help="images validated during training (default 32)")
    p.add_argument("--test-images", type=int, default=None, help="images scored at the end (default 32 one, "
                   "128 multi)")  # fmt: skip
    p.add_argument("--evaluations", type=int, default=8, help="validations during training, for the curve")
    p.add_argument("--beams", type=int, default=1)
    p.add_argument(
        "--min-side",
        type=int,
        default=6,
        help="one object: the rectangle's shortest side in pixels (default 6; the longest is 48)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--workdir", default=None, help="keep data and checkpoints here (default: a temporary dir)")
    report.add_output_options(p)
    return p.parse_args(argv)


def iou(a, b) -> float:
    """IoU of two relative ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def best_ious(samples, pred_field: str, gt_field: str = "ground_truth") -> list[float]:
    """For every ground-truth box, the IoU of the predicted box that overlaps it most (0 with none)."""
    out = []
    for gts, preds in zip(samples.values(f"{gt_field}.detections"), samples.values(f"{pred_field}.detections")):
        boxes = [p.bounding_box for p in preds or []]
        out += [max((iou(g.bounding_box, b) for b in boxes), default=0.0) for g in gts or []]
    return out


def training_items(target: str, steps: int, batch_size: int, bw_steps: int, fade_steps: int, seed: int, **shape):
    kind = "one" if target == "one" else "multi"
    styles = synthetic.curriculum(steps, batch_size, bw_steps, fade_steps, seed=seed)
    return synthetic.generate(kind, styles, seed=seed + 1, **shape)


def build_datasets(target: str, steps: int, args, directory: Path, val_images: int, test_images: int):
    """The training samples (curriculum order) with random-colour validation samples tagged ``val`` in one
    dataset, and the random-colour test images, never seen in training, in another."""
    from fiftyone import ViewField as F

    kind = "one" if target == "one" else "multi"
    shape = {"min_side": args.min_side} if kind == "one" else {}
    items = training_items(target, steps, args.batch_size, args.bw_steps, args.fade_steps, args.seed, **shape)
    val = synthetic.generate(kind, ["colour"] * val_images, seed=args.seed + 10_000, **shape)
    dataset = synthetic.write_dataset(items + val, directory / "train")
    dataset.match(F("order") >= len(items)).tag_samples(VAL_TAG)
    test = synthetic.generate(kind, ["colour"] * test_images, seed=args.seed + 20_000, **shape)
    return dataset, synthetic.write_dataset(test, directory / "test") if test_images else None


def train_run(dataset, output_dir: Path, steps: int, args, evaluations: int) -> tuple:
    """``train()`` in the curriculum's order, and the wall time of each logged step (``on_progress``)."""
    import fiftyone_florence2 as ff2

    clock: list[tuple[float, int]] = []
    validating = len(dataset.match_tags(VAL_TAG)) > 0
    result = ff2.train(dataset.sort_by("order"), task=TASK, label_field="ground_truth", output_dir=str(output_dir),
                       model=str(args.checkpoint), max_steps=steps, batch_size=args.batch_size,
                       learning_rate=args.learning_rate, lr_schedule=args.lr_schedule, warmup=0.0, shuffle=False,
                       max_grad_norm=args.max_grad_norm, weight_decay=args.weight_decay,
                       val_tag=VAL_TAG if validating else None, save_steps=max(1, steps // max(1, evaluations)),
                       seed=args.seed, device="cpu", overwrite=True, progress=False,
                       on_progress=lambda entry: clock.append((time.monotonic(), entry["step"])))  # fmt: skip
    return result, clock


def step_seconds(clock: list[tuple[float, int]]) -> float:
    """Seconds per step between the first and the last logged step."""
    (t0, s0), (t1, s1) = clock[0], clock[-1]
    return (t1 - t0) / max(1, s1 - s0)


def measure(val, output_dir: str, beams: int) -> dict:
    """Labels the test samples with the trained checkpoint and scores them."""
    from fiftyone_florence2 import load_model

    model = load_model(TASK, model=output_dir, num_beams=beams)
    start = time.perf_counter()
    val.apply_model(model, label_field="predictions", batch_size=16)
    seconds = time.perf_counter() - start
    ious = best_ious(val, "predictions")
    at_50 = val.evaluate_detections("predictions", gt_field="ground_truth", eval_key="eval50", compute_mAP=True,
                                    iou_threshs=[0.5])  # fmt: skip
    coco = val.evaluate_detections("predictions", gt_field="ground_truth", eval_key="eval", compute_mAP=True)
    return {
        "images": len(val),
        "objects": len(ious),
        "mean_iou": sum(ious) / max(1, len(ious)),
        "share_50": sum(v >= 0.5 for v in ious) / max(1, len(ious)),
        "map_50": at_50.mAP(),
        "map": coco.mAP(),
        "predicted": sum(len(d or []) for d in val.values("predictions.detections")),
        "label_seconds": seconds,
    }


def verdict(target: str, scores: dict) -> str:
    if target == "one":
        met = scores["mean_iou"] >= 0.85 and scores["share_50"] >= 0.95
        gap = f"mean IoU {scores['mean_iou']:.3f} vs 0.85, IoU >= 0.5 on {scores['share_50']:.1%} vs 95%"
    else:
        met = scores["map_50"] >= 0.6
        gap = f"mAP@0.5 {scores['map_50']:.3f} vs 0.6"
    return f"**Target ({TARGETS[target]}): {'met' if met else 'NOT met'}** ({gap})."


def curve(history: list[dict]) -> str:
    """One row per validation: the step, the learning rate, the mean training loss since the previous
    validation, and the validation's loss and detection metrics (logged apart at the same step)."""
    metrics = [k for k in ("eval_loss", f"eval_{TASK}_map", f"eval_{TASK}_precision", f"eval_{TASK}_recall")
               if any(k in h for h in history)]  # fmt: skip
    evals: dict[int, dict] = {}
    for entry in history:
        if any(k in entry for k in metrics):
            evals.setdefault(entry["step"], {}).update(entry)
    rows, losses, rate = [], [], None
    for entry in history:
        if "loss" in entry:
            losses.append(entry["loss"])
            rate = entry.get("learning_rate", rate)
        found = evals.pop(entry["step"], None) if any(k in entry for k in metrics) else None
        if found:
            loss = f"{sum(losses) / len(losses):.4f}" if losses else ""
            rows.append([str(entry["step"]), f"{rate:.2e}" if rate is not None else "", loss]
                        + [f"{found[k]:.4f}" if k in found else "" for k in metrics])  # fmt: skip
            losses = []
    if not rows:
        return "(no validation was logged)"
    names = [k.removeprefix("eval_").removeprefix(f"{TASK}_") for k in metrics]
    return report.markdown_table(["step", "lr", "train loss", *[f"val {n}" for n in names]], rows)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = report.isolated_work(args.workdir, "florence2-train-tiny-", args.threads)
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    load = os.getloadavg()[0]
    args.checkpoint = build_random_checkpoint(work / "seeing", "seeing", seed=args.seed)
    test_images = args.test_images or (32 if args.target == "one" else 128)
    timed = None
    steps = args.max_steps
    if steps is None:
        timing, _ = build_datasets(args.target, args.timing_steps, args, work / "timing", 0, 0)
        _, clock = train_run(timing, work / "timing-run", args.timing_steps, args, evaluations=1)
        timed = step_seconds(clock)
        steps = max(1, int(args.minutes * 60 / timed))
        timing.delete()
    start = time.perf_counter()
    dataset, test = build_datasets(args.target, steps, args, work / "images", args.val_images, test_images)
    data_seconds = time.perf_counter() - start
    result, clock = train_run(dataset, work / "run", steps, args, args.evaluations)
    scores = measure(test, str(result.output_dir), args.beams)
    evaluations = sum(f"eval_{TASK}_map" in h for h in result.history)
    shown = " ".join(argv if argv is not None else sys.argv[1:])
    kind = (
        f"one rectangle ({args.min_side} to 48 px a side)"
        if args.target == "one"
        else "1-4 shapes (square, disk, triangle)"
    )
    best = f"step {result.best['step']}" if result.best else "the last step"
    lines = [
        f"## Fine-tuning learns: {kind} per image, seeing tiny model, CPU",
        "",
        f"`python -m benchmarks.train_tiny {shown}`: `train()` from random weights (the `seeing` shape of "
        "`random_checkpoint.py`: 64-px images, an 8x8 grid of 65 image tokens), AdamW lr "
        f"{args.learning_rate:g}, batch {args.batch_size}, {args.lr_schedule} schedule over {steps} steps, "
        f"gradient clipping {args.max_grad_norm or 'off'}, weight decay {args.weight_decay:g}, "
        f"{args.threads} torch thread(s); curriculum: white on black only for {args.bw_steps} steps, fading out "
        f"linearly by step {args.fade_steps}, then random colours, trained in order (`shuffle=False`). "
        f"{args.val_images} random-colour images validate during training (the checkpoint kept is the best "
        f"by their mAP: {best}); the scores are on {scores['images']} other random-colour images "
        f"({scores['objects']} objects) labelled by `apply_model` with "
        f"`load_model('{TASK}', model=output_dir, num_beams={args.beams})`. {report.conditions(load)}",
        "",
        "| measure | result |",
        "|---|---|",
        f"| training steps | {result.steps}, {step_seconds(clock) * 1000:.0f} ms a step with validations and saves"
        + (f" (timing run: {timed * 1000:.0f} ms)" if timed else "")
        + " |",
        f"| `train()` wall time | {result.seconds / 60:.1f} min (loading, checking every image, {evaluations} "
        "validations and saves included) |",
        f"| data ({steps * args.batch_size + args.val_images + test_images} PNGs and two datasets) | "
        f"{data_seconds:.0f} s |",
        f"| mean IoU of each object's best box | {scores['mean_iou']:.3f} |",
        f"| objects with IoU >= 0.5 | {scores['share_50']:.1%} |",
        f"| mAP@0.5 (`evaluate_detections`, `iou_threshs=[0.5]`) | {scores['map_50']:.3f} |",
        f"| mAP@[0.5:0.95] (COCO) | {scores['map']:.3f} |",
        f"| boxes predicted / objects | {scores['predicted']} / {scores['objects']} |",
        f"| labelling the test images | {scores['label_seconds']:.1f} s |",
        "",
        verdict(args.target, scores),
        "",
        "Training curve (validation images, greedy):",
        "",
        curve(result.history),
    ]
    variant = f"-min-side-{args.min_side}" if args.target == "one" and args.min_side != 6 else ""
    report.publish(lines, args.output, f"train-tiny-{args.target}{variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

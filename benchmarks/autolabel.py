"""The auto-labelling loop on drawn scenes with known answers: label, review a slice, calibrate, accept or queue,
fine-tune, relabel.

python -m benchmarks.autolabel                                  # the default run (3 seeds, 10-20 min on 2 CPUs)
python -m benchmarks.autolabel --max-objects 1                  # scenes of one shape each
python -m benchmarks.autolabel --pool 3000 --test 500 --seeds 0,1,2,3,4 --finetune-steps 600

For each seed: ``--pool`` scenes of ``fiftyone_florence2.scenes`` (the kind the shipped ``florence2-seeing-tiny``
learnt) are labelled by the product (``label_samples`` with the seeing model, greedy). A simulated reviewer
takes a random ``--review-fraction`` of the pool, tags it ``reviewed`` and writes its corrected labels (the hidden
ground truth) to ``reviewed_labels``. ``calibrate`` on that slice gives per-class thresholds for each target
precision; ``review_queue`` accepts what clears them and queues the rest. Scored on the pool's other samples
(never seen by the calibration): the accepted labels' precision against the target, the share of true objects
accepted without review (coverage), and the labels left for a person. Then ``train`` fine-tunes the seeing model
on the reviewed slice plus the samples whose labels were all accepted, validated on a held-out ``--finetune-val``
share of the slice (the round is kept only if it beats the starting weights there), and ``apply_model`` relabels
``--test`` held-out scenes: mAP@0.5 before and after that one round. The raw confidences' AUROC (right against
wrong) and expected calibration error (raw, and through the slice's recalibration) are measured on the same unseen
samples. Every seed is reported.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

from . import report
from .autolabel_report import render
from .autolabel_scores import Matched, acceptance, auroc, raw_calibration_error, recalibrated_error

REVIEWED_TAG = "reviewed"
VAL_TAG = "finetune_val"  # the part of the reviewed slice that validates the fine-tuning round, never trained on
TRUTH, PREDICTIONS, REVIEWED, TRAIN = "ground_truth", "predictions", "reviewed_labels", "train_labels"
MATCH_KEY = "truth"  # the eval key of the hidden truth's matching (the benchmark's, not the product's)


def parse_args(argv):
    p = report.parser("python -m benchmarks.autolabel", __doc__)
    p.add_argument("--pool", type=int, default=1000, help="scenes to auto-label, per seed")
    p.add_argument("--test", type=int, default=200, help="held-out scenes for mAP@0.5, per seed")
    p.add_argument("--max-objects", type=int, default=3, help="each scene holds 1 to N shapes (the seeing model "
                   "learnt 1 to 3)")  # fmt: skip
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one full run each")
    p.add_argument("--fractions", default=None, metavar="LOW,HIGH", help="the shapes' sides as fractions of the "
                   "shorter side, for pool and test (default: the 0.12 to 0.5 the seeing model learnt; smaller, "
                   "such as 0.08,0.16, is a kind of scene it labels less well)")  # fmt: skip
    p.add_argument("--review-fraction", type=float, default=0.1, help="share of the pool the reviewer corrects")
    p.add_argument(
        "--targets",
        default="0.8,0.9,0.95,0.98",
        help="target precisions, comma-separated (the seeing model's raw labels are right about 9 in 10)",
    )
    p.add_argument("--iou", type=float, default=0.5, help="IoU a label needs to count as right")
    p.add_argument("--finetune-target", type=float, default=0.9, help="whose accepted labels train the round")
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument(
        "--finetune-val",
        type=float,
        default=0.3,
        help="hold out this share of the reviewed slice to "
        "validate the round on: train() keeps its best checkpoint, and the round is kept only if it beats "
        "the starting weights there (0: no validation, the round is always kept)",
    )
    p.add_argument("--finetune-evals", type=int, default=6, help="validations (and saved checkpoints) per round")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="skip the same round on the whole pool's true labels (what perfect labels would give)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default=None, help="keep data and checkpoints here (default: a temporary dir)")
    p.add_argument("--from-results", metavar="JSON", help="render a run's saved autolabel.json again, running nothing")
    report.add_output_options(p)
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.targets = [float(t) for t in args.targets.split(",")]
    if args.fractions is not None:
        try:
            args.fractions = [float(f) for f in args.fractions.split(",")]
        except ValueError:
            args.fractions = []
        if len(args.fractions) != 2 or not 0 < args.fractions[0] <= args.fractions[1] <= 1:
            p.error(f"--fractions must be LOW,HIGH with 0 < LOW <= HIGH <= 1, got {' '.join(argv or [])!r}.")
    if not 0 <= args.finetune_val < 1:
        p.error(f"--finetune-val must be from 0 to below 1, got {args.finetune_val}.")
    if args.finetune_evals < 1:
        p.error(f"--finetune-evals must be at least 1, got {args.finetune_evals}.")
    if args.max_objects < 1:
        p.error(f"--max-objects must be at least 1, got {args.max_objects}.")
    if args.finetune_target not in args.targets:
        p.error(f"--finetune-target must be one of --targets ({', '.join(map(str, args.targets))}).")
    return args


def make_data(seed: int, args, work: Path):
    """The pool and the held-out test set of one seed, each with its hidden truth in ``ground_truth``."""
    import fiftyone as fo

    from fiftyone_florence2 import scenes

    from .train_seeing import write_scenes

    made = []
    for name, count, offset in (("pool", args.pool, 0), ("test", args.test, 50_000)):
        dataset = fo.Dataset()
        write_scenes(
            scenes.draw_scenes(
                count,
                seed=seed + offset,
                max_objects=args.max_objects,
                **({"fractions": tuple(args.fractions)} if args.fractions else {}),
            ),
            work / f"seed{seed}" / name,
            dataset,
        )
        made.append(dataset)
    return made[0], made[1]


def slice_positions(count: int, fraction: float, seed: int) -> list[int]:
    """The positions (0 to ``count`` - 1, ascending) of a random ``fraction`` of ``count`` samples, at least one,
    drawn from ``seed`` alone (FiftyOne's ``take(seed=)`` also depends on each sample's random ``_rand``)."""
    import numpy as np

    if count < 1 or not 0 < fraction <= 1:
        raise ValueError(f"Need samples and a fraction in (0, 1], got {count} and {fraction}.")
    size = min(count, max(1, round(fraction * count)))
    return sorted(int(i) for i in np.random.default_rng(seed).choice(count, size=size, replace=False))


def simulate_review(pool, fraction: float, seed: int):
    """A person corrects a random ``fraction`` of the pool: tagged ``reviewed``, the truth copied to
    ``reviewed_labels``. Returns the reviewed view."""
    import fiftyone as fo

    ids = pool.sort_by("order").values("id")
    reviewed = pool.select([ids[i] for i in slice_positions(len(ids), fraction, seed)])
    reviewed.tag_samples(REVIEWED_TAG)
    corrected = [
        fo.Detections(detections=[fo.Detection(label=d.label, bounding_box=d.bounding_box) for d in truth.detections])
        for truth in reviewed.values(TRUTH)
    ]
    reviewed.set_values(REVIEWED, corrected)
    return pool.match_tags(REVIEWED_TAG)


def matched_labels(view) -> tuple[list[Matched], list[str], int]:
    """The view's predicted labels matched to the hidden truth (after ``match_truth``), their ids, and its true
    objects."""
    matched, ids = [], []
    for detections in view.values(f"{PREDICTIONS}.detections"):
        for d in detections or []:
            matched.append(Matched(d.label, float(d.confidence), d[MATCH_KEY] == "tp"))
            ids.append(d.id)
    objects = sum(len(truth or []) for truth in view.values(f"{TRUTH}.detections"))
    return matched, ids, objects


def match_truth(pool, iou: float) -> None:
    """Marks every predicted label right (``tp``) or wrong against the hidden truth, class and IoU."""
    pool.evaluate_detections(PREDICTIONS, gt_field=TRUTH, eval_key=MATCH_KEY, iou=iou)


def queue_for(pool, target: float, ids: list[str], args, plot: Path | None = None) -> dict:
    """The product's ``calibrate`` on the reviewed slice for ``target``, then its ``review_queue`` over the pool
    with that calibration; returns what the slice said, the queue's counts per band (the unreviewed labels: the
    unseen samples') and, per unseen label id in ``ids``, whether the queue accepted it."""
    import fiftyone_florence2 as f2

    tag = round(target * 1000)
    calibration = f2.calibrate(pool.match_tags(REVIEWED_TAG), PREDICTIONS, REVIEWED, iou=args.iou,
                               target_precision=target, key=f"calibration_{tag}", plot_path=plot)  # fmt: skip
    queue = f2.review_queue(pool, PREDICTIONS, calibration=calibration, recalibrated=True,
                            reviewed_tags=(REVIEWED_TAG,), key=f"queue_{tag}", overwrite=True)  # fmt: skip
    unseen = pool.match_tags(REVIEWED_TAG, bool=False)
    paths = [f"{PREDICTIONS}.detections.id", f"{PREDICTIONS}.detections.tags"]
    bands = {
        label_id: tags
        for sample_ids, sample_tags in zip(*unseen.values(paths))
        for label_id, tags in zip(sample_ids or [], sample_tags or [])
    }
    overall = calibration.overall
    return {
        "thresholds": calibration.thresholds,
        "counts": queue.counts,
        "flags": ["accepted" in bands[i] for i in ids],
        "rejected": ["rejected" in bands[i] for i in ids],
        "slice": {"reached": overall.reached, "precision": overall.precision, "interval": overall.interval,
                  "accepted": at_or_above(overall, overall.threshold), "ece": overall.ece,
                  "best": overall.best.precision if overall.best else None},
        "mapping": overall.mapping, "ece_recalibrated_slice": overall.ece_recalibrated,
    }  # fmt: skip


def at_or_above(report, threshold: float) -> int:
    """How many of the slice's labels a threshold accepts (the calibration's curve)."""
    return max((p.accepted for p in report.curve if p.threshold >= threshold), default=0)


def hold_out(reviewed, fraction: float, seed: int) -> int:
    """Tags a random ``fraction`` of the reviewed slice ``VAL_TAG`` (none when that would leave nothing of the
    slice to train on); returns how many."""
    if not fraction or len(reviewed) < 2:
        return 0
    ids = reviewed.sort_by("order").values("id")
    held = reviewed.select([ids[i] for i in slice_positions(len(ids), fraction, seed + 1)][: len(ids) - 1])
    held.tag_samples(VAL_TAG)
    return len(held)


def finetune(samples, label_field: str, output_dir: Path, seed: int, args, validating: bool):
    """One fine-tuning round of the shipped seeing model on ``label_field`` (the product's ``train``), validated
    on the ``VAL_TAG`` samples (best checkpoint kept) when ``validating``."""
    import fiftyone_florence2 as f2

    every = max(1, args.finetune_steps // args.finetune_evals) if validating else args.finetune_steps
    return f2.train(samples, task="detection", label_field=label_field, output_dir=str(output_dir),
                    model=f2.SEEING_NAME, max_steps=args.finetune_steps, batch_size=args.batch_size,
                    learning_rate=args.finetune_lr, lr_schedule="cosine", max_grad_norm=0,
                    val_tag=VAL_TAG if validating else None, save_steps=every,
                    keep_checkpoints=1, seed=seed, device="cpu", overwrite=True, progress=False)  # fmt: skip


def fine_tuning_round(samples, label_field: str, name: str, seed: int, args, test, val, work: Path) -> dict:
    """One round and its held-out mAP@0.5; with a validation view ``val``, the round's checkpoint replaces the
    starting weights only where its mAP@0.5 there (against the reviewer's labels) is higher."""
    import fiftyone_florence2 as f2

    from .train_seeing import held_out_map

    result = finetune(samples, label_field, work / f"seed{seed}" / name, seed, args, validating=val is not None)
    found = {"seconds": result.seconds, "kept": True}
    if val is not None:
        found["val_start"] = held_out_map(val, f2.SEEING_NAME, field=f"val_start_{name}", gt_field=REVIEWED)
        found["val_round"] = held_out_map(val, result.output_dir, field=f"val_{name}", gt_field=REVIEWED)
        found["kept"] = bool(found["val_round"] > found["val_start"])
    kept = result.output_dir if found["kept"] else f2.SEEING_NAME
    found["map"] = held_out_map(test, kept, field=name)
    return found


def run_seed(seed: int, args, work: Path) -> dict:
    """One whole loop; every figure of one seed."""
    import fiftyone_florence2 as f2

    from .train_seeing import held_out_map

    began = time.perf_counter()
    pool, test = make_data(seed, args, work)
    model = f2.load_model("detection", model=f2.SEEING_NAME, num_beams=1)
    labelled = f2.label_samples(pool, model, label_field=PREDICTIONS, batch_size=16, progress=False)
    reviewed = simulate_review(pool, args.review_fraction, seed)
    match_truth(pool, args.iou)
    unseen = pool.match_tags(REVIEWED_TAG, bool=False)
    matched, ids, objects = matched_labels(unseen)
    slice_labels = sum(len(d or []) for d in reviewed.values(f"{PREDICTIONS}.detections"))
    found = {"seed": seed, "pool": len(pool), "reviewed_samples": len(reviewed), "unseen_samples": len(unseen),
             "labelled": labelled.labelled, "label_seconds": labelled.seconds, "unseen_labels": len(matched),
             "unseen_objects": objects, "reviewed_labels": slice_labels, "auroc": auroc(matched),
             "ece": raw_calibration_error(matched), "targets": {},
             "matched": [[m.label, m.confidence, m.right] for m in matched],
             "raw_precision": sum(m.right for m in matched) / len(matched) if matched else None}  # fmt: skip
    # The fine-tuning round learns from the last queue's tags: the fine-tuning target's goes last.
    for i, target in enumerate(sorted(args.targets, key=lambda t: t == args.finetune_target)):
        queued = queue_for(pool, target, ids, args, plot=work / f"reliability-seed{seed}.png" if i == 0 else None)
        score = acceptance(matched, queued["flags"], objects)
        if i == 0:  # the mapping is the slice's, whatever the target: measured once, on the unseen labels
            found["ece_recalibrated"] = recalibrated_error(matched, queued["mapping"])
            found["ece_recalibrated_slice"] = queued["ece_recalibrated_slice"]
        found["targets"][str(target)] = {
            "thresholds": queued["thresholds"], "counts": queued["counts"], "accepted": score.accepted,
            "slice": queued["slice"],
            "rejected_right": sum(m.right for m, out in zip(matched, queued["rejected"]) if out),
            "precision": score.precision, "coverage": score.coverage,
        }  # fmt: skip
    trains = f2.training_labels(pool, PREDICTIONS, into=TRAIN, gt_field=REVIEWED, reviewed_tags=(REVIEWED_TAG,))
    found["train_samples"] = len(trains)
    found["train_labels"] = sum(len(d or []) for d in trains.values(f"{TRAIN}.detections"))
    found["map_before"] = held_out_map(test, f2.SEEING_NAME, field="before")
    found["val_samples"] = hold_out(reviewed, args.finetune_val, seed)
    val = pool.match_tags(VAL_TAG) if found["val_samples"] else None
    found["round"] = fine_tuning_round(trains, TRAIN, "round1", seed, args, test, val, work)
    found["train_seconds"], found["map_after"] = found["round"]["seconds"], found["round"]["map"]
    if args.ceiling:
        found["ceiling"] = fine_tuning_round(pool, TRUTH, "ceiling", seed, args, test, val, work)
        found["map_ceiling"] = found["ceiling"]["map"]
    found["seconds"] = time.perf_counter() - began
    print(json.dumps({k: v for k, v in found.items() if k != "matched"}, default=str), flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.from_results:
        found = json.loads(Path(args.from_results).read_text())
        report.publish(render(found), args.output, section_key(found["args"].get("fractions")))
        return 0
    work = report.isolated_work(args.workdir, "florence2-autolabel-", args.threads)
    load = os.getloadavg()[0]
    began = time.perf_counter()
    runs = [run_seed(seed, args, work) for seed in args.seeds]
    minutes = (time.perf_counter() - began) / 60
    machine = f"{report.machine()['CPU']}, Python {platform.python_version()}"
    summary = {"args": vars(args), "argv": " ".join(argv), "runs": runs, "minutes": minutes,
               "conditions": report.conditions(load), "machine": machine}  # fmt: skip
    (work / "autolabel.json").write_text(json.dumps(summary, indent=1, default=str))
    report.publish(render(summary), args.output, section_key(args.fractions))
    return 0


def section_key(fractions: list[float] | None) -> str:
    """BENCHMARKS.md keeps one section for the scenes the model learnt and one for smaller shapes."""
    return "autolabel-small-shapes" if fractions else "autolabel"


if __name__ == "__main__":
    sys.exit(main())

"""The auto-labelling benchmark's section of BENCHMARKS.md: its tables and the reasons, written from the figures
of every seed (``benchmarks.autolabel`` saves them as ``autolabel.json``)."""

from __future__ import annotations

from . import report
from .autolabel_scores import Matched, number, percent, scored


def verdict(precision: float | None, target: float, tolerance: float = 0.03) -> str:
    """Whether the accepted labels' precision is within ``tolerance`` of the target (or above it)."""
    if precision is None:
        return "nothing accepted"
    return "met" if precision >= target - tolerance else "NOT met"


def render(summary: dict) -> list[str]:
    """The BENCHMARKS.md section of a run: every seed, every target."""
    from fiftyone_florence2.core.calibration import reliability_bins

    args, runs = summary["args"], summary["runs"]
    n = len(runs)
    lines = [
        f"## Auto-labelling loop: label, review {args['review_fraction']:.0%}, calibrate, accept or queue, fine-tune "
        "(seeing tiny model, CPU)",
        "",
        f"`python -m benchmarks.autolabel {summary['argv']}`: for each of {n} seeds, {args['pool']} drawn scenes "
        f"(`fiftyone_florence2.scenes`, {shapes(args.get('max_objects', 3))} of 12 classes"
        f"{sizes(args.get('fractions'))}; hidden truth known) are "
        "labelled by `label_samples` with `florence2-seeing-tiny` (greedy). A simulated reviewer corrects a random "
        f"{args['review_fraction']:.0%} of the pool from the hidden truth (tag `reviewed`, field `reviewed_labels`); "
        "`calibrate` picks thresholds on that slice for each target precision (per class where a class has 50 "
        "labels there, else the overall one), and `review_queue` bands the other "
        "labels (its default bands scaled to each class's threshold: accepted, review, skim, rejected). "
        "Every score below is on the other samples, which the calibration never saw; a label is right "
        f"when it has the true class and IoU >= {args['iou']} with a true object. Then `train()` fine-tunes the "
        f"seeing model ({args['finetune_steps']} steps, batch {args['batch_size']}, AdamW lr {args['finetune_lr']:g}, "
        f"cosine) on what `training_labels` gathers: the reviewed slice's corrections plus the labels accepted at "
        f"target {args['finetune_target']}{held_out(args)}, and `apply_model` relabels {args['test']} held-out "
        "scenes of another seed.",
        "",
        f"{summary['conditions']} {summary['machine']}. Wall time {summary['minutes']:.1f} min for the {n} seeds.",
        "",
        "### Accepted without review, on samples the calibration never saw",
        "",
    ]
    rows = []
    for run in runs:
        for target in map(str, args["targets"]):
            t = run["targets"][target]
            rows.append([str(run["seed"]), target, describe_thresholds(t["thresholds"]), on_slice(t["slice"]),
                         f"{t['accepted']} of {run['unseen_labels']}", number(t["precision"]),
                         verdict(t["precision"], float(target)), percent(t["coverage"]),
                         to_review(t["counts"], run["reviewed_labels"]),
                         rejected(t)])  # fmt: skip
    headers = ["seed", "target", "thresholds", "on the slice: precision (90% interval), labels", "accepted unseen",
               "precision", "within 0.03", "coverage", "labels a person reviews (queue + slice)",
               "rejected unseen (right ones)"]  # fmt: skip
    lines += [report.markdown_table(headers, rows), ""]
    lines += ["### The raw confidences", ""]
    rows = [[str(r["seed"]), str(r["unseen_labels"]), str(r["unseen_objects"]), number(r["raw_precision"]),
             number(r["auroc"]), number(r["ece"]), number(r.get("ece_recalibrated")),
             number(r.get("ece_recalibrated_slice"))] for r in runs]  # fmt: skip
    lines += [report.markdown_table(["seed", "labels", "true objects", "share right", "AUROC (right vs wrong)",
                                     "ECE raw (10 bins)", "ECE recalibrated (the slice's mapping)",
                                     "ECE recalibrated, cross-fitted on the slice"], rows), ""]  # fmt: skip
    everything = [Matched(*m) for r in runs for m in r["matched"]]
    lines += [f"Reliability of the raw confidences, all {n} seeds' unseen labels together:", ""]
    rows = [[f"{b.lower:.1f}-{b.upper:.1f}", str(b.count), number(b.mean_confidence), number(b.accuracy)]
            for b in reliability_bins(scored(everything), 10) if b.count]  # fmt: skip
    lines += [report.markdown_table(["confidence", "labels", "mean confidence", "share right"], rows), ""]
    lines += ["### One fine-tuning round", ""]
    rows = [[str(r["seed"]), f"{r['train_samples']} ({r['train_labels']})", validated(r.get("round"), r),
             number(r["map_before"]), number(r["map_after"]),
             f"{r['map_after'] - r['map_before']:+.3f}", number(r.get("map_ceiling")),
             validated(r.get("ceiling"), r), f"{r['train_seconds']:.0f} s"] for r in runs]  # fmt: skip
    headers = ["seed", "samples (labels) gathered", "validation mAP@0.5: start → round", "held-out mAP@0.5 before",
               "after", "change", "same round on the true labels", "its validation", "`train()` time"]  # fmt: skip
    lines += [report.markdown_table(headers, rows), ""]
    lines += [reached(runs, args), "", why(runs, args), ""]
    return lines


def sizes(fractions: list[float] | None) -> str:
    """Where the pool's shapes are sized unlike the seeing model's training scenes (12-50% of the shorter side)."""
    if not fractions:
        return ""
    low, high = fractions
    return (f", {low:.0%} to {high:.0%} of the shorter side: smaller than the 12% to 50% the seeing model learnt, "
            "a kind of scene it labels less well")  # fmt: skip


def shapes(max_objects: int) -> str:
    """``1 shape``, ``1-3 shapes``."""
    return "1 shape" if max_objects == 1 else f"1-{max_objects} shapes"


def held_out(args: dict) -> str:
    """How the round is validated, as a clause: none, or on a held-out part of the slice."""
    if not args.get("finetune_val"):
        return ""
    return (
        f", less a held-out {args['finetune_val']:.0%} of the slice that validates it (`train()` keeps its best "
        "checkpoint, and the round replaces the starting weights only if its mAP@0.5 there is higher)"
    )


def validated(found: dict | None, run: dict) -> str:
    """``0.41 → 0.44, kept`` / ``0.41 → 0.38, start kept`` on the held-out part of the slice; ``none`` without."""
    if not found or "val_start" not in found:
        return "none"
    kept = "round kept" if found["kept"] else "start kept"
    return f"{found['val_start']:.3f} → {found['val_round']:.3f} ({run['val_samples']} samples), {kept}"


def to_review(counts: dict[str, int], slice_labels: int) -> str:
    """The labels a person looks at: every queued band but accepted and rejected, plus the reviewed slice's."""
    queued = sum(n for band, n in counts.items() if band not in ("accepted", "rejected"))
    return f"{queued} + {slice_labels} = {queued + slice_labels}"


def rejected(found: dict) -> str:
    """The unseen labels the queue rejected (no person sees them), and how many of them were right."""
    count = found["counts"].get("rejected", 0)
    return f"{count} ({found['rejected_right']})" if "rejected_right" in found else str(count)


def on_slice(found: dict) -> str:
    """What the calibration saw on the slice at its threshold: ``0.667 (0.33-0.89), 6`` or ``not reachable``."""
    if not found["reached"]:
        best = "n/a" if found["best"] is None else f"{found['best']:.3f}"
        return f"not reachable (best {best})"
    low, high = found["interval"]
    return f"{found['precision']:.3f} ({low:.2f}-{high:.2f}), {found['accepted']}"


def describe_thresholds(thresholds: dict[str, float]) -> str:
    """``* 0.52`` or ``* 0.52, 3 classes own``."""
    own = len([k for k in thresholds if k != "*"])
    shown = f"* {thresholds['*']:.3f}" if "*" in thresholds else "no default"
    return shown + (f", {own} classes own" if own else "")


def reached(runs: list[dict], args: dict) -> str:
    """One paragraph of counts: how often each target was met and the round raised mAP."""
    parts = []
    for target in args["targets"]:
        met = sum(verdict(r["targets"][str(target)]["precision"], target) == "met" for r in runs)
        parts.append(f"precision within 0.03 of {target}: {met} of {len(runs)} seeds")
    raised = sum(r["map_after"] > r["map_before"] for r in runs)
    parts.append(f"the fine-tuning round raised held-out mAP@0.5 in {raised} of {len(runs)} seeds")
    validated = [r["round"] for r in runs if "val_start" in r.get("round", {})]
    if validated:
        kept = sum(found["kept"] for found in validated)
        parts.append(f"validated on the held-out part of the reviewed slice, the round replaced the starting weights "
                     f"in {kept} of {len(validated)} seeds")  # fmt: skip
    return "**Reached:** " + "; ".join(parts) + "."


def spread(values: list[float]) -> str:
    """``0.12`` for one value, ``0.12 to 0.19`` for several."""
    low, high = min(values), max(values)
    return f"{low:.3f}" if low == high else f"{low:.3f} to {high:.3f}"


def why(runs: list[dict], args: dict) -> str:
    """The reasons, from the figures: how well the raw confidences rank, how much the slice's choice rested on,
    and whether perfect labels would have made the round help."""
    aurocs = [r["auroc"] for r in runs if r["auroc"] is not None]
    right = [r["raw_precision"] for r in runs]
    ranking = "well" if min(aurocs, default=0) >= 0.85 else "only weakly" if min(aurocs, default=0) < 0.75 else "fairly"
    share = "most" if min(right) >= 0.7 else "few" if max(right) < 0.4 else "some"
    parts = [f"**Why:** the seeing model's raw confidences rank right above wrong {ranking} (AUROC "
             f"{spread(aurocs)}; 0.5 is chance, 1 perfect), and {share} of its labels are right (share right "
             f"{spread(right)})."]  # fmt: skip
    short = []
    for target in args["targets"]:
        found = [r["targets"][str(target)] for r in runs]
        counts = [t["slice"]["accepted"] for t in found if t["slice"]["reached"]]
        if not counts:
            parts.append(f"At {target} the slice never reached the target, so nothing was accepted.")
            continue
        few = " (so few that a precision measured on them is loose)" if min(counts) < 30 else ""
        unseen = [t["precision"] for t in found if t["slice"]["reached"] and t["precision"] is not None]
        short += [p - target for p in unseen]
        gave = f"; on unseen samples its accepted labels were right {spread(unseen)}" if unseen else ""
        parts.append(f"At {target} the slice reached the target in {len(counts)} of {len(runs)} seeds, on "
                     f"{min(counts)} to {max(counts)} of its labels{few}{gave}.")  # fmt: skip
    if short and sum(short) / len(short) < -0.01:
        below = -sum(short) / len(short)
        parts.append("The threshold picked is the lowest whose precision on the slice still reaches the target "
                     "(the most recall), so it lands where the slice's labels happened to run right; on other "
                     f"samples the precision falls back, {below:.3f} below the target on average.")  # fmt: skip
    parts += rejected_unseen(runs, args)
    if all("map_ceiling" in r for r in runs):
        worse = sum(r["map_ceiling"] <= r["map_before"] for r in runs)
        parts.append(f"The same round on every pool sample's true labels gave mAP@0.5 "
                     f"{spread([r['map_ceiling'] for r in runs])} (before: {spread([r['map_before'] for r in runs])}), "
                     f"no better than the start in {worse} of {len(runs)} seeds"
                     + (": there the round itself, not the accepted labels' errors, keeps the model from gaining"
                        " (on scenes like those it was trained on, a round of 300 steps on a thousand of them "
                        "moves it away from its best)." if worse else "."))  # fmt: skip
    return " ".join(parts)


def rejected_unseen(runs: list[dict], args: dict) -> list[str]:
    """A sentence on the most labels the queue rejected unseen (more than a tenth of them), and why."""
    lost = [(r["seed"], t, r["targets"][str(t)], r) for r in runs for t in args["targets"]]
    lost = [item for item in lost if item[2]["counts"].get("rejected", 0) > 0.1 * item[3]["unseen_labels"]]
    if not lost:
        return []
    seed, target, x, run = max(lost, key=lambda item: item[2]["counts"]["rejected"])
    right = f", {x['rejected_right']} of them right" if "rejected_right" in x else ""
    if run.get("ece_recalibrated") is not None:  # the calibration had a mapping: the queue bands by it
        why = (
            "The queue bands each label by its recalibrated confidence (how often the slice's labels at that raw "
            "confidence were right), and most of this model's labels map into its 'rejected' band"
        )
    else:
        why = (
            f"Where the target is not reachable the calibration gives threshold 1, and the queue scales its bands "
            f"to it, so 'rejected' then starts at {rejected_below(1.0):.2f}"
        )
    return [f"{why}: at {target} in seed {seed}, {x['counts']['rejected']} of {run['unseen_labels']} unseen labels "
            f"were rejected{right}, none of them shown to a person."]  # fmt: skip


def rejected_below(threshold: float) -> float:
    """Where the review queue's default 'rejected' band ends for a class whose threshold is ``threshold``."""
    from fiftyone_florence2.core.review import DEFAULT_BANDS, scaled_low

    return scaled_low(DEFAULT_BANDS[-2], DEFAULT_BANDS, threshold)

"""The shipped seeing model's card (``RECIPE.md``): what it is, how each of its training runs was made, and
how well it does on scenes it never saw."""

from __future__ import annotations

from . import report


def stages(summary: dict) -> list[dict]:
    """The training runs behind a checkpoint, first to last: each run's summary names the one it went on from."""
    earlier = summary.get("continued_from")
    return [*stages(earlier), summary] if earlier else [summary]


def first_stage(summary: dict, alone: bool) -> str:
    """The recipe of the run from random weights."""
    args = summary["args"]
    shown = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in args.items() if k in ("steps", "seed", "batch_size"))
    coarse = (
        "It is coarse: trained for 15 minutes on a shared CPU, its boxes are often a grid cell off; longer "
        "training would sharpen them. "
        if alone
        else ""
    )
    return (
        f"`python -m benchmarks.train_seeing --install {shown} --easy-steps {args['easy_steps']} "
        f"--fade-steps {args['fade_steps']}"
        + (" --caption" if args["caption"] else "")
        + "` (one CPU thread): the `seeing` random checkpoint (seed "
        f"{args['seed']}) with smooth position codes: its 1,000 `<loc_i>` embeddings (tied with the output "
        "layer) set to sinusoids of i/1000 (0.25 to 64 cycles) plus 10% noise, so that neighbouring bins start "
        "alike, and the image grid's row and column embeddings to sinusoids at the vision features' scale; "
        "the text model's weights drawn at unit scale (std 1/sqrt(fan-in)); "
        f"`train()` for {summary['steps']} steps, batch {args['batch_size']}, AdamW lr "
        f"{args['learning_rate']:g}, cosine schedule, no clipping, in order (`shuffle=False`). The curriculum "
        "is what made it leave the loss plateau: shapes first 50-95% of the shorter side, shrinking linearly "
        f"to 12-50% by step {args['fade_steps']}; one shape on black only for {args['easy_steps']} steps, "
        f"then the full variety's share rising to all by step {args['fade_steps']}. Every training scene is "
        f"drawn fresh; {args['val_images']} validation scenes pick the checkpoint kept (the best by their "
        "score). Runs of this recipe that left the plateau: 2 of 2 (seeds 0 and 1); without the shrinking "
        "sizes, 0 of 3 (BENCHMARKS.md, 'Training the shipped seeing model'). "
        f"{coarse}Training took {summary['train_minutes']:.0f} min. {summary['conditions']}"
    )


def later_stage(summary: dict) -> str:
    """The recipe of a run that went on from the checkpoint before it."""
    args, scores = summary["args"], summary["scores"]
    return (
        f"Then `python -m benchmarks.train_seeing --start fiftyone_florence2/seeing_tiny --steps {args['steps']} "
        f"--learning-rate {args['learning_rate']:g} --easy-steps {args['easy_steps']} --fade-steps "
        f"{args['fade_steps']} --seed {args['seed']}` went on from that checkpoint: `train()` for "
        f"{summary['steps']} more steps on the full variety of scenes, each drawn fresh, batch {args['batch_size']}, "
        f"AdamW lr {args['learning_rate']:g}, cosine schedule, no clipping; {args['val_images']} validation scenes "
        f"of another seed picked the checkpoint kept (step {summary['best'].get('step', '?')}). It took "
        f"{summary['train_minutes']:.0f} min. mAP@0.5 on scenes it never saw went from "
        f"{summary['continued_from']['scores']['map_50']:.3f} (the run before, on its own unseen scenes) to "
        f"{scores['map_50']:.3f} (below). {summary['conditions']}"
    )


def recipe(summary: dict) -> str:
    """The model card: what the model is and is not, how it was made, and how well it does on unseen scenes."""
    scores = summary["scores"]
    runs = stages(summary)
    rows = [[name, f"{ap:.3f}"] for name, ap in sorted(scores["per_class_ap"].items())]
    caption = (
        f"| caption exact-match rate (greedy) | {scores['caption_exact']:.1%} |\n" if "caption_exact" in scores else ""
    )
    minutes = sum(run["train_minutes"] for run in runs)
    return "\n".join(
        [
            "# florence2-seeing-tiny",
            "",
            "A 585k-parameter Florence-2 (transformers' native classes, the `seeing` shape of "
            "`fiftyone_florence2/random_checkpoint.py`: 64-px input, an 8x8 grid of image tokens, a 2+2-layer "
            "BART of width 64) trained from random weights on drawn scenes (`fiftyone_florence2/scenes.py`)"
            + (f", {minutes:.0f} minutes on a CPU in all." if len(runs) > 1 else "."),
            "",
            "**What it is:** a model that finds red, green, blue and yellow circles, squares and triangles "
            '(12 classes, `"<colour> <shape>"`) in drawn images: 1 to 3 shapes, 12% to 50% of the shorter '
            "side, on plain, gradient or noisy grey backgrounds, square or not"
            + (", and names them in a short caption (`<CAPTION>`)" if "caption_exact" in scores else "")
            + ". It answers `<OD>` with boxes that `load_model` turns into detections with confidences. "
            "It serves the offline demo, tests and benchmarks that need answers that mean something, and is a "
            "start for fine-tuning experiments on a CPU.",
            "",
            "**What it is not:** Florence-2. It has never seen a photograph and knows no other object, task "
            "or language; on any other image its labels mean nothing, and its speed says nothing about "
            "Florence-2's.",
            "",
            "## Recipe",
            "",
            first_stage(runs[0], alone=len(runs) == 1),
            *[part for run in runs[1:] for part in ("", later_stage(run))],
            "",
            f"## Measured on {scores['images']} scenes it never saw ({scores['objects']} objects, another seed)",
            "",
            "| measure | result |",
            "|---|---|",
            f"| mAP@0.5 (`evaluate_detections`, greedy decoding) | {scores['map_50']:.3f} |",
            f"| boxes predicted / objects | {scores['predicted']} / {scores['objects']} |",
            caption.rstrip("\n"),
            "",
            "AP@0.5 per class:",
            "",
            report.markdown_table(["class", "AP@0.5"], rows),
            "",
        ]
    )

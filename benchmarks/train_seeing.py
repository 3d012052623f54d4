"""Trains the shipped ``florence2-seeing-tiny`` checkpoint through ``train()``, scores it on scenes it never saw,
and writes it with its recipe.

python -m benchmarks.train_seeing --steps 6000 --workdir /tmp/seeing --install   # the shipped model
python -m benchmarks.train_seeing --steps 200 --test-images 16                    # a quick look

Recipe (``smooth_position_codes``, ``stage_options``): the ``seeing`` random checkpoint (64-px input, an 8x8
grid) with smooth sinusoidal codes for its ``<loc_i>`` tokens and its image grid, and its text model at unit-scale
init; scenes of ``fiftyone_florence2.scenes`` in curriculum order: large shapes first, shrinking to the full range
by ``--fade-steps``, one shape on black only for ``--easy-steps``; AdamW, cosine schedule, no clipping, trained in
order (``shuffle=False``) on detection and, with ``--caption``, short captions too.
The scores are on ``--test-images`` scenes drawn from another seed, labelled by
``apply_model``: mAP@0.5 and per-class AP (``evaluate_detections``), and the captions' exact-match rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from . import report
from .seeing_recipe import recipe

ROOT = Path(__file__).resolve().parents[1]
VAL_TAG = "val"
DETECTION, CAPTION = "detection", "caption"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_seeing", description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--easy-steps", type=int, default=800, help="steps of one shape on black only")
    p.add_argument("--fade-steps", type=int, default=1600, help="step where the easy scenes' share reaches 0")
    p.add_argument("--caption", action="store_true", help="learn short captions beside detection")
    p.add_argument("--start", default=None, help="go on from this checkpoint instead of fresh random weights")
    p.add_argument(
        "--images",
        type=int,
        default=None,
        help="draw only this many training scenes and shuffle them "
        "(default: a fresh scene for every example, in curriculum order)",
    )
    p.add_argument("--no-smooth-codes", action="store_true", help="keep the random <loc_i> and grid embeddings")
    p.add_argument("--val-images", type=int, default=32)
    p.add_argument("--test-images", type=int, default=200)
    p.add_argument("--evaluations", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default=None, help="keep data and checkpoints here (default: a temporary dir)")
    p.add_argument("--install", action="store_true", help="copy the trained checkpoint into the package")
    p.add_argument(
        "--finetune-check",
        action="store_true",
        help="instead of training: fine-tune the shipped "
        "model on a colour it never saw, score held-out scenes before and after, write BENCHMARKS.md",
    )
    p.add_argument("--finetune-steps", type=int, default=150)
    report.add_output_options(p)
    return p.parse_args(argv)


def sinusoids(positions, count: int, low: float, high: float):
    """``count`` sine and cosine features (``2 * count`` columns) of ``positions`` in [0, 1), at frequencies from
    ``low`` to ``high`` cycles per unit, geometric: smooth, so that near positions get near codes."""
    import torch

    frequencies = torch.logspace(torch.log10(torch.tensor(low)), torch.log10(torch.tensor(high)), count)[None, :]
    angles = 2 * torch.pi * frequencies * positions[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def scale_text_layers(model, generator) -> None:
    """Redraws the text model's linear weights with std 1/sqrt(fan_in) (biases 0), and its token and position
    embeddings with std 1/sqrt(d_model).

    BART's init_std of 0.02 suits d_model 768 (about 0.55/sqrt(768)); at d_model 64 it is a sixth of the
    unit-preserving scale, so attention starts uniform: every decoder query averages all 65 image tokens and
    the path from an object's token to the answer starts near zero.
    """
    import torch

    with torch.no_grad():
        for module in model.model.language_model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, module.in_features**-0.5, generator=generator)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0.0, module.embedding_dim**-0.5, generator=generator)


def smooth_position_codes(checkpoint: Path, seed: int, noise: float = 0.1, unit_init: bool = True) -> None:
    """Gives the model smooth, explicit position codes, and saves it.

    - the 1,000 ``<loc_i>`` rows of the token embeddings (tied with the output layer): sinusoids of i/1000, at
      the rows' own scale, plus ``noise`` times that scale of Gaussian noise, so that neighbouring bins start
      alike instead of as 1,000 unrelated classes;
    - the image grid's row and column embeddings (added to the vision features before the projection):
      sinusoids of the cell's centre, at the scale of the features, so that each image token says where it is
      as loudly as what it shows (at the default init the code is about 50 times weaker than the features).
    """
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    processor = AutoProcessor.from_pretrained(checkpoint)
    model = Florence2ForConditionalGeneration.from_pretrained(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    if unit_init:
        scale_text_layers(model, generator)
    ids = processor.tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(1000)])
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        scale = float(weight.std())
        codes = sinusoids(torch.arange(1000) / 1000, weight.shape[1] // 2, 0.25, 64.0)
        weight[ids] = scale * codes + noise * scale * torch.randn(1000, weight.shape[1], generator=generator)
        pixels = processor(text="<OD>", images=Image.new("RGB", (64, 64), (90, 90, 90)), return_tensors="pt")
        features = model.model.vision_tower(pixels["pixel_values"]).last_hidden_state
        grid = features.shape[-1]
        positions = (torch.arange(grid) + 0.5) / grid
        embed = model.model.multi_modal_projector.image_position_embed
        for table in (embed.row_embeddings.weight, embed.column_embeddings.weight):
            table[:grid] = float(features.std()) * sinusoids(positions, table.shape[1] // 2, 0.25, grid / 2)
    model.save_pretrained(checkpoint)


def tasks(args) -> list[str]:
    return [DETECTION, CAPTION] if args.caption else [DETECTION]


# The curriculum's object sizes (sides, as shares of the shorter side): large at first, where the shape's colour
# fills most of the image and is learnt within a few hundred steps, shrinking to the full range by --fade-steps.
FIRST_FRACTIONS = (0.5, 0.95)


def stage_options(step: int, easy_steps: int, fade_steps: int, rng) -> dict:
    """The scene options for one training sample at ``step``: sizes shrinking from :data:`FIRST_FRACTIONS` to the
    full range by ``fade_steps``; easy scenes (one shape on black) only until ``easy_steps``, then with a share
    falling linearly to 0 by ``fade_steps``, else the full variety."""
    from fiftyone_florence2 import scenes

    done = min(1.0, step / max(1, fade_steps))
    low, high = (
        first + (last - first) * done
        for first, last in zip(FIRST_FRACTIONS, (scenes.MIN_FRACTION, scenes.MAX_FRACTION))
    )
    share = 1.0 if step < easy_steps else max(0.0, 1.0 - (step - easy_steps) / max(1, fade_steps - easy_steps))
    easy = {"max_objects": 1, "backgrounds": ("black",)} if rng.random() < share else {}
    return {**easy, "fractions": (low, high)}


def write_scenes(scenes, directory: Path, dataset, start: int = 0, tags=()) -> None:
    """PNGs under ``directory`` and their samples: boxes in ``ground_truth``, the caption in ``captions``."""
    import fiftyone as fo

    directory.mkdir(parents=True, exist_ok=True)
    samples = []
    for i, scene in enumerate(scenes, start):
        path = directory / f"{i:06d}.png"
        scene.image.save(path)
        width, height = scene.image.size
        boxes = [fo.Detection(label=label, bounding_box=list(box)) for label, box in scene.objects]
        samples.append(fo.Sample(filepath=str(path), order=i, background=scene.background, tags=list(tags),
                                 metadata=fo.ImageMetadata(width=width, height=height, num_channels=3),
                                 ground_truth=fo.Detections(detections=boxes),
                                 captions=fo.Classification(label=scene.caption)))  # fmt: skip
    dataset.add_samples(samples, progress=False)


def build_data(args, work: Path):
    import fiftyone as fo
    import numpy as np

    from fiftyone_florence2 import scenes

    rng = np.random.default_rng(args.seed)
    # Each sample gives one example per task, and a step takes batch_size examples in order.
    per_step = max(1, args.batch_size // len(tasks(args)))
    train = []
    for i in range(args.images or args.steps * per_step):
        train.append(scenes.draw_scene(rng, **stage_options(i // per_step, args.easy_steps, args.fade_steps, rng)))
    dataset = fo.Dataset()
    write_scenes(train, work / "train", dataset)
    write_scenes(scenes.draw_scenes(args.val_images, seed=args.seed + 10_000), work / "val", dataset,
                 start=len(train), tags=[VAL_TAG])  # fmt: skip
    test = fo.Dataset()
    write_scenes(scenes.draw_scenes(args.test_images, seed=args.seed + 20_000), work / "test", test)
    return dataset, test


NEW_COLOUR = {"purple": (150, 60, 190)}
# A training run's own records, which say nothing about the shipped model.
SKIPPED = ("training.json", "florence2-manifest.json")


def new_kind_datasets(directory: Path, train_images: int, test_images: int, seed: int = 0):
    """Scenes of a kind the seeing model never saw (its shapes in purple, a colour it was not shown): a training
    dataset and a held-out one, from different seeds."""
    import fiftyone as fo

    from fiftyone_florence2 import scenes

    made = []
    for name, count, offset in (("train", train_images, 0), ("test", test_images, 1)):
        dataset = fo.Dataset()
        write_scenes(scenes.draw_scenes(count, seed=seed + offset, colours=NEW_COLOUR), directory / name, dataset)
        made.append(dataset)
    return made[0], made[1]


def held_out_map(test, checkpoint: str, field: str = "predictions", gt_field: str = "ground_truth") -> float:
    """mAP@0.5 of ``checkpoint``'s greedy detections on ``test`` against ``gt_field`` (``evaluate_detections``)."""
    from fiftyone_florence2 import load_model

    test.apply_model(load_model(DETECTION, model=checkpoint, num_beams=1), label_field=field, batch_size=16)
    return float(test.evaluate_detections(field, gt_field=gt_field, compute_mAP=True, iou_threshs=[0.5]).mAP())


def score(test, checkpoint: str, caption: bool) -> dict:
    """Labels the test scenes with ``checkpoint`` (greedy) and scores boxes and captions."""
    from fiftyone_florence2 import load_model, scenes

    start = time.perf_counter()
    test.apply_model(load_model(DETECTION, model=checkpoint, num_beams=1), label_field="predictions",
                     batch_size=16)  # fmt: skip
    result = test.evaluate_detections("predictions", gt_field="ground_truth", eval_key="eval50",
                                      compute_mAP=True, iou_threshs=[0.5])  # fmt: skip
    present = sorted({label for labels in test.values("ground_truth.detections.label") for label in labels})
    found = {
        "images": len(test),
        "objects": sum(len(labels) for labels in test.values("ground_truth.detections")),
        "predicted": sum(len(d or []) for d in test.values("predictions.detections")),
        "map_50": result.mAP(),
        "per_class_ap": {name: result.mAP(classes=[name]) for name in present},
        "classes": scenes.classes(),
    }
    if caption:
        test.apply_model(load_model(CAPTION, model=checkpoint, num_beams=1), label_field="caption_pred",
                         batch_size=16)  # fmt: skip
        pairs = list(zip(test.values("caption_pred.label"), test.values("captions.label")))
        found["caption_exact"] = sum(p == e for p, e in pairs) / len(pairs)
        found["caption_examples"] = pairs[:5]
    found["label_seconds"] = time.perf_counter() - start
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = report.isolated_work(args.workdir, "florence2-train-seeing-", args.threads)
    import fiftyone_florence2 as f2
    from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

    load = os.getloadavg()[0]
    if args.finetune_check:
        return finetune_check(args, work, load)
    if args.start:
        start = Path(args.start)
    else:
        start = build_random_checkpoint(work / "start", "seeing", seed=args.seed)
        if not args.no_smooth_codes:
            smooth_position_codes(start, args.seed)
    began = time.perf_counter()
    dataset, test = build_data(args, work)
    data_seconds = time.perf_counter() - began
    fields = {DETECTION: "ground_truth", CAPTION: "captions"}
    result = f2.train(dataset.sort_by("order"), task=tasks(args), label_field={t: fields[t] for t in tasks(args)},
                      output_dir=str(work / "run"), model=str(start), max_steps=args.steps,
                      batch_size=args.batch_size, learning_rate=args.learning_rate, lr_schedule="cosine",
                      warmup=0.0, max_grad_norm=0, shuffle=bool(args.images), val_tag=VAL_TAG,
                      save_steps=max(1, args.steps // args.evaluations), keep_checkpoints=1, seed=args.seed,
                      device="cpu", overwrite=True, progress=False,
                      on_progress=lambda e: print(json.dumps(e), flush=True))  # fmt: skip
    scores = score(test, result.output_dir, args.caption)
    summary = {"args": vars(args), "scores": scores, "steps": result.steps, "train_minutes": result.seconds / 60,
               "data_seconds": data_seconds, "load_before": load, "best": result.best,
               "conditions": report.conditions(load)}  # fmt: skip
    (work / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str))
    if args.start and (Path(args.start) / "measured.json").is_file():
        summary["continued_from"] = json.loads((Path(args.start) / "measured.json").read_text())
    if args.install:
        install(Path(result.output_dir), summary)
    return 0


def finetune_check(args, work: Path, load: float) -> int:
    """Fine-tunes the shipped model through ``train()`` on purple shapes (a colour it never saw) and publishes
    mAP@0.5 on held-out purple scenes before and after (the recipe of tests/test_seeing_finetune.py)."""
    import fiftyone_florence2 as f2

    steps = args.finetune_steps
    began = time.perf_counter()
    train, test = new_kind_datasets(work / "new-kind", train_images=steps * 8, test_images=args.test_images)
    before = held_out_map(test, f2.SEEING_NAME)
    result = f2.train(train, task=DETECTION, output_dir=str(work / "finetuned"), model=f2.SEEING_NAME,
                      max_steps=steps, batch_size=8, learning_rate=1e-3, lr_schedule="cosine", max_grad_norm=0,
                      save_steps=steps, seed=args.seed, device="cpu", overwrite=True, progress=False)  # fmt: skip
    after = held_out_map(test, result.output_dir)
    total = time.perf_counter() - began
    shown = " ".join(sys.argv[1:])
    lines = [
        "## Fine-tuning the shipped seeing model on a kind of image it never saw, CPU",
        "",
        f"`python -m benchmarks.train_seeing {shown}`: `florence2-seeing-tiny` fine-tuned through `train()` "
        f"on {len(train)} scenes of its three shapes in purple, a colour it was never shown ({steps} steps, "
        "batch 8, AdamW lr 1e-3, cosine, no clipping), then scored on "
        f"{len(test)} held-out purple scenes from another seed, labelled by `apply_model` (greedy). "
        f"{report.conditions(load)}",
        "",
        "| measure | result |",
        "|---|---|",
        f"| mAP@0.5 before fine-tuning | {before:.3f} |",
        f"| mAP@0.5 after | {after:.3f} |",
        f"| `train()` wall time | {result.seconds:.0f} s |",
        f"| whole check (data, two labelling passes, training) | {total:.0f} s |",
        "",
    ]
    report.publish(lines, args.output, "seeing-finetune")
    return 0


def install(run: Path, summary: dict) -> None:
    """Copies the checkpoint's model, config and processor files into the package, beside its recipe."""
    from fiftyone_florence2.core.seeing import SEEING_DIR

    SEEING_DIR.mkdir(exist_ok=True)
    for path in run.iterdir():
        if path.is_file() and path.suffix in (".json", ".safetensors", ".txt") and path.name not in SKIPPED:
            shutil.copy2(path, SEEING_DIR / path.name)
    (SEEING_DIR / "measured.json").write_text(json.dumps(summary, indent=1, default=str))
    (SEEING_DIR / "RECIPE.md").write_text(recipe(summary))


if __name__ == "__main__":
    sys.exit(main())

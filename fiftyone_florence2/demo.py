"""``florence2 demo``: the main job, offline-friendly.

Draws a few images, labels them with captions, objects and text regions, and
prints how to open them in the App. With the Hub out of reach it says so,
names the option for a local checkpoint, and runs the same pipeline on a
random-weight checkpoint so that every step still runs (its labels mean nothing).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from fiftyone_florence2.core.checkpoints import hub_reachable, looks_like_path
from fiftyone_florence2.core.options import DEFAULT_LABEL_PREFIX

DEMO_TASKS = ["caption", "detection", "ocr_with_region"]
_SCENES = [
    ("skyblue", [("rect", (60, 260, 300, 420), "red"), ("ellipse", (380, 80, 560, 260), "yellow")], "STOP"),
    ("lightgreen", [("rect", (100, 100, 540, 380), "gray"), ("ellipse", (250, 300, 330, 380), "black")], "BUS 42"),
    ("white", [("rect", (40, 40, 600, 120), "navy")], "OPEN 24 HOURS"),
    ("lightblue", [("ellipse", (200, 120, 440, 360), "orange")], "SALE"),
    ("beige", [("rect", (80, 200, 240, 440), "brown"), ("rect", (400, 200, 560, 440), "brown")], "EXIT"),
    ("darkgreen", [("ellipse", (60, 60, 300, 300), "white"), ("ellipse", (340, 180, 580, 420), "white")], "ZOO"),
]


def draw_images(folder: str | Path) -> list[str]:
    """Writes the demo images (640x480 JPEGs) into ``folder``; returns their paths."""
    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (background, shapes, text) in enumerate(_SCENES):
        image = Image.new("RGB", (640, 480), background)
        draw = ImageDraw.Draw(image)
        for kind, box, color in shapes:
            (draw.rectangle if kind == "rect" else draw.ellipse)(box, fill=color, outline="black", width=3)
        draw.text((40, 440), text, fill="black", font_size=32)
        path = folder / f"scene_{i}.jpg"
        image.save(path, quality=92)
        paths.append(str(path))
    return paths


def run_demo(args: argparse.Namespace) -> int:
    from fiftyone_florence2.runs.folders import dataset_for_images
    from fiftyone_florence2.runs.labelling import label_samples
    from fiftyone_florence2.runs.model import load_model
    from fiftyone_florence2.runs.summary import describe_run

    draw_images(args.images_dir)
    dataset = dataset_for_images(args.images_dir, args.dataset_name)
    checkpoint, field = args.model, DEFAULT_LABEL_PREFIX
    if not looks_like_path(checkpoint) and not hub_reachable(checkpoint):
        print(
            f"The Hugging Face Hub is not reachable, so {checkpoint} cannot be downloaded; "
            "pass a local checkpoint with --model /path/to/checkpoint."
        )
        from fiftyone_florence2.engine.random_checkpoint import build_random_checkpoint

        checkpoint = str(build_random_checkpoint(Path(tempfile.mkdtemp(prefix="florence2-random-")), "tiny"))
        field = "random_weights"
        print(
            "Running the same pipeline on a random-weight checkpoint instead: every step runs, "
            f"but its labels (fields {field}_*) mean nothing."
        )
    # Random weights rarely stop by themselves: keep their answers short.
    budget = {"max_new_tokens": 32} if field == "random_weights" else {}
    model = load_model(DEMO_TASKS, model=checkpoint, device=args.device, num_beams=1, **budget)
    summary = label_samples(dataset, model, label_field=field, overwrite=True, progress=True)
    print(describe_run(dataset, summary, model.config.label_types))
    print(f"Open it in the App:  fiftyone app launch {dataset.name}")
    return 0

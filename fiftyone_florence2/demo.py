"""``florence2 demo``: the main job, offline-friendly.

Draws a few images, labels them, and prints how to open them in the App. With
the Hub reachable (or a local ``--model``) it labels six drawn street-sign
scenes with captions, objects and text regions. With the Hub out of reach it
says so, names the option for a local checkpoint, and labels drawn shapes
with the shipped ``florence2-seeing-tiny`` model instead, the one kind of
image that model learnt: real boxes with confidences.

The images live in a folder the demo owns, under FiftyOne's default dataset
directory (the same one from any working directory), and the demo's dataset
holds exactly the images of its run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from fiftyone_florence2.core.checkpoints import hub_reachable, looks_like_path
from fiftyone_florence2.core.options import DEFAULT_LABEL_PREFIX

DEMO_TASKS = ["caption", "detection", "ocr_with_region"]
SEEING_TASKS = ["detection"]  # the one task it learnt
SEEING_FIELD = "seeing"
SEEING_IMAGES, SEEING_SEED = 8, 7
# Marks a dataset the demo made: only such a dataset may have its samples replaced by a later run.
DEMO_INFO_KEY = "florence2_demo"
SEEING_NOTE = (
    "Labelling {count} drawn images with florence2-seeing-tiny instead (fields {field}_*): a 585k-parameter "
    "model shipped with this package that learnt to box and name red, green, blue and yellow circles, "
    "squares and triangles on plain, gradient and noisy backgrounds. It is not Florence-2: it knows nothing "
    "else, its labels on photographs mean nothing, and its speed says nothing about Florence-2's."
)
_SCENES = [
    ("skyblue", [("rect", (60, 260, 300, 420), "red"), ("ellipse", (380, 80, 560, 260), "yellow")], "STOP"),
    ("lightgreen", [("rect", (100, 100, 540, 380), "gray"), ("ellipse", (250, 300, 330, 380), "black")], "BUS 42"),
    ("white", [("rect", (40, 40, 600, 120), "navy")], "OPEN 24 HOURS"),
    ("lightblue", [("ellipse", (200, 120, 440, 360), "orange")], "SALE"),
    ("beige", [("rect", (80, 200, 240, 440), "brown"), ("rect", (400, 200, 560, 440), "brown")], "EXIT"),
    ("darkgreen", [("ellipse", (60, 60, 300, 300), "white"), ("ellipse", (340, 180, 580, 420), "white")], "ZOO"),
]


def demo_folder() -> Path:
    """The demo's own folder, under FiftyOne's default dataset directory: one place whatever the working
    directory."""
    import fiftyone as fo

    return Path(fo.config.default_dataset_dir).expanduser().resolve() / "florence2-demo"


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


def draw_shape_images(folder: str | Path, count: int = SEEING_IMAGES, seed: int = SEEING_SEED) -> list[str]:
    """Writes ``count`` scenes of the kind florence2-seeing-tiny learnt (PNGs, from a fixed seed) into ``folder``;
    returns their paths."""
    from fiftyone_florence2.scenes import draw_scenes

    folder = Path(folder).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, scene in enumerate(draw_scenes(count, seed=seed)):
        path = folder / f"shapes_{i}.png"
        scene.image.save(path)
        paths.append(str(path))
    return paths


def check_demo_name(name: str) -> None:
    """Raises ``ValueError`` when ``name`` is a dataset an earlier demo did not make (the demo replaces its
    samples)."""
    import fiftyone as fo

    if fo.dataset_exists(name) and not fo.load_dataset(name).info.get(DEMO_INFO_KEY):
        raise ValueError(f"--dataset-name {name!r} is a dataset the demo did not make; pass another name.")


def demo_dataset(name: str, paths: list[str]) -> Any:
    """The persistent dataset ``name`` holding exactly ``paths``, with their metadata: created, or brought to
    ``paths`` when an earlier demo made it. Raises ``ValueError`` for a dataset the demo did not make."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    check_demo_name(name)
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        dataset.delete_samples(dataset.match(~F("filepath").is_in(paths)))
    else:
        dataset = fo.Dataset(name, persistent=True)
        dataset.info[DEMO_INFO_KEY] = True
        dataset.save()
    known = set(dataset.values("filepath"))
    dataset.add_samples([fo.Sample(filepath=p) for p in paths if p not in known], progress=False)
    dataset.compute_metadata(overwrite=True, progress=False)  # the images are redrawn each run
    return dataset


def run_demo(args: argparse.Namespace) -> int:
    from fiftyone_florence2.app import app_command
    from fiftyone_florence2.core.seeing import SEEING_NAME, seeing_checkpoint
    from fiftyone_florence2.runs.labelling import label_samples
    from fiftyone_florence2.runs.model import load_model
    from fiftyone_florence2.runs.summary import describe_run

    check_demo_name(args.dataset_name)  # before anything is drawn
    checkpoint, tasks, field, budget = args.model, DEMO_TASKS, DEFAULT_LABEL_PREFIX, {}
    if looks_like_path(checkpoint) or hub_reachable(checkpoint):
        paths = draw_images(args.images_dir or demo_folder() / "scenes")
    else:
        print(
            f"The Hugging Face Hub is not reachable, so {checkpoint} cannot be downloaded; "
            "pass a local checkpoint with --model /path/to/checkpoint."
        )
        paths = draw_shape_images(args.images_dir or demo_folder() / "shapes")
        print(SEEING_NOTE.format(count=len(paths), field=SEEING_FIELD))
        checkpoint, tasks, field = str(seeing_checkpoint()), SEEING_TASKS, SEEING_FIELD
        budget = {"max_new_tokens": 64}  # its answers are a few boxes
    dataset = demo_dataset(args.dataset_name, paths)
    model = load_model(tasks, model=checkpoint, device=args.device, num_beams=1, **budget)
    summary = label_samples(dataset, model, label_field=field, overwrite=True, progress=True)
    speed_of = SEEING_NAME if field == SEEING_FIELD else args.model
    print(describe_run(dataset, summary, model.config.label_types, model_name=speed_of))
    print(f"Open it in the App:  {app_command(dataset.name)}")
    return 0

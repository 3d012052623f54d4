"""A folder of images as a persistent FiftyOne dataset, for the command line, the demo and scripts."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def find_images(folder: str) -> list[str]:
    """Image files below ``folder``, by extension, sorted; raises ``ValueError`` when there are none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"--images {folder!r} is not a folder.")
    paths = sorted(str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise ValueError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder!r}.")
    return paths


def folder_dataset_name(folder: str) -> str:
    """The default dataset name for a folder: its own name."""
    return Path(folder).expanduser().resolve().name


def add_images(name: str, paths: list[str]) -> fo.Dataset:
    """Creates the persistent dataset ``name`` if needed, and adds the paths it does not hold yet."""
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        known = set(dataset.values("filepath"))
        paths = [p for p in paths if p not in known]
    else:
        dataset = fo.Dataset(name, persistent=True)
    if paths:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return dataset


def dataset_for_images(folder: str, name: str | None = None) -> fo.Dataset:
    """A persistent dataset holding every image of ``folder``; only new files are added to an existing one."""
    return add_images(name or folder_dataset_name(folder), find_images(folder))

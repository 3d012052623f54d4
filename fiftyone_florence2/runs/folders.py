"""A folder of images as a persistent FiftyOne dataset, for the command line, the demo and scripts.

A dataset made from a folder records that folder in ``dataset.info`` (under
:data:`SOURCE_KEY`), so that another folder of the same name (a second
``./photos``) does not silently join it.
"""

from __future__ import annotations

import os
from pathlib import Path

import fiftyone as fo
from fiftyone import ViewField as F

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
# The key of dataset.info that holds the absolute folder a dataset was made from.
SOURCE_KEY = "florence2_images_folder"


def find_images(folder: str) -> list[str]:
    """Image files below ``folder``, by extension, sorted; raises ``ValueError`` when there are none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"--images {folder!r} is not a folder.")
    paths = sorted(str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise ValueError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found in {folder!r}.")
    return paths


def absolute_folder(folder: str) -> str:
    """``folder`` as an absolute path, links resolved: the form :data:`SOURCE_KEY` records."""
    return str(Path(folder).expanduser().resolve())


def folder_dataset_name(folder: str) -> str:
    """The default dataset name for a folder: its own name."""
    return Path(absolute_folder(folder)).name


def folder_conflict(name: str, folder: str) -> str | None:
    """Why adding ``folder``'s images to the existing dataset ``name`` would mix two sources, or None.

    A dataset that records its folder must record this one. One made before
    folders were recorded, or not from a folder, holds no record: it conflicts
    when any of its images lies outside ``folder``.
    """
    if not fo.dataset_exists(name):
        return None
    dataset, root = fo.load_dataset(name), absolute_folder(folder)
    recorded = dataset.info.get(SOURCE_KEY)
    if recorded is not None:
        return None if recorded == root else f"Dataset {name!r} was made from {recorded}, not {root}"
    inside = root.rstrip(os.sep) + os.sep
    outside = dataset.match(~F("filepath").starts_with(inside)).limit(1).values("filepath")
    return f"Dataset {name!r} holds images from outside {root} (such as {outside[0]})" if outside else None


def add_images(name: str, paths: list[str], folder: str | None = None) -> fo.Dataset:
    """Creates the persistent dataset ``name`` if needed (recording ``folder``, if given, as its source), and
    adds the paths it does not hold yet."""
    if fo.dataset_exists(name):
        dataset = fo.load_dataset(name)
        known = set(dataset.values("filepath"))
        paths = [p for p in paths if p not in known]
    else:
        dataset = fo.Dataset(name, persistent=True)
        if folder is not None:
            dataset.info[SOURCE_KEY] = absolute_folder(folder)
            dataset.save()
    if paths:
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
    return dataset


def dataset_for_images(folder: str, name: str | None = None, add: bool = False) -> fo.Dataset:
    """A persistent dataset holding every image of ``folder``; only new files are added to an existing one.

    An existing dataset made from another folder is refused unless ``add``.
    """
    name = name or folder_dataset_name(folder)
    conflict = None if add else folder_conflict(name, folder)
    if conflict:
        raise ValueError(f"{conflict}: pass another name=, or add=True to add these images to it.")
    return add_images(name, find_images(folder), folder)

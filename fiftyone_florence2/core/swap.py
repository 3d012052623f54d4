"""The one step that replaces the files of a fine-tuned checkpoint directory, and its journal.

A fine-tuning run stages its new checkpoint in ``.florence2-staging/`` inside
the directory, writes a journal of the swap, then moves the files into place
and deletes the journal. A kill part way leaves the journal: whatever opens the
directory next (the next run, or anything that loads the checkpoint) finishes
the swap first, so the directory always loads as one run's checkpoint. Every
step can be repeated. ``training.output`` owns every other rule about the
directory; this module is here so that the model layer can finish a swap.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
from pathlib import Path
from typing import Any

MANIFEST = "florence2-manifest.json"
STAGING = ".florence2-staging"
# Inside the staging directory: the finished native checkpoint.
STAGED_MODEL = "model"
# Written when the final swap starts and removed when it ends.
JOURNAL = ".florence2-commit.json"
# Where a training run keeps its resume points (transformers' resumable ``checkpoint-N`` folders), inside its
# output directory. The folder keeps the name earlier releases gave it, so that their runs still resume.
RESUME_DIR = "checkpoints"


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Writes ``value`` whole or not at all (a kill leaves the previous file)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1, default=str))
    os.replace(partial, path)


def manifest_files(path: Path) -> list[str]:
    """The names the last finished run (or conversion) wrote into ``path`` (its manifest), and the manifest."""
    manifest = read_json(path / MANIFEST)
    return [*manifest.get("files", []), MANIFEST] if manifest else []


def foreign_entries(path: Path, patterns: tuple[str, ...]) -> list[str]:
    """Entries of ``path`` matching ``patterns`` (what a writer would put there) that no manifest lists."""
    if not path.is_dir():
        return []
    ours = set(manifest_files(path))
    matching = (name for name in os.listdir(path) if any(fnmatch.fnmatchcase(name, p) for p in patterns))
    return sorted(name for name in matching if name not in ours)


def file_above(path: Path) -> Path | None:
    """The file at ``path`` or at the nearest existing folder above it, if that is a file (not a folder)."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def remove_entry(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    elif entry.exists() or entry.is_symlink():
        entry.unlink()


def finish_swap(path: Path) -> None:
    """Carries out (or finishes, after a kill) the swap the journal describes; every step can be repeated.

    The new weights are moved in after the files they come with, and the old run's other files removed
    only then, so that a kill part way leaves weights with a configuration beside them."""
    journal = read_json(path / JOURNAL)
    if journal is None:
        return
    staging, new = path / STAGING, journal["files"]
    if (staging / RESUME_DIR).is_dir():
        remove_entry(path / RESUME_DIR)
        os.replace(staging / RESUME_DIR, path / RESUME_DIR)
    for name in sorted(new, key=lambda name: name.endswith(".safetensors")):
        if (staging / STAGED_MODEL / name).exists():
            os.replace(staging / STAGED_MODEL / name, path / name)
    for name in journal["replaces"]:  # the old run's files the new one does not replace go last
        if name not in new:
            remove_entry(path / name)
    write_json(path / MANIFEST, {"files": new, "settings": journal["settings"]})
    (path / JOURNAL).unlink()
    remove_entry(staging)

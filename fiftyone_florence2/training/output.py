"""The fine-tuning output directory, and every rule about it: what a run may write, replace, resume and lock.

A run writes nothing in place. It stages its resume points (the trainer's
resumable ``checkpoint-N`` folders, in ``checkpoints/``) and then its native
checkpoint (the weights ``load_model`` loads) in ``.florence2-staging/`` inside the output directory,
and only once the checkpoint is complete does it move the files into place
(:func:`commit`). ``florence2-manifest.json`` lists exactly the files the last
finished run put there: those, and the staging directory, are the only things
a run ever deletes. Anything else in the folder stays; a run that would
overwrite such a file is refused before it starts, naming it. One run at a
time: a lock in the dataset's database (as labelling locks its fields) names
the run, host and pid holding the directory. No torch here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.errors import OptionError, literal
from fiftyone_florence2.core.swap import (
    JOURNAL,
    MANIFEST,
    STAGED_MODEL,
    STAGING,
    file_above,
    finish_swap,
    foreign_entries,
    manifest_files,
    read_json,
    remove_entry,
    write_json,
)
from fiftyone_florence2.runs.locks import FieldLockedError, FieldLocks, holder_text, live_holders
from fiftyone_florence2.training.options import RESUME_DIR, TRAIN

RUN_SETTINGS = "florence2-run.json"
TRAINING_RECORD = "training.json"
# Names a run's native checkpoint may hold (transformers' save_pretrained of the model and its processor).
CHECKPOINT_NAMES = (
    "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
    "model-*-of-*.safetensors", "processor_config.json", "preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
    "chat_template.jinja", "chat_template.json", TRAINING_RECORD, RESUME_DIR, MANIFEST,
)  # fmt: skip
# Options a resume must share with its checkpoint: the weights' shapes and the optimizer's state follow them.
MUST_MATCH = ("model", "revision", "lora", "lora_rank", "lora_alpha", "freeze_vision")
# Options a resume may change; the record notes each change.
SCHEDULE = ("epochs", "max_steps", "batch_size", "grad_accum", "learning_rate", "lr_schedule", "warmup",
            "weight_decay", "max_grad_norm", "seed", "save_steps", "keep_checkpoints", "shuffle")  # fmt: skip
_LOCK_SPACE = "florence2-output-dir"


def _refusal(template: str) -> OptionError:
    """A refusal naming the output directory's controls in each route's words (``{output_dir:name}``,
    ``{overwrite}``, ``{resume}``); user text goes in through :func:`literal`."""
    return OptionError(template, *(TRAIN[name] for name in ("output_dir", "overwrite", "resume")))


def in_the_way(path: Path) -> list[str]:
    """Entries of ``path`` that a run would write over but no run of ours wrote (no manifest lists them)."""
    return foreign_entries(path, CHECKPOINT_NAMES)


def media_dirs(samples: Any) -> set[Path]:
    """The resolved folders holding the media of ``samples``' dataset."""
    return {Path(folder).resolve() for folder in {os.path.dirname(p) for p in samples._dataset.values("filepath")}}


def check_output_dir(output_dir: str, overwrite: bool, resume: bool, media: Iterable[Path] = ()) -> Path:
    """The resolved output directory, if a run may write there; else an :class:`OptionError` naming the
    control to change. ``media``: the folders of the collection's media, which a run never writes into."""
    path = Path(output_dir).expanduser().resolve()
    named = "{output_dir:name} " + literal(repr(str(path)))
    blocker = file_above(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"lies under the file {str(blocker)!r}"
        raise _refusal(f"{named} {literal(what)}: choose a directory.")
    holding = [folder for folder in media if folder == path or path in folder.parents]
    if holding:
        raise _refusal(
            f"{named} holds the images being trained on (in {literal(repr(str(holding[0])))}): "
            "choose a directory of its own."
        )
    foreign = in_the_way(path)
    if foreign:
        raise _refusal(
            f"{named} holds {literal(', '.join(foreign[:5]))}, which no training run wrote "
            "there and a run would replace: move them, or choose another directory."
        )
    if resume:
        if resume_point_of(path) is None:
            raise ValueError(f"Nothing to resume in {str(path)!r}: it holds no complete resumable checkpoint.")
    elif (manifest_files(path) or (path / STAGING).exists()) and not overwrite:
        raise _refusal(
            f"{named} holds a training run's output: pass {{overwrite}} to "
            "replace it, {resume} to go on from its last checkpoint, or choose another directory."
        )
    return path


# A resume point: one of transformers' resumable ``checkpoint-N`` folders (model, optimizer, scheduler, RNG and
# data position), as opposed to the native checkpoint a run writes for ``load_model``.
ResumePoint = Path


def _step(point: ResumePoint) -> int:
    return int(point.name.rsplit("-", 1)[1])


def resume_points(folder: Path) -> list[ResumePoint]:
    """The resume points (``checkpoint-N`` folders) in ``folder``, newest first."""
    found = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.rsplit("-", 1)[1].isdigit()]
    return sorted(found, key=_step, reverse=True)


def last_resume_point(folder: Path) -> ResumePoint | None:
    """The newest resume point whose trainer state (written last) reads back; a run killed while saving
    leaves a newer, incomplete one, which this passes over."""
    for point in resume_points(folder):
        state = read_json(point / "trainer_state.json")
        if state is not None and "global_step" in state:
            return point
    return None


def incomplete_resume_points(folder: Path) -> list[ResumePoint]:
    """The resume points newer than the last complete one: what a kill during a save left."""
    last = last_resume_point(folder)
    newest = -1 if last is None else _step(last)
    return [point for point in resume_points(folder) if _step(point) > newest]


def resume_point_of(path: Path) -> ResumePoint | None:
    """The resume point a resume of the output directory ``path`` goes on from: an unfinished run's newest,
    else the finished run's newest."""
    staged = last_resume_point(path / STAGING / RESUME_DIR)
    if staged is not None:
        return staged
    return last_resume_point(path / RESUME_DIR) if RESUME_DIR in manifest_files(path) else None


def _settings_of(point: ResumePoint, path: Path) -> dict[str, Any]:
    """The options of the run that wrote ``point``: the staged run's, else the finished run's manifest."""
    staged = read_json(path / STAGING / RUN_SETTINGS)
    if staged is not None and path / STAGING in point.parents:
        return staged
    return (read_json(path / MANIFEST) or {}).get("settings", {})


def resume_changes(path: Path, settings: dict[str, Any]) -> dict[str, list[Any]]:
    """``{option: [before, now]}`` for the schedule options a resume changes; ``ValueError`` naming the first
    option that no resume may change (the checkpoint's weights or optimizer would not fit)."""
    point = resume_point_of(path)
    before = _settings_of(point, path) if point is not None else {}
    for name in MUST_MATCH:
        if name in before and before[name] != settings.get(name):
            raise _refusal(
                f"Cannot resume: {literal(name)} was {literal(repr(before[name]))} and is now "
                f"{literal(repr(settings.get(name)))}; resume with the same {literal(name)}, or pass {{overwrite}} "
                "to start again."
            )
    return {name: [before[name], settings.get(name)] for name in SCHEDULE if name in before
            and before[name] != settings.get(name)}  # fmt: skip


def start_staging(path: Path, settings: dict[str, Any], resume: bool) -> Path:
    """The staging directory of a run, made ready: an interrupted swap finished first; a new run's stale
    staging removed; a half-written native checkpoint and half-written resume points removed."""
    finish_swap(path)
    staging = path / STAGING
    if not resume:
        remove_entry(staging)
    remove_entry(staging / STAGED_MODEL)
    for partial in incomplete_resume_points(staging / RESUME_DIR):
        print(f"florence2 train: removing {partial.name}, which a killed run left half-written")
        shutil.rmtree(partial)
    staging.mkdir(parents=True, exist_ok=True)
    write_json(staging / RUN_SETTINGS, settings)
    return staging


def discard_staging(path: Path) -> None:
    """Removes the staging directory (a failed run's output, which nothing should resume from)."""
    remove_entry(path / STAGING)


def commit(path: Path, settings: dict[str, Any]) -> list[str]:
    """Moves the staged checkpoint into place, replacing the last finished run's files, and returns the
    names now listed in the manifest. A file no run wrote is never replaced: the staging stays instead."""
    staging = path / STAGING
    new = sorted(os.listdir(staging / STAGED_MODEL))
    if (staging / RESUME_DIR).is_dir():
        new.append(RESUME_DIR)
    ours = set(manifest_files(path))
    foreign = [name for name in new if (path / name).exists() and name not in ours]
    if foreign:
        raise RuntimeError(
            f"{', '.join(foreign)} appeared in {str(path)!r} during the run; the new checkpoint is kept in "
            f"{str(staging)!r} and nothing was replaced."
        )
    write_json(path / JOURNAL, {"files": new, "replaces": sorted(ours - {MANIFEST}), "settings": settings})
    finish_swap(path)
    return new


class OutputDirLock(FieldLocks):
    """The lock of one output directory, held by one training run (``run_key``)."""

    def __init__(self, path: Path, run_key: str):
        super().__init__(_LOCK_SPACE, [str(path)], run_key)

    def refusal(self, name: str, current: dict, holder: dict) -> str:
        """The refusal's :class:`OptionError` template (the callers below raise it)."""
        return (
            f"{{output_dir:name}} {literal(repr(name))} is being written by training run "
            f"{literal(repr(current['run_key']))} ({literal(holder_text(current, holder))}). Wait for it to "
            "finish, or choose another directory."
        )


@contextlib.contextmanager
def locked_output(path: Path, run_key: str):
    """Holds ``path``'s lock while the block runs; an :class:`OptionError` naming the run that holds it."""
    lock = OutputDirLock(path, run_key)
    try:
        lock.acquire()
    except FieldLockedError as error:
        raise _refusal(str(error)) from None
    try:
        yield lock
    finally:
        lock.release()


def check_unlocked(path: Path) -> None:
    """An :class:`OptionError` naming the live training run that holds ``path``, if one does (a form's early
    check; the run itself takes the lock)."""
    current, alive = live_holders(f"{_LOCK_SPACE}:{path}")
    if alive:
        raise _refusal(OutputDirLock(path, current["run_key"]).refusal(str(path), current, alive[0]))


def writer_alive(output_dir: str, run_key: str) -> bool:
    """Whether the training run ``run_key`` still holds ``output_dir``'s lock and runs."""
    current, alive = live_holders(f"{_LOCK_SPACE}:{output_dir}")
    if current is None:
        return False
    holds = current["run_key"] == run_key or any(h.get("record") == run_key for h in current["holders"].values())
    return holds and bool(alive)

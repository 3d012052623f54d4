"""Labelling a dataset or view safely: checks first, a snapshot of sample ids, bulk writes read back.

This is what the command line and the App operators run. Compared with
``apply_model`` it checks every field before any model work, never
overwrites labels unless asked, fills only the fields a sample lacks with
``skip_existing``, records why each failed sample failed (an unreadable file
included), counts a sample as labelled only once its label is read back from
the database, and can split a run into shards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fiftyone.core.utils as fou
from bson import ObjectId

from .batching import Florence2Error, Outcome
from .checks import (
    Targets,
    check_label_field,
    check_run,
    frames_to_label,
    is_frames,
    shard_ids,
    target_ids,
    written_fields,
)
from .items import Item, load_item, set_crop
from .locks import locked
from .model import Florence2Model
from .options import default_label_field, whole_number
from .patches import is_patches, patch_fields, source_paths, store_patch_column
from .provenance import finish_run, mark_interrupted, new_run_key, record_progress, start_run

__all__ = ["Summary", "check_label_field", "check_run", "label_samples", "preview_samples", "similarity_hint"]

Progress = Callable[[int, int], None]


@dataclass
class Summary:
    """What a run did, one count per target sample.

    ``targeted`` = ``labelled`` + failed (``failures``) + skipped for want of
    input (``skips``) + ``deleted`` (gone before their labels were written).
    ``skipped`` counts the samples left out because they had every label already;
    ``embedded``, the embeddings stored in ``embeddings_field`` (and read back).
    """

    label_fields: dict[str, str]
    run_key: str | None = None
    targeted: int = 0
    labelled: int = 0
    skipped: int = 0
    deleted: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    skips: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    embeddings_field: str | None = None
    embedded: int = 0

    @property
    def images_per_second(self) -> float:
        done = self.labelled + len(self.failures) + len(self.skips)
        return done / self.seconds if self.seconds > 0 else 0.0

    def headline(self, label_types: dict[str, str], model_name: str | None = None) -> str:
        """One line: what was written where, how fast (with ``model_name``, the model the speed belongs to)."""
        fields = ", ".join(f"{name} ({label_types[task]})" for task, name in self.label_fields.items())
        speed = f"{self.images_per_second:.2f} images/s" + (f" with {model_name}" if model_name else "")
        return f"Labelled {self.labelled} of {self.targeted} sample(s) in {self.seconds:.1f} s ({speed}) into {fields}."

    def report(self, paths: dict[str, str], label_types: dict[str, str], shown: int = 20,
               model_name: str | None = None) -> list[str]:  # fmt: skip
        """The lines a person reads after a run; ``paths`` maps sample ids to file paths."""
        lines = [self.headline(label_types, model_name)]
        if self.skipped:
            lines.append(f"Skipped {self.skipped} sample(s) that already had every label.")
        if self.deleted:
            lines.append(f"{self.deleted} sample(s) were deleted during the run.")
        if self.embeddings_field:
            hint = f" {similarity_hint(self.embeddings_field)}" if self.embedded else ""
            lines.append(f"Stored {self.embedded} embedding(s) in {self.embeddings_field}.{hint}")
        for title, reasons in (("could not be labelled", self.failures), ("had nothing to read", self.skips)):
            if reasons:
                lines.append(f"{len(reasons)} sample(s) {title}:")
                lines += [f"  {paths.get(i, i)}: {reason}" for i, reason in list(reasons.items())[:shown]]
                if len(reasons) > shown:
                    lines.append(f"  ... and {len(reasons) - shown} more")
        return lines


def similarity_hint(embeddings_field: str) -> str:
    """The call that builds a similarity index on stored embeddings, to copy into Python."""
    return (
        "Build a similarity index on them with (import fiftyone.brain as fob) "
        f'fob.compute_similarity(dataset, embeddings="{embeddings_field}", brain_key="{embeddings_field}_sim").'
    )


def describe_run(dataset: Any, summary: Summary, label_types: dict[str, str], model_name: str | None = None) -> str:
    """What a run wrote where (and with ``model_name``, which model its speed belongs to), and what failed or was
    skipped and why, by file path."""
    reasons = [*summary.failures, *summary.skips]
    paths = dict(zip(*dataset.select(reasons).values(["id", "filepath"]))) if reasons else {}
    return "\n".join(summary.report(paths, label_types, model_name=model_name))


def label_samples(
    samples: Any,
    model: Florence2Model,
    label_field: str | None = None,
    batch_size: int | None = None,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool | Progress | None = None,
    workers: int = 4,
    run_key: str | None = None,
    record: bool = True,
    embeddings_field: str | None = None,
    fps: float | None = None,
    frame_step: int = 1,
) -> Summary:
    """Labels ``samples`` with ``model``, writing one field per task.

    The fields are locked for the run (shards of one run share ``run_key``
    and the lock), and the run is recorded on the dataset with FiftyOne's
    runs API: settings, counts, and the reason each failed sample failed.

    Args:
        samples: a FiftyOne dataset or view of images
        model: a :class:`~fiftyone_florence2.model.Florence2Model`
        label_field (None): the field, or prefix for several tasks;
            ``florence2_<task>`` (or the prefix ``florence2``) when None
        batch_size (None): images per batch; the model's ``batch_size`` when None
        skip_existing (False): fill only the fields a sample lacks
        overwrite (False): replace existing labels
        shard (None): ``(index, count)`` to label one of ``count`` disjoint parts
        progress (None): True/False for a progress bar, or a function
            called with ``(done, total)``
        workers (4): threads that read and preprocess the next batch
        run_key (None): the run's key; shards of one run pass the same key
        record (True): record the run on the dataset
        embeddings_field (None): also store each image's embedding (as
            ``model.embed`` gives it) in this vector field, from the same vision
            pass; existing vectors follow ``skip_existing`` and ``overwrite``
            as labels do
        fps (None): for videos, the frames per second to sample and label
            (FiftyOne samples them to images with ffmpeg); every frame when None
        frame_step (1): for videos, label every Nth sampled frame

    Returns:
        a :class:`Summary`; ``failures`` maps each failed sample id to its reason
    """
    config = model.config
    label_field = label_field or default_label_field(config.tasks)
    batch_size = whole_number("batch_size", config.batch_size if batch_size is None else batch_size)
    shard_ids([], shard)  # validates the shard before anything is checked or locked
    samples = frames_to_label(samples, fps, frame_step)
    fields = check_run(samples, config, label_field, skip_existing, overwrite, shard, embeddings_field)
    run_key = run_key or new_run_key(label_field)
    dataset = samples._root_dataset
    written = written_fields(fields, embeddings_field)
    with locked(dataset, source_paths(samples, written) if is_patches(samples) else written, run_key) as locks:
        summary = Summary(fields, run_key=f"{run_key}_shard{shard[0]}of{shard[1]}" if shard else run_key)
        summary.embeddings_field = embeddings_field
        if record:
            for abandoned in locks.abandoned_records():
                mark_interrupted(dataset, abandoned)
            summary.run_key = start_run(samples, summary.run_key, config, model.runner, label_field=label_field,
                                        shard=shard, embeddings_field=embeddings_field)  # fmt: skip
            locks.note_record(summary.run_key)
        status = "failed"
        try:
            targets = target_ids(samples, fields, skip_existing, shard, embeddings_field)
            checkpoint = (lambda: record_progress(samples, summary.run_key, summary)) if record else None
            _label(samples, model, targets, summary, batch_size, progress, workers, checkpoint)
            status = "completed"
        except Florence2Error as e:  # fail-fast: the reason that stopped the run is kept too
            summary.failures[e.sample_id or "(no id)"] = e.reason
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if record:
                finish_run(samples, summary.run_key, status, summary)
    return summary


def _label(samples, model, targets: Targets, summary: Summary, batch_size, progress, workers, checkpoint) -> None:
    """Labels the targets batch by batch; ``checkpoint``, if any, stores the counts after each batch, so
    that a killed run keeps them."""
    start = time.perf_counter()
    ids, summary.skipped, summary.targeted = targets.ids, targets.skipped, len(targets.ids)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, _progress(progress, len(ids)) as report:
            pending = _prepare(samples, batches[0], targets, model, pool) if batches else []
            for k, batch in enumerate(batches):
                items = [future.result() for future in pending]
                # Samples deleted since the snapshot have no row to read.
                summary.deleted += len(batch) - len(items)
                pending = _prepare(samples, batches[k + 1], targets, model, pool) if k + 1 < len(batches) else []
                outcomes = model.label_items(items, embed=summary.embeddings_field is not None)
                for item, outcome in zip(items, outcomes):
                    if item.sample_id in targets.keep_vectors:
                        outcome.embedding = None  # skip_existing: the stored vector stays
                _write(samples, summary, items, outcomes)
                summary.seconds = time.perf_counter() - start
                if checkpoint is not None:
                    checkpoint()
                report(len(batch))
    finally:
        summary.seconds = time.perf_counter() - start


def _prepare(samples: Any, batch_ids: list[str], targets: Targets, model: Florence2Model, pool) -> list[Future]:
    """Reads a batch's paths and inputs by id, and starts loading its images in the pool."""
    runner = model.runner
    return [
        pool.submit(load_item, item, path, runner.preprocess, runner.image_size, model.config.tiling)
        for item, path in _read_items(samples, batch_ids, model, targets.tasks)
    ]


def _read_items(samples: Any, ids: list[str], model: Florence2Model, tasks_of=lambda sample_id: None):
    """``(Item, filepath)`` per id that still exists, with the inputs the model reads, read through the
    view (its label filters apply) in one query; ``tasks_of(id)`` names the tasks each item runs."""
    inputs = model.needs_fields
    patches = patch_fields(samples) if is_patches(samples) else []
    names = list(dict.fromkeys(["id", "filepath", *inputs.values(), *patches]))
    columns = samples.select(ids, ordered=True).values(names)
    rows = [dict(zip(names, values)) for values in zip(*columns)]
    items = [
        (
            Item(
                row["id"],
                prompt=row.get(inputs.get("prompt_field", ""), None),
                regions=row.get(inputs.get("regions_field", ""), None),
                tasks=tasks_of(row["id"]),
            ),
            row["filepath"],
        )
        for row in rows
    ]
    if patches:
        for (item, _), row in zip(items, rows):
            set_crop(item, [row[name] for name in patches])  # the patch is its crop of the source image
    return items


def preview_samples(samples: Any, model: Florence2Model, ids: list[str]) -> list[tuple[Item, str, Outcome]]:
    """Labels a few samples and writes nothing (no field, run record or lock), to try a prompt, a
    threshold or a checkpoint before a run: ``(item, filepath, outcome)`` per id still in ``samples``."""
    runner = model.runner
    read = _read_items(samples, ids, model)
    items = [load_item(item, path, runner.preprocess, runner.image_size, model.config.tiling) for item, path in read]
    return [(item, path, outcome) for (item, path), outcome in zip(read, model.label_items(items))]


def _write(samples: Any, summary: Summary, items: list[Item], outcomes: list[Outcome]) -> None:
    """One bulk write per field for the batch (the embeddings, if any, are one more), then one read back:
    a label counts once it is stored.

    Frames views are written through their frames dataset, synced to the
    video's frames, and read back from those frames; patches views on their
    patches' labels, synced to the source dataset and read back there;
    everything else is written to the root dataset by sample id.
    """
    target = _target_dataset(samples)
    columns = {name: {i.sample_id: o.labels[task] for i, o in zip(items, outcomes) if task in o.labels}
               for task, name in summary.label_fields.items()}  # fmt: skip
    vectors = {i.sample_id: o.embedding for i, o in zip(items, outcomes) if o.embedding is not None}
    if summary.embeddings_field:
        columns[summary.embeddings_field] = vectors
    written = {name: values for name, values in columns.items() if values}
    stored = {name: store_column(samples, target, name, values) for name, values in written.items()}
    ids = [item.sample_id for item in items]
    present = set(target.select(ids).values("id")) if written else set(ids)
    kinds = {summary.embeddings_field: "embedding"}
    for item, outcome in zip(items, outcomes):
        sample_id = item.sample_id
        lost = [name for name, values in written.items() if sample_id in values and sample_id not in stored[name]]
        embedded = sample_id in vectors and sample_id in present and summary.embeddings_field not in lost
        summary.embedded += int(embedded)
        if sample_id not in present:
            summary.deleted += 1
        elif outcome.failed or lost:
            not_stored = [f"{n}: the {kinds.get(n, 'label')} was not stored" for n in lost]
            summary.failures[sample_id] = "; ".join(outcome.failed + not_stored)
        elif outcome.labels or (embedded and not outcome.skipped):  # or a sample that lacked only its vector
            summary.labelled += 1
        else:
            summary.skips[sample_id] = outcome.reason or "nothing to label"


def _target_dataset(samples: Any) -> Any:
    """The dataset whose samples a run's ids name: the frames or patches dataset of such a view, else the
    root dataset."""
    if is_frames(samples):
        return samples._frames_dataset
    return samples._patches_dataset if is_patches(samples) else samples._root_dataset


def store_column(samples: Any, target: Any, name: str, values: dict[str, Any]) -> set[str]:
    """Writes one field of a batch in bulk and returns the ids whose value reads back."""
    if is_patches(samples):
        return store_patch_column(samples, name, values)
    # Our labels are built valid and check_run has checked the field's type.
    target.set_values(name, values, key_field="id", validate=False)
    if is_frames(samples):
        # FiftyOne's own sync of a frames view to its videos, for this batch's frames only (the view's
        # set_values syncs every frame of the field, each batch).
        samples._sync_source(fields=[name], ids=list(values))
        samples._sync_source_field_schema(name)
    return stored_ids(samples, name, list(values))


def stored_ids(samples: Any, name: str, ids: list[str]) -> set[str]:
    """The ids among ``ids`` whose field ``name`` holds a label where the user will look for it: the
    root dataset's samples, or, for a frames view, the video's frames."""
    if is_frames(samples):
        # The video dataset's frame documents, looked up by id: a frames view's ids are its frames' ids.
        # (select_frames() would scan every frame of the videos for each batch.)
        query = {"_id": {"$in": [ObjectId(i) for i in ids]}, name: {"$exists": True, "$ne": None}}
        return {str(doc["_id"]) for doc in samples._root_dataset._frame_collection.find(query, {"_id": 1})}
    return set(samples._root_dataset.select(ids).exists(name).values("id"))


class _progress:
    """A FiftyOne progress bar, or calls to a ``(done, total)`` function."""

    def __init__(self, progress: bool | Progress | None, total: int):
        self.callback = progress if callable(progress) else None
        self.total = total
        self.done = 0
        self.bar = None if self.callback else fou.ProgressBar(total=total, progress=progress)

    def __enter__(self) -> Callable[[int], None]:
        if self.bar is not None:
            self.bar.__enter__()
        if self.callback:
            self.callback(0, self.total)
        return self.update

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        if self.callback:
            self.callback(self.done, self.total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

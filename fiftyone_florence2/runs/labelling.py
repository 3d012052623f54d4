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
from typing import Any

import fiftyone.core.utils as fou

from fiftyone_florence2.core.errors import SampleError
from fiftyone_florence2.core.options import default_label_field, whole_number
from fiftyone_florence2.engine.items import Item, load_item, set_crop
from fiftyone_florence2.runs.batching import Outcome
from fiftyone_florence2.runs.checks import (
    Targets,
    check_label_field,
    check_run,
    check_sample_ids,
    check_vector_length,
    existing_types,
    frames_to_label,
    shard_ids,
    target_ids,
    written_fields,
)
from fiftyone_florence2.runs.locks import locked
from fiftyone_florence2.runs.model import Florence2Model
from fiftyone_florence2.runs.patches import is_patches, patch_fields, source_paths
from fiftyone_florence2.runs.records import finish_run, mark_interrupted, new_run_key, record_progress, start_run
from fiftyone_florence2.runs.summary import (
    Summary,
)
from fiftyone_florence2.runs.videos import first_frame, unreadable_videos
from fiftyone_florence2.runs.writes import write_batch

__all__ = ["check_label_field", "check_run", "label_samples", "preview_samples", "shard_ids"]

Progress = Callable[[int, int], None]


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
        model: a :class:`~fiftyone_florence2.runs.model.Florence2Model`
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
    config.answer_types = existing_types(samples, config, fields)
    if embeddings_field is not None:
        check_vector_length(samples, embeddings_field, model.embedding_dim)
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
            _fail_unreadable_videos(samples, shard, summary, config.skip_failures)
            checkpoint = (lambda: record_progress(samples, summary.run_key, summary)) if record else None
            _label(samples, model, targets, summary, batch_size, progress, workers, checkpoint)
            # A run that labelled none of its targets because they failed did not do its job.
            status = "failed" if summary.failures and not summary.labelled else "completed"
        except SampleError as e:  # fail-fast: the reason that stopped the run is kept too
            summary.failures[e.sample_id or "(no id)"] = e.reason
            raise
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            if record:
                finish_run(samples, summary.run_key, status, summary)
    return summary


def _fail_unreadable_videos(samples: Any, shard, summary: Summary, skip_failures: bool) -> None:
    """Counts each video that gave the frames view no frame as a target that failed, with its reason; the
    first one stops a fail-fast run."""
    for video_id, reason in unreadable_videos(samples, shard).items():
        if not skip_failures:
            raise SampleError(video_id, reason)
        summary.failures[video_id] = reason
        summary.targeted += 1


def _label(samples, model, targets: Targets, summary: Summary, batch_size, progress, workers, checkpoint) -> None:
    """Labels the targets batch by batch; ``checkpoint``, if any, stores the counts after each batch, so
    that a killed run keeps them."""
    start = time.perf_counter()
    ids, summary.skipped = targets.ids, targets.skipped
    summary.targeted += len(ids)
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
                write_batch(samples, summary, items, outcomes)
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
    threshold or a checkpoint before a run: ``(item, filepath, outcome)`` per id still in ``samples``.
    A video is previewed on its first frame."""
    runner = model.runner
    read = _read_items(samples, check_sample_ids(ids), model)
    video = samples.media_type == "video"
    items = [load_item(item, _first_frame_of(item, path) if video else path, runner.preprocess, runner.image_size,
                       model.config.tiling) for item, path in read]  # fmt: skip
    return [(item, path, outcome) for (item, path), outcome in zip(read, model.label_items(items))]


def _first_frame_of(item: Item, path: str) -> Any:
    """The video's first frame, or None with the reason set on ``item`` (which load_item then keeps)."""
    try:
        return first_frame(path)
    except ValueError as e:
        item.error = str(e)
        return None


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

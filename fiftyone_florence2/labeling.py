"""Labelling a dataset or view safely: checks first, a snapshot of sample ids, bulk writes.

This is what the command line and the App operators run. Compared with
``apply_model`` it checks every field before any model work, never
overwrites labels unless asked, records why each failed sample failed (an
unreadable file included), and can split a run into shards.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.utils as fou
from fiftyone import ViewField as F

from .locks import locked
from .model import Florence2Error, Florence2Model, Florence2ModelConfig, Item, load_item
from .provenance import finish_run, mark_interrupted, new_run_key, start_run

_FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = frozenset({"id", "filepath", "tags", "metadata", "created_at", "last_modified_at", "media_type", "frames"})

Progress = Callable[[int, int], None]


@dataclass
class Summary:
    """What a run did: the fields it wrote, and what it labelled, skipped and could not label."""

    label_fields: dict[str, str]
    run_key: str | None = None
    targeted: int = 0
    labelled: int = 0
    skipped: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        done = self.labelled + len(self.failures)
        return done / self.seconds if self.seconds > 0 else 0.0


def check_label_field(label_field: Any) -> str:
    """Returns ``label_field`` if it can be a new top-level field, else raises ``ValueError``."""
    if not isinstance(label_field, str) or not _FIELD_NAME.match(label_field):
        raise ValueError(
            f"Invalid label field {label_field!r}: use letters, digits and underscores, starting with a letter."
        )
    if label_field in _RESERVED:
        raise ValueError(f"{label_field!r} is one of FiftyOne's own fields; choose another label field.")
    return label_field


def _label_class(field: Any) -> type | None:
    if isinstance(field, fof.EmbeddedDocumentField):
        return field.document_type
    return None


def check_run(
    samples: Any,
    config: Florence2ModelConfig,
    label_field: str,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
) -> dict[str, str]:
    """Checks a run against the dataset before any model work; returns ``{task: field}``.

    Refuses an invalid field name, an existing field of another label type,
    a prompt or regions field that is missing or of the wrong type, and,
    unless ``skip_existing`` or ``overwrite``, samples (of the shard, if any)
    that already hold labels. Target fields are checked on the whole dataset,
    so that a view that hides a field cannot hide its labels; input fields
    are read through the view, so they are checked there.
    """
    if skip_existing and overwrite:
        raise ValueError("Pass skip_existing or overwrite, not both.")
    if samples.media_type != "image":
        raise ValueError(f"Florence-2 labels images; this collection holds {samples.media_type!r} media.")
    check_label_field(label_field)
    fields = config.label_fields(label_field)
    dataset = samples._root_dataset
    schema = dataset.get_field_schema()
    for task, name in fields.items():
        check_label_field(name)
        expected = config.label_types[task]
        if name in schema:
            have = _label_class(schema[name])
            if have is None or have.__name__ != expected:
                kind = have.__name__ if have else type(schema[name]).__name__
                raise ValueError(
                    f"Field {name!r} already holds {kind}, but task {task!r} writes {expected}. "
                    "Choose another label field."
                )
    if config.prompt_field is not None and samples.get_field(config.prompt_field) is None:
        raise ValueError(f"Prompt field {config.prompt_field!r} does not exist in this dataset or view.")
    if config.regions_field is not None:
        regions = _label_class(samples.get_field(config.regions_field))
        if regions is not fol.Detections:
            raise ValueError(
                f"Regions field {config.regions_field!r} must be a Detections field"
                + (f", not {regions.__name__}." if regions else " of this dataset or view.")
            )
    if not (skip_existing or overwrite):
        labelled = labelled_ids(dataset, fields.values(), every=False)
        count = len(labelled.intersection(shard_ids(samples.values("id"), shard))) if labelled else 0
        if count:
            existing = [name for name in fields.values() if name in schema]
            raise ValueError(
                f"{count} sample(s) already have labels in {', '.join(existing)}. Pass skip_existing "
                "to label only the others, or overwrite to replace them."
            )
    return fields


def labelled_ids(dataset: Any, names: Iterable[str], every: bool) -> set[str]:
    """Ids of the samples of ``dataset`` with a label in every (or any) of the fields ``names``."""
    names = list(names)
    schema = dataset.get_field_schema()
    present = [name for name in names if name in schema]
    if not present or (every and len(present) < len(names)):
        return set()
    exists = [F(name).exists() for name in present]
    return set(dataset.match(F.all(exists) if every else F.any(exists)).values("id"))


def shard_ids(ids: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """The ids of shard ``(index, count)``: a split that does not depend on what is labelled yet."""
    if shard is None:
        return list(ids)
    index, count = shard
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"Invalid shard {shard!r}: expected (index, count) with 0 <= index < count.")
    return [i for i in ids if int(i, 16) % count == index]


def target_ids(
    samples: Any, fields: dict[str, str], skip_existing: bool, shard: tuple[int, int] | None
) -> tuple[list[str], int]:
    """Snapshots the ids to label (in order) and how many were skipped as already labelled."""
    ids = shard_ids(samples.values("id"), shard)
    if not skip_existing:
        return ids, 0
    done = labelled_ids(samples._root_dataset, fields.values(), every=True)
    todo = [i for i in ids if i not in done]
    return todo, len(ids) - len(todo)


def label_samples(
    samples: Any,
    model: Florence2Model,
    label_field: str = "florence2",
    batch_size: int = 8,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool | Progress | None = None,
    workers: int = 4,
    run_key: str | None = None,
    record: bool = True,
) -> Summary:
    """Labels ``samples`` with ``model``, writing one field per task.

    The fields are locked for the run (shards of one run share ``run_key``
    and the lock), and the run is recorded on the dataset with FiftyOne's
    runs API: settings, counts, and the reason each failed sample failed.

    Args:
        samples: a FiftyOne dataset or view of images
        model: a :class:`Florence2Model`
        label_field ("florence2"): the field, or prefix for several tasks
        batch_size (8): images per batch
        skip_existing (False): leave samples that already have the labels
        overwrite (False): replace existing labels
        shard (None): ``(index, count)`` to label one of ``count`` disjoint parts
        progress (None): True/False for a progress bar, or a function
            called with ``(done, total)``
        workers (4): threads that read and preprocess the next batch
        run_key (None): the run's key; shards of one run pass the same key
        record (True): record the run on the dataset

    Returns:
        a :class:`Summary`; ``failures`` maps each failed sample id to its reason
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of at least 1, got {batch_size!r}.")
    shard_ids([], shard)  # validates the shard before anything is checked or locked
    fields = check_run(samples, model.config, label_field, skip_existing, overwrite, shard)
    run_key = run_key or new_run_key(label_field)
    dataset = samples._root_dataset
    with locked(dataset, fields.values(), run_key) as locks:
        summary = Summary(fields, run_key=f"{run_key}_shard{shard[0]}of{shard[1]}" if shard else run_key)
        if record:
            for abandoned in locks.abandoned_records():
                mark_interrupted(dataset, abandoned)
            summary.run_key = start_run(
                samples, summary.run_key, model.config, model.runner, label_field=label_field, shard=shard
            )
            locks.note_record(summary.run_key)
        status = "failed"
        try:
            _label(samples, dataset, model, fields, summary, batch_size, skip_existing, shard, progress, workers)
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


def _label(samples, dataset, model, fields, summary, batch_size, skip_existing, shard, progress, workers) -> None:
    start = time.perf_counter()
    ids, summary.skipped = target_ids(samples, fields, skip_existing, shard)
    summary.targeted = len(ids)
    inputs = model.needs_fields
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, _progress(progress, len(ids)) as report:
            pending = _prepare(samples, batches[0], inputs, model, pool) if batches else []
            for k, batch in enumerate(batches):
                items = [future.result() for future in pending]
                pending = _prepare(samples, batches[k + 1], inputs, model, pool) if k + 1 < len(batches) else []
                results = model.label_items(items)
                # Labels follow the ids their items carry: a sample deleted
                # meanwhile is simply absent, and shifts nothing.
                ids = [item.sample_id for item in items]
                outputs = [output for output, _ in results]
                _write(dataset, fields, model.config.multitask, ids, outputs)
                summary.labelled += sum(output is not None for output in outputs)
                summary.failures.update({i: reason for i, (_, reason) in zip(ids, results) if reason})
                report(len(batch))
    finally:
        summary.seconds = time.perf_counter() - start


def _prepare(samples: Any, batch_ids: list[str], inputs: dict[str, str], model: Florence2Model, pool) -> list[Future]:
    """Reads a batch's paths and inputs by id (through the view: its label filters apply), and starts
    loading its images in the pool."""
    names = ["id", "filepath", *inputs.values()]
    columns = samples.select(batch_ids, ordered=True).values(names)
    rows = [dict(zip(names, values)) for values in zip(*columns)]
    futures = []
    for row in rows:
        item = Item(
            row["id"],
            prompt=row.get(inputs.get("prompt_field", ""), None),
            regions=row.get(inputs.get("regions_field", ""), None),
        )
        futures.append(pool.submit(load_item, item, row["filepath"], model.runner.preprocess, model.runner.image_size))
    return futures


def _write(dataset: Any, fields: dict[str, str], multitask: bool, ids: list[str], outputs: list[Any]) -> None:
    """One bulk write per field for the batch; failed samples are left untouched."""
    for task, name in fields.items():
        values = {}
        for sample_id, output in zip(ids, outputs):
            label = output.get(task) if multitask and output is not None else output
            if label is not None:
                values[sample_id] = label
        if values:
            # Our labels are built valid and check_run has checked the field's type.
            dataset.set_values(name, values, key_field="id", validate=False)


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

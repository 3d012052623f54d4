"""A batch's labels written in bulk and read back: a label counts once it is stored where the user will look
for it (the root dataset, a video's frames through a frames view, a patch's labels on the source dataset)."""

from __future__ import annotations

from typing import Any

from bson import ObjectId

from fiftyone_florence2.engine.items import Item
from fiftyone_florence2.runs.batching import Outcome
from fiftyone_florence2.runs.checks import is_frames
from fiftyone_florence2.runs.patches import is_patches, store_patch_column
from fiftyone_florence2.runs.summary import Summary


def write_batch(samples: Any, summary: Summary, items: list[Item], outcomes: list[Outcome]) -> None:
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

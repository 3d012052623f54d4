"""Patches views: each patch is labelled as the crop of its source image, and its labels go on the patch's
own labels, which FiftyOne syncs to the source dataset.

A patch sample of ``dataset.to_patches("gt")`` holds one label of ``gt``; one
of ``to_evaluation_patches`` holds labels of the ground truth and prediction
fields. The model sees the crop of the source image (full resolution, then the
processor's resize) at the union of those labels' boxes. A task's label is
stored as the attribute ``<label_field>`` of each of the patch's labels
(``gt.detections.<label_field>`` on the source dataset), because FiftyOne
syncs a patches view's own label fields, and only those, back to the source:
a new top-level field of a patches view lives on a generated dataset that the
next ``to_patches()`` no longer has. Boxes and polygons found in a crop are
stored relative to the source image, FiftyOne's frame for every label of a
patches view (the App crops a patch and draws its labels in that frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import fiftyone.core.labels as fol
from bson import ObjectId

from fiftyone_florence2.core.crops import LIST_ATTRIBUTES, XYWH, labels_of

_ELEMENTS = {fol.Detections: fol.Detection, fol.Polylines: fol.Polyline}


def is_patches(samples: Any) -> bool:
    """Whether ``samples`` is a patches view (``to_patches`` or ``to_evaluation_patches``)."""
    return bool(getattr(samples, "_is_patches", False))


def patch_fields(samples: Any) -> list[str]:
    """The label fields of a patches view: the patches field, or the ground truth and predictions."""
    return list(samples._label_fields)


def _to_source(x: float, y: float, crop: XYWH) -> list[float]:
    return [crop[0] + x * crop[2], crop[1] + y * crop[3]]


def to_source_frame(label: Any, crop: XYWH) -> Any:
    """Moves a label found in a crop into the source image's relative frame, in place: boxes, quads and
    polygon points; instance masks are relative to their box, so they stay as they are."""
    for item in labels_of(label) if type(label).__name__ in LIST_ATTRIBUTES else []:
        box = getattr(item, "bounding_box", None)
        if box is not None:
            item.bounding_box = [*_to_source(box[0], box[1], crop), box[2] * crop[2], box[3] * crop[3]]
        if item.has_field("quad") and item["quad"]:
            item["quad"] = [_to_source(p[0], p[1], crop) for p in item["quad"]]
        if getattr(item, "points", None) is not None:
            item.points = [[_to_source(p[0], p[1], crop) for p in ring] for ring in item.points]
    return label


def attribute_path(samples: Any, field: str, name: str) -> str:
    """The path of attribute ``name`` of ``field``'s labels in a patches view (``gt.name`` or
    ``gt.detections.name``)."""
    return f"{samples._get_label_field_path(field)[1]}.{name}"


def source_paths(samples: Any, names: Iterable[str]) -> list[str]:
    """The attribute paths a run writes on the source dataset (what it locks), e.g. ``gt.detections.x``."""
    source = samples._source_collection._dataset
    return [f"{source._get_label_field_path(field)[1]}.{name}" for name in names for field in patch_fields(samples)]


def _label_ids(dataset: Any, samples: Any, ids: Sequence[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """``{field: {patch id: [label id, ...]}}`` for the patches ``ids`` (all when None)."""
    view = dataset if ids is None else dataset.select(ids)
    out = {}
    for field in patch_fields(samples):
        patch_ids, label_ids = view.values(["id", attribute_path(samples, field, "id")])
        out[field] = {p: [] if lids is None else [lids] if isinstance(lids, str) else list(lids)
                      for p, lids in zip(patch_ids, label_ids)}  # fmt: skip
    return out


def _source_attribute_ids(samples: Any, field: str, name: str, label_ids: Iterable[str]) -> set[str]:
    """The ids among ``label_ids`` of labels of ``field`` on the source dataset whose ``name`` is set."""
    source = samples._source_collection._dataset
    path = source._get_label_field_path(field)[1]
    wanted = [ObjectId(i) for i in set(label_ids)]
    if not wanted:
        return set()
    is_list = path != field
    match = {f"{path}._id": {"$in": wanted}}
    has_name = {f"{path}.{name}": {"$exists": True, "$ne": None}}
    unwind = [{"$unwind": f"${path}"}] if is_list else []
    pipeline = [{"$match": match}, *unwind, {"$match": {**match, **has_name}}, {"$project": {f"{path}._id": 1}}]
    docs = source._sample_collection.aggregate(pipeline)
    return {str(_get(doc, path)["_id"]) for doc in docs}


def _get(doc: dict, path: str) -> Any:
    for key in path.split("."):
        doc = doc[key]
    return doc


def labelled_patch_ids(samples: Any, names: Iterable[str], ids: Sequence[str] | None = None) -> set[str]:
    """Ids of the patches (among ``ids``) with any of their labels holding an attribute in ``names``, as
    the source dataset stores it."""
    by_field = _label_ids(samples._patches_dataset, samples, ids)
    done = set()
    for name in names:
        for field, patches in by_field.items():
            found = _source_attribute_ids(samples, field, name, (i for lids in patches.values() for i in lids))
            done.update(p for p, lids in patches.items() if found.intersection(lids))
    return done


def store_patch_column(samples: Any, name: str, values: dict[str, Any]) -> set[str]:
    """Writes a batch's labels of one task on each label of their patches, syncs them to the source
    dataset (for this batch's patches only), and returns the patch ids whose labels all read back."""
    dataset, ids = samples._patches_dataset, list(values)
    by_field = _label_ids(dataset, samples, ids)
    for field, patches in by_field.items():
        path = attribute_path(samples, field, name)
        is_list = path.count(".") > 1
        column = {p: [values[p].copy() for _ in lids] if is_list else values[p].copy()
                  for p, lids in patches.items() if lids}  # fmt: skip
        if column:
            # Our labels are built valid; dynamic declares the attribute, so the App can filter on it.
            dataset.set_values(path, column, key_field="id", validate=False, dynamic=True)
            samples._sync_source(fields=[field], ids=list(column))
            samples._sync_source_field_schema(path)
    stored = set(ids)
    for field, patches in by_field.items():
        found = _source_attribute_ids(samples, field, name, (i for lids in patches.values() for i in lids))
        stored -= {p for p, lids in patches.items() if not found.issuperset(lids)}
    return {p for p in stored if any(by_field[f].get(p) for f in by_field)}


def check_patches(samples: Any, config: Any, fields: dict[str, str], embeddings_field: str | None) -> None:
    """Refuses what a patches view cannot take, and a label field that is one of its labels' own
    attributes, or holds another type, before any model work."""
    if samples._source_collection._is_generated:
        raise ValueError("This patches view was made from a frames or clips view: label its boxes on the "
                         "frames view with a region task (regions_field: the patches field) instead.")  # fmt: skip
    if config.regions_field is not None or any(task.input == "region" for task in config.tasks):
        raise ValueError("A patches view is already its boxes: run a whole-image task on it (each crop is an "
                         "image), or a region task with regions_field on the dataset itself.")  # fmt: skip
    if embeddings_field is not None:
        raise ValueError("embeddings_field stores whole-image vectors; for patches use FiftyOne's "
                         "compute_patch_embeddings on the dataset.")  # fmt: skip
    for field in patch_fields(samples):
        kind = samples._get_label_field_type(field)
        own = _ELEMENTS.get(kind, kind)
        for task, name in fields.items():
            if name in own._fields:
                raise ValueError(f"{name!r} is one of {own.__name__}'s own attributes; choose another label field.")
            have = samples.get_field(attribute_path(samples, field, name))
            kind = getattr(have, "document_type", None)
            if have is not None and not config.writes(task, getattr(kind, "__name__", "")):
                raise ValueError(
                    f"The labels of {field!r} already have an attribute {name!r} holding "
                    f"{getattr(kind, '__name__', type(have).__name__)}, but task {task!r} writes "
                    f"{config.label_types[task]}. Choose another label field."
                )

"""Checks of a run against its dataset before any model work, and the snapshot of what to label.

Everything here reads the database and writes nothing: the CLI and the App
run these checks before loading a model or creating a dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
from bson import ObjectId
from fiftyone import ViewField as F

from fiftyone_florence2.core.errors import OptionError, literal
from fiftyone_florence2.core.options import OPTIONS, RUN_OPTIONS, check_existing_policy, field_name, refuse_unmet
from fiftyone_florence2.runs.config import Florence2ModelConfig
from fiftyone_florence2.runs.patches import (
    attribute_path,
    check_patches,
    is_patches,
    labelled_patch_ids,
    patch_fields,
    source_paths,
)

_RESERVED = frozenset({"id", "filepath", "tags", "metadata", "created_at", "last_modified_at", "media_type", "frames"})


def check_label_field(label_field: Any) -> str:
    """Returns ``label_field`` if it can be a top-level field of labels, else raises ``ValueError``."""
    try:
        field_name("label_field", label_field, nested=False)
    except ValueError:
        raise ValueError(
            f"Invalid label field {label_field!r}: a top-level field of letters, digits and underscores, "
            "starting with a letter."
        ) from None
    if label_field in _RESERVED:
        raise ValueError(f"{label_field!r} is one of FiftyOne's own fields; choose another label field.")
    return label_field


def check_embeddings_name(embeddings_field: Any, label_fields: Iterable[str]) -> str:
    """Returns ``embeddings_field`` if it can be a top-level vector field beside ``label_fields``."""
    try:
        check_label_field(embeddings_field)
    except ValueError as e:
        raise ValueError(str(e).replace("label field", "embeddings field")) from None
    if embeddings_field in label_fields:
        raise ValueError(f"{embeddings_field!r} is a label field of this run; choose another embeddings field.")
    return embeddings_field


def label_class(schema_field: Any) -> type | None:
    """The label class an embedded-document field holds, else None."""
    if isinstance(schema_field, fof.EmbeddedDocumentField):
        return schema_field.document_type
    return None


def check_collection(samples: Any) -> None:
    """Refuses collections whose labels would be lost, naming what works instead.

    Frames views are labelled through the view, which FiftyOne syncs to the
    video's frames; patches views patch by patch, on their labels
    (:mod:`~fiftyone_florence2.runs.patches`).
    """
    if samples.media_type == "group":
        raise ValueError(
            "This is a grouped dataset: label one slice of images or videos at a time, e.g. "
            "dataset.select_group_slices('<slice>'), or in the App a view of that slice."
        )
    if getattr(samples, "_is_clips", False) or samples.media_type not in ("image", "video"):
        raise ValueError(
            f"Florence-2 labels images and the frames of videos; this collection holds {samples.media_type!r} "
            "media. Label its images or videos (a clips view: the video dataset, or to_frames())."
        )


def is_frames(samples: Any) -> bool:
    """Whether ``samples`` is a frames view, whose samples are the frames of a video dataset."""
    return bool(getattr(samples, "_is_frames", False))


def labelled_targets(samples: Any, names: Iterable[str]) -> set[str]:
    """Ids of the samples (the patches, the frames) of ``samples``' target dataset with a label in any of
    ``names``: for a patches view, an attribute ``name`` on any of a patch's labels."""
    return labelled_patch_ids(samples, names) if is_patches(samples) else labelled_ids(label_dataset(samples), names)


def label_dataset(samples: Any) -> Any:
    """The dataset whose schema and labels a run checks: a frames view's own (its fields are the video's
    frame fields), else the root dataset, so that a view hiding a field cannot hide its labels."""
    return samples._dataset if is_frames(samples) else samples._root_dataset


def frames_to_label(samples: Any, fps: float | None = None, frame_step: int = 1) -> Any:
    """The frames view of a video collection (frames sampled to images by FiftyOne, with ffmpeg), at
    ``fps`` frames per second when given, keeping every ``frame_step``-th frame; images as they are."""
    fps, frame_step = check_sampling(media_of(samples), fps, frame_step)
    if samples.media_type != "video":
        return samples
    frames = samples.to_frames(sample_frames=True, fps=fps)
    return frames.match((F("frame_number") - 1) % frame_step == 0) if frame_step > 1 else frames


def check_sample_ids(ids: Sequence[Any]) -> list[str]:
    """``ids`` if each is a sample id (24 hexadecimal digits), else ``ValueError`` naming the first that is not."""
    bad = next((i for i in ids if not (isinstance(i, str) and ObjectId.is_valid(i))), None)
    if bad is not None:
        raise ValueError(f"{bad!r} is not a sample id (24 hexadecimal digits): select samples by their ids.")
    return list(ids)


def media_of(samples: Any) -> str:
    """What a collection holds, as the sampling options' checks read it: ``frames`` for a frames view."""
    return "frames" if is_frames(samples) else samples.media_type


def check_sampling(media: str, fps: float | None = None, frame_step: int | None = 1) -> tuple[float | None, int]:
    """The checked ``fps`` and ``frame_step`` for a collection of ``media``; refused unless it holds videos."""
    fps, frame_step = OPTIONS["fps"].read(fps), OPTIONS["frame_step"].read(frame_step)
    refuse_unmet(RUN_OPTIONS, {"fps": fps, "frame_step": frame_step, "media": media})
    return fps, frame_step


def check_run(
    samples: Any,
    config: Florence2ModelConfig,
    label_field: str,
    skip_existing: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    embeddings_field: str | None = None,
) -> dict[str, str]:
    """Checks a run against the dataset before any model work; returns ``{task: field}``.

    Refuses views whose labels would be lost, an invalid field name, an
    existing field of another label type, a prompt or regions field that is
    missing or of the wrong type, and, unless ``skip_existing`` or
    ``overwrite``, samples (of the shard, if any) that already hold labels.
    Target fields are checked on the whole dataset, so that a view that hides
    a field cannot hide its labels; input fields are read through the view,
    so they are checked there.
    """
    fields = check_fields(samples, config, label_field, skip_existing, overwrite, embeddings_field)
    if not (skip_existing or overwrite):
        names = written_fields(fields, embeddings_field)
        labelled = labelled_targets(samples, names)
        count = len(labelled.intersection(shard_ids(samples.values("id"), shard))) if labelled else 0
        if count:
            schema = label_dataset(samples).get_field_schema()
            present = source_paths(samples, names) if is_patches(samples) else [n for n in names if n in schema]
            refuse_existing(count, present)
    return fields


def written_fields(fields: dict[str, str], embeddings_field: str | None = None) -> list[str]:
    """The fields a run writes: one per task, and the embeddings field if any."""
    return [*fields.values(), *([embeddings_field] if embeddings_field else [])]


def refuse_existing(count: int, names: Sequence[str]) -> None:
    """Raises the ``ValueError`` for ``count`` target samples that already hold labels in ``names``."""
    raise OptionError(
        f"{count} sample(s) already have labels in {literal(', '.join(names))}. Label with {{skip_existing}} "
        "to fill only the fields they lack, or with {overwrite} to replace them.",
        OPTIONS["skip_existing"],
        OPTIONS["overwrite"],
    )


def check_fields(
    samples: Any,
    config: Florence2ModelConfig,
    label_field: str,
    skip_existing: bool = False,
    overwrite: bool = False,
    embeddings_field: str | None = None,
) -> dict[str, str]:
    """The checks of :func:`check_run` that read only the schema: fast enough for a form."""
    check_existing_policy(skip_existing, overwrite)
    check_collection(samples)
    check_label_field(label_field)
    fields = config.label_fields(label_field)
    if is_patches(samples):
        for name in fields.values():
            check_label_field(name)
        check_patches(samples, config, fields, embeddings_field)
        check_inputs(samples, config)
        return fields
    schema = label_dataset(samples).get_field_schema()
    for task, name in fields.items():
        check_label_field(name)
        expected = config.label_types[task]
        if name in schema:
            have = label_class(schema[name])
            if have is None or not config.writes(task, have.__name__):
                kind = have.__name__ if have else type(schema[name]).__name__
                raise ValueError(
                    f"Field {name!r} already holds {kind}, but task {task!r} writes {expected}. "
                    "Choose another label field."
                )
    if embeddings_field is not None:
        _check_embeddings_field(schema, config, embeddings_field, fields.values())
        if config.tiling is not None:
            raise ValueError("embeddings_field stores whole-image embeddings: label without tiles to store them.")
    check_inputs(samples, config)
    return fields


def existing_types(samples: Any, config: Florence2ModelConfig, fields: dict[str, str]) -> dict[str, str]:
    """The label type each free-prompt task's field already holds (by class name), for the fields that exist:
    such a field keeps its type, whatever a run's answers hold."""
    found = {}
    schema = None if is_patches(samples) else label_dataset(samples).get_field_schema()
    for task in (t for t in config.tasks if t.free):
        name = fields[task.name]
        if schema is not None:
            have = schema.get(name)
        else:  # a patches view writes an attribute of each patch's labels
            have = next((samples.get_field(attribute_path(samples, f, name)) for f in patch_fields(samples)), None)
        kind = label_class(have)
        if kind is not None:
            found[task.name] = kind.__name__
    return found


def check_inputs(samples: Any, config: Florence2ModelConfig) -> None:
    """Checks the fields a run reads (prompt and regions) through ``samples``; reads only the schema."""
    if config.prompt_field is not None and samples.get_field(config.prompt_field) is None:
        raise ValueError(f"Prompt field {config.prompt_field!r} does not exist in this dataset or view.")
    if config.regions_field is not None:
        regions = label_class(samples.get_field(config.regions_field))
        if regions is not fol.Detections:
            raise ValueError(
                f"Regions field {config.regions_field!r} must be a Detections field"
                + (f", not {regions.__name__}." if regions else " of this dataset or view.")
            )


def _check_embeddings_field(schema: dict, config: Florence2ModelConfig, name: str, label_fields) -> None:
    """The embeddings field is a new field or a vector field, and no field the run reads or labels."""
    check_embeddings_name(name, label_fields)
    if name in (config.prompt_field, config.regions_field):
        raise ValueError(f"{name!r} is an input field of this run; choose another embeddings field.")
    if name in schema and not isinstance(schema[name], (fof.VectorField, fof.ArrayField)):
        raise ValueError(
            f"Field {name!r} already holds {type(schema[name]).__name__}, but embeddings are vectors "
            "(VectorField). Choose another embeddings field."
        )


def check_vector_length(samples: Any, embeddings_field: str | None, length: int) -> None:
    """Refuses an embeddings field that already holds vectors of another length than ``length``: a similarity
    index (``compute_similarity``) needs one length, and a run would mix two (reads the stored vectors)."""
    if embeddings_field is None or is_patches(samples):
        return
    dataset = label_dataset(samples)
    if embeddings_field not in dataset.get_field_schema():
        return
    stored = dataset.match(F(embeddings_field).exists()).values(embeddings_field)
    other = sorted({len(vector) for vector in stored if vector is not None and len(vector) != length})
    if other:
        raise ValueError(
            f"Field {embeddings_field!r} holds vectors of length {', '.join(map(str, other))}, but this model's "
            f"embeddings have length {length}; one field cannot index both. Choose another embeddings field."
        )


def labelled_ids(dataset: Any, names: Iterable[str]) -> set[str]:
    """Ids of the samples of ``dataset`` with a label in any of the fields ``names``."""
    schema = dataset.get_field_schema()
    present = [name for name in names if name in schema]
    if not present:
        return set()
    return set(dataset.match(F.any([F(name).exists() for name in present])).values("id"))


def shard_ids(ids: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """The ids of shard ``(index, count)``: a split that does not depend on what is labelled yet."""
    if shard is None:
        return list(ids)
    index, count = shard
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"Invalid shard {shard!r}: expected (index, count) with 0 <= index < count.")
    return [i for i in ids if int(i, 16) % count == index]


@dataclass
class Targets:
    """The ids to label, in order, and for each id whose fields are partly filled, the tasks it lacks.

    ``keep_vectors`` holds the ids whose stored embedding stays as it is (``skip_existing``).
    """

    ids: list[str]
    skipped: int = 0
    missing: dict[str, frozenset[str]] = field(default_factory=dict)
    keep_vectors: set[str] = field(default_factory=set)

    def tasks(self, sample_id: str) -> frozenset[str] | None:
        """The tasks to run for a sample: None for all of them."""
        return self.missing.get(sample_id)


def target_ids(
    samples: Any,
    fields: dict[str, str],
    skip_existing: bool,
    shard: tuple[int, int] | None,
    embeddings_field: str | None = None,
) -> Targets:
    """Snapshots the ids to label; with ``skip_existing``, per field: a sample runs the tasks it lacks,
    and one that lacks only its embedding gets the vision pass alone."""
    ids = shard_ids(samples.values("id"), shard)
    if not skip_existing:
        return Targets(ids)
    done = {task: labelled_targets(samples, [name]) for task, name in fields.items()}
    embedded = labelled_targets(samples, [embeddings_field]) if embeddings_field else None
    targets = Targets([])
    for sample_id in ids:
        lacking = frozenset(task for task in fields if sample_id not in done[task])
        has_vector = embedded is not None and sample_id in embedded
        if not lacking and (embedded is None or has_vector):
            targets.skipped += 1
            continue
        targets.ids.append(sample_id)
        if len(lacking) < len(fields):
            targets.missing[sample_id] = lacking
        if has_vector:
            targets.keep_vectors.add(sample_id)
    return targets

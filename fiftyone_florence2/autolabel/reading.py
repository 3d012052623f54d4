"""Reading a predictions field for the review queue: where its labels are, and each label's facts, per sample.

A field of Detections, Polylines, Classifications or Keypoints holds a list of labels per sample; a field of
one Detection, Polyline, Classification or Keypoint holds at most one. Either way each label is read with its
sample, id, class, confidence, tags and (when asked) the attribute that marks it reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol

LISTS = {fol.Detections: "detections", fol.Polylines: "polylines", fol.Classifications: "classifications",
         fol.Keypoints: "keypoints"}  # fmt: skip
SINGLES = (fol.Detection, fol.Polyline, fol.Classification, fol.Keypoint)
KINDS = "Detections, Polylines, Classifications or Keypoints (or one Detection, Polyline, Classification, Keypoint)"


@dataclass(frozen=True)
class LabelFacts:
    """One predicted label, as the queue reads it."""

    sample_id: str
    label_id: str
    label: str | None
    confidence: float | None
    tags: tuple[str, ...]
    reviewed: bool  # a reviewed tag on the label or its sample, or the reviewed field set on either


def label_path(samples: Any, field: str, name: str = "pred_field") -> str:
    """The path of the labels in ``field`` (``predictions.detections`` for Detections); raises ``ValueError``
    naming ``name`` for a missing field or one that holds no labels with confidences."""
    if samples.media_type != "image":
        raise ValueError(
            f"The review queue works on images; this collection holds {samples.media_type!r} media"
            + (": pass dataset.to_frames(sample_frames=True)." if samples.media_type == "video" else ".")
        )
    schema = samples.get_field_schema()
    if not isinstance(field, str) or field not in schema:
        label_fields = [key for key, value in schema.items() if _label_type(value)]
        raise ValueError(f"{name}: no field {field!r} here; label fields: {', '.join(label_fields) or 'none'}.")
    kind = _label_type(schema[field])
    if kind is None:
        held = getattr(schema[field], "document_type", type(schema[field])).__name__
        raise ValueError(f"{name}: field {field!r} holds {held}; the review queue tags {KINDS}.")
    return f"{field}.{LISTS[kind]}" if kind in LISTS else field


def _label_type(schema_field: Any) -> type | None:
    kind = getattr(schema_field, "document_type", None) if isinstance(schema_field, fof.EmbeddedDocumentField) else None
    return kind if kind in LISTS or kind in SINGLES else None


def _per_sample(values: list[Any], is_list: bool) -> list[list[Any]]:
    """A list per sample, whether the field holds lists of labels or one label."""
    if is_list:
        return [list(value or []) for value in values]
    return [[] if value is None else [value] for value in values]


def check_reviewed_field(samples: Any, path: str, reviewed_field: str | None) -> str | None:
    """Where ``reviewed_field`` is: ``"sample"`` (a sample field), ``"label"`` (an attribute of the labels) or
    None (not given); raises ``ValueError`` when it is neither, so that a misspelt name re-tags nothing."""
    if reviewed_field is None:
        return None
    if not isinstance(reviewed_field, str) or not reviewed_field:
        raise ValueError(f"reviewed_field must be a field name, got {reviewed_field!r}.")
    if reviewed_field in samples.get_field_schema():
        return "sample"
    values = samples.values(f"{path}.{reviewed_field}")
    if any(value is not None for value in _flatten(values)):
        return "label"
    raise ValueError(
        f"reviewed_field: {reviewed_field!r} is neither a sample field nor an attribute of any label in "
        f"{path.split('.')[0]!r}; check its name."
    )


def _flatten(values: list[Any]) -> list[Any]:
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


def is_marked(value: Any) -> bool:
    """Whether a reviewed field's value says reviewed: set, and not False, 0 or empty."""
    return value is not None and value is not False and value != 0 and value != ""


def read_labels(
    samples: Any, path: str, reviewed_tags: tuple[str, ...], reviewed_field: str | None, where: str | None
) -> tuple[list[str], list[LabelFacts]]:
    """The ids of the samples ``samples`` shows, and every label of ``path`` it shows, with its facts."""
    is_list = path.count(".") == 1 and path.split(".")[1] in LISTS.values()
    names = ["id", "label", "confidence", "tags"] + ([reviewed_field] if where == "label" else [])
    ids, sample_tags, *columns = samples.values(["id", "tags", *[f"{path}.{name}" for name in names]])
    marked_samples = samples.values(reviewed_field) if where == "sample" else [None] * len(ids)
    columns = [_per_sample(column, is_list) for column in columns]
    facts = []
    for index, sample_id in enumerate(ids):
        sample_reviewed = is_marked(marked_samples[index]) or bool(set(sample_tags[index] or ()) & set(reviewed_tags))
        for label_id, label, confidence, tags, *marks in zip(*(column[index] for column in columns), strict=True):
            tags = tuple(tags or ())
            reviewed = sample_reviewed or bool(set(tags) & set(reviewed_tags)) or bool(marks and is_marked(marks[0]))
            facts.append(LabelFacts(sample_id, label_id, label, confidence, tags, reviewed))
    return ids, facts

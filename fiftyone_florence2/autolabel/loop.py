"""The loop's glue: the labels to fine-tune on, gathered into one field that ``train()`` reads.

After a review queue, what a person can vouch for is the reviewed slice (its
ground truth, or the predictions they tagged reviewed) and the labels the queue
accepted. :func:`training_labels` copies those into a new field, leaves every
other field as it was, saves a view of the samples that have some, and notes
on the field where its labels came from.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from fiftyone_florence2.autolabel.queue import REVIEWED
from fiftyone_florence2.autolabel.reading import label_path

ACCEPTED = ("accepted",)
MADE_BY = "fiftyone_florence2.training_labels"
LEFTOVER_OF = "leftover_of"  # marks a staging or replaced field until the call that made it completes


def _tags(name: str, value: Iterable[str] | str) -> tuple[str, ...]:
    tags = (value,) if isinstance(value, str) else tuple(value or ())
    if not all(isinstance(tag, str) and tag for tag in tags):
        raise ValueError(f"{name} must be tag names, got {value!r}.")
    return tags


def _check_into(samples: Any, into: Any, used: tuple[str | None, ...], overwrite: bool) -> None:
    if not isinstance(into, str) or not into.isidentifier():
        raise ValueError(f"into must be a new field name (letters, digits, underscores), got {into!r}.")
    if into in used:
        raise ValueError(f"into must be a new field, not {into!r}, which the labels are read from.")
    dataset = samples._root_dataset
    field = dataset.get_field_schema().get(into)
    if field is None:
        if dataset.has_saved_view(into):
            raise ValueError(f"into: a saved view is already named {into!r}; name a new field.")
        return
    ours = (getattr(field, "info", None) or {}).get("made_by") == MADE_BY
    if not (overwrite and ours):
        hint = "pass overwrite=True to replace it" if ours else "it holds labels this call did not write"
        raise ValueError(f"into: field {into!r} already exists; name a new one, or {hint}.")


def _check_gt(samples: Any, pred_field: str, gt_field: str | None) -> None:
    if gt_field is None:
        return
    label_path(samples, gt_field, name="gt_field")
    schema = samples.get_field_schema()
    if schema[gt_field].document_type is not schema[pred_field].document_type:
        raise ValueError(
            f"gt_field {gt_field!r} holds {schema[gt_field].document_type.__name__}, but pred_field {pred_field!r} "
            f"holds {schema[pred_field].document_type.__name__}; training reads one kind of label."
        )


def _kept(labels: Any, attr: str | None, keep: set[str] | None, partial: bool = True) -> tuple[Any, bool]:
    """Copies of ``labels`` (a list field's value, or one label) with a tag in ``keep`` (None: all), or None;
    and whether only some of them have such a tag. Without ``partial``, such labels give None."""
    if labels is None:
        return None, False
    if attr is None:
        return (labels.copy() if keep is None or set(labels.tags or ()) & keep else None), False
    items = getattr(labels, attr) or []
    kept = [item.copy() for item in items if keep is None or set(item.tags or ()) & keep]
    partly = 0 < len(kept) < len(items)
    if partly and not partial:
        return None, True
    return (type(labels)(**{attr: kept}) if kept else None), partly


def training_labels(
    samples: Any,
    pred_field: str,
    into: str,
    gt_field: str | None = None,
    accepted_tags: Iterable[str] | str = ACCEPTED,
    reviewed_tags: Iterable[str] | str = REVIEWED,
    overwrite: bool = False,
    partial: bool = False,
) -> Any:
    """Copies what a person vouches for into the new field ``into`` and returns the samples to fine-tune on.

    A sample tagged with a reviewed tag gives its ``gt_field`` labels (when ``gt_field`` is given); every other
    sample gives the labels of ``pred_field`` when each of them is tagged with an accepted or a reviewed tag.
    A sample with only some labels vouched for is left out (unless ``partial``): trained on, its other objects
    would teach the model to find nothing there. Train with ``f2.train(view, label_field=into, ...)``. The view
    is also saved under the name ``into``; ``field.info["partly_vouched_left_out"]`` counts the samples left out.

    Args:
        samples: the dataset or view (only its samples and labels are read)
        pred_field: the predictions the review queue tagged
        into: a new field to copy the labels into
        gt_field (None): the field holding the reviewed slice's checked labels
        accepted_tags (("accepted",)): label tags of predictions to learn from
        reviewed_tags (("reviewed",)): label tags of checked predictions, and sample tags of the reviewed slice
        overwrite (False): replace a field this function wrote before
        partial (False): also learn from samples whose labels are only partly accepted or reviewed (their
            vouched-for labels alone)

    Returns:
        a view of the samples that have labels in ``into``
    """
    path = label_path(samples, pred_field)
    _check_gt(samples, pred_field, gt_field)
    accepted, reviewed = _tags("accepted_tags", accepted_tags), _tags("reviewed_tags", reviewed_tags)
    _check_into(samples, into, (pred_field, gt_field), overwrite)
    attr = path.split(".")[1] if "." in path else None
    keep = set(accepted) | set(reviewed)
    ids, tags, predicted, truth = samples.values(["id", "tags", pred_field, gt_field or pred_field])
    values, left_out = {}, 0
    for sample_id, sample_tags, labels, checked in zip(ids, tags, predicted, truth, strict=True):
        slice_sample = gt_field is not None and bool(set(sample_tags or ()) & set(reviewed))
        values[sample_id], partly = _kept(checked, attr, None) if slice_sample else _kept(labels, attr, keep, partial)
        left_out += partly and not partial
    if not any(value is not None for value in values.values()):
        where = f"no sample tagged {' or '.join(reviewed)} has {gt_field!r} labels, and " if gt_field else ""
        raise ValueError(
            f"Nothing to learn from: {where}no sample of {pred_field!r} has every label tagged "
            f"{' or '.join(sorted(keep))}{_partly(left_out)} (run the review queue, and tag what you check)."
        )
    info = {"made_by": MADE_BY, "pred_field": pred_field, "gt_field": gt_field,
            "accepted_tags": list(accepted), "reviewed_tags": list(reviewed), "partial": partial,
            "partly_vouched_left_out": left_out}  # fmt: skip
    _write_field(samples, into, values, info, f"labels to fine-tune on: reviewed and accepted labels of {pred_field}")
    view = samples.exists(into)
    samples._root_dataset.save_view(into, view, overwrite=True)
    return view


def gathered(view: Any, into: str) -> dict[str, int]:
    """What :func:`training_labels` copied into ``into`` (``view`` is what it returned): labels, samples, and
    the samples left out as only partly vouched for."""
    left_out = view._root_dataset.get_field(into).info.get("partly_vouched_left_out", 0)
    return {"labels": view.count(label_path(view, into)), "samples": len(view), "left_out": left_out}


def gathered_lines(found: dict[str, int], into: str) -> list[str]:
    """:func:`gathered`'s counts in Python's words (``in_route_words`` names the CLI's or the App's controls)."""
    lines = [f"Copied {found['labels']} label(s) on {found['samples']} sample(s) into {into!r}; saved view {into!r}."]
    if found["left_out"]:
        lines.append(f"Left out {found['left_out']} sample(s) with only some labels accepted or reviewed "
                     "(partial=True keeps them).")  # fmt: skip
    return lines


def _partly(left_out: int) -> str:
    return f"; {left_out} sample(s) have only some labels tagged (learnt from with partial=True)" if left_out else ""


def _write_field(samples: Any, into: str, values: dict, info: dict, description: str) -> None:
    """Writes ``values`` into ``into`` through a staging field, so that an earlier ``into`` (ours) is replaced
    only once its successor is complete; fields a stopped earlier call left behind are removed after."""
    dataset = samples._root_dataset
    token = secrets.token_hex(4)
    staging, previous = f"{into}_staging_{token}", f"{into}_replaced_{token}"
    samples.set_values(staging, values, key_field="id")
    _describe(dataset, staging, {**info, LEFTOVER_OF: into}, description)
    if into in dataset.get_field_schema():
        _describe(dataset, into, {**dataset.get_field(into).info, LEFTOVER_OF: into}, description)
        dataset.rename_sample_field(into, previous)
    dataset.rename_sample_field(staging, into)
    dataset.reload()  # a renamed field's object keeps its old path until then (FiftyOne 1.22)
    _describe(dataset, into, info, description)
    for name, field in dataset.get_field_schema().items():
        if (getattr(field, "info", None) or {}).get(LEFTOVER_OF) == into:
            dataset.delete_sample_field(name)


def _describe(dataset: Any, name: str, info: dict, description: str) -> None:
    field = dataset.get_field(name)
    field.info, field.description = info, description
    field.save()

"""FiftyOne samples to training examples (image, question, answer): the data side of fine-tuning.

Everything about the data a training run can refuse is refused here, before
any weights load: an empty view, a missing field or one of the wrong label
type, a validation split with no samples. Labels are read through the view, so
labels a view filters out are not learnt. Samples whose labels cannot be learnt (none stored, a box off the
image, ...) and images that cannot be read are skipped, each with its reason.
No torch here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fiftyone_florence2.core.tasks import get_tasks
from fiftyone_florence2.engine.images import ImageLoadError, load_rgb
from fiftyone_florence2.labels.convert import texts_from_value
from fiftyone_florence2.runs.checks import label_class
from fiftyone_florence2.training.options import TrainOptions
from fiftyone_florence2.training.targets import learns_from, to_training_pairs


@dataclass(frozen=True)
class Example:
    """One generation to learn: the image, the question the model reads, and the answer it should write."""

    sample_id: str
    filepath: str
    task: str
    question: str
    answer: str


@dataclass
class Split:
    """The examples to train and validate on, the sample ids behind them, and why samples were left out."""

    train: list[Example]
    val: list[Example]
    skips: dict[str, str] = field(default_factory=dict)

    @property
    def train_ids(self) -> list[str]:
        """The samples the training examples come from, in order."""
        return list(dict.fromkeys(example.sample_id for example in self.train))

    @property
    def val_ids(self) -> list[str]:
        """The samples the validation examples come from, in order."""
        return list(dict.fromkeys(example.sample_id for example in self.val))


def check_training_collection(samples: Any, fields: dict[str, str], prompt_field: str | None) -> None:
    """Refuses a collection a run cannot learn from, with what to do instead."""
    if samples.media_type == "video":
        raise ValueError("Train on a video's frames as images: pass dataset.to_frames(sample_frames=True).")
    if samples.media_type != "image" or getattr(samples, "_is_patches", False):
        raise ValueError(
            f"Florence-2 trains on images; this collection holds {samples.media_type!r} media"
            + (
                " as patches (train a region task on the source dataset instead)"
                if samples.media_type == "image"
                else ""
            )
            + "."
        )
    if len(samples) == 0:
        raise ValueError("There are no samples to train on: the view is empty.")
    schema = samples.get_field_schema(flat=True)
    for name, label_field in fields.items():
        task = get_tasks(name)[0]
        if label_field not in schema:
            raise ValueError(f"The dataset has no field {label_field!r} to learn {name} from.")
        kind, allowed = label_class(schema[label_field]), learns_from(task)
        if kind not in allowed:
            held = kind.__name__ if kind else type(schema[label_field]).__name__
            raise ValueError(
                f"Task {name} learns from {' or '.join(c.__name__ for c in allowed)} labels, but {label_field!r} "
                f"holds {held}."
            )
    if prompt_field is not None and prompt_field not in schema:
        raise ValueError(f"The dataset has no field {prompt_field!r} with the captions to ground.")


def _draw(sample_id: str, seed: int) -> float:
    """A number in [0, 1) fixed by the sample id and the seed, for a reproducible split."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_ids(
    samples: Any, val_view: Any = None, val_tag: str | None = None, val_fraction: float | None = None, seed: int = 0
) -> tuple[list[str], list[str]]:
    """``(train ids, validation ids)``; no validation split gives no validation ids."""
    ids = samples.values("id")
    val = None
    if val_view is not None:
        if val_view._root_dataset.name != samples._root_dataset.name:
            raise ValueError("val_view must be a view of the dataset being trained on.")
        val = val_view.values("id")
        held = set(val)
    elif val_tag is not None:
        held = set(samples.match_tags(val_tag).values("id"))
    elif val_fraction is not None:
        order = sorted(ids, key=lambda sample_id: _draw(sample_id, seed))
        held = set(order[: round(val_fraction * len(ids))])
    else:
        return ids, []
    val = [i for i in ids if i in held] if val is None else val
    train = [i for i in ids if i not in held]
    what = {True: "val_view", False: f"val_tag {val_tag!r}" if val_tag else f"val_fraction {val_fraction}"}
    if not val:
        raise ValueError(f"The validation split ({what[val_view is not None]}) has no samples.")
    if not train:
        raise ValueError(
            f"The validation split ({what[val_view is not None]}) takes every sample: none is left to train."
        )
    return train, val


def check_split_sizes(samples: Any, count: int, val_tag: str | None, val_fraction: float | None) -> None:
    """The checks of :func:`split_ids` that counts answer (one aggregation at most), for a form that checks
    as it is filled in; :func:`split_ids` checks the ids themselves when the run starts."""
    if val_tag is not None:
        held, what = samples.count_sample_tags().get(val_tag, 0), f"val_tag {val_tag!r}"
    elif val_fraction is not None:
        held, what = round(val_fraction * count), f"val_fraction {val_fraction}"
    else:
        return
    if not held:
        raise ValueError(f"The validation split ({what}) has no samples.")
    if held >= count:
        raise ValueError(f"The validation split ({what}) takes every sample: none is left to train.")


def sample_examples(
    sample: dict[str, Any], fields: dict[str, str], prompt_field: str | None, classes: Sequence[str] | None
) -> list[Example]:
    """The examples one sample's labels stand for (``sample`` maps field names to values); ``ValueError``
    says why it has none to give."""
    examples = []
    for name, label_field in fields.items():
        label = sample.get(label_field)
        if label is None:
            raise ValueError(f"it has no {label_field!r} label to learn {name} from")
        prompt = None
        task = get_tasks(name)[0]
        if task.input == "text" and not task.takes_classes:
            captions = texts_from_value(sample.get(prompt_field))
            if len(captions) != 1:
                raise ValueError(f"its {prompt_field!r} holds {len(captions)} captions; phrase grounding learns one")
            prompt = captions[0]
        pairs = to_training_pairs(task, label, prompt=prompt, classes=classes if task.takes_classes else None)
        if not pairs:
            raise ValueError(
                "no instance, and no classes given to ask for"
                if task.takes_classes and classes is None
                else f"its {label_field!r} label gives {name} nothing to learn"
            )
        examples += [Example(sample["id"], sample["filepath"], name, q, a) for q, a in pairs]
    return examples


def collect_examples(
    source: Any, ids: Iterable[str], fields: dict[str, str], prompt_field: str | None, classes, skips: dict
) -> list[Example]:
    """The examples of the samples ``ids`` of the view ``source``, in their order, from the labels the view
    shows; a sample that gives none is skipped with its reason."""
    wanted = list(ids)
    names = ["id", "filepath", *dict.fromkeys([*fields.values(), *([prompt_field] if prompt_field else [])])]
    view = source.select(wanted, ordered=True)
    examples = []
    for values in zip(*view.values(names)):
        sample = dict(zip(names, values))
        try:
            examples += sample_examples(sample, fields, prompt_field, classes)
        except ValueError as error:
            skips[sample["id"]] = f"not learnt: {error}"
    return examples


def readable(examples: list[Example], skips: dict[str, str], draft_wh: tuple[int, int] | None) -> list[Example]:
    """The examples whose image reads, through the labelling path's safe reader; the others' samples are
    skipped with the reader's reason."""
    reasons: dict[str, str | None] = {}
    for path in dict.fromkeys(example.filepath for example in examples):
        try:
            load_rgb(path, draft_wh)
            reasons[path] = None
        except ImageLoadError as error:
            reasons[path] = str(error)
    kept = []
    for example in examples:
        reason = reasons[example.filepath]
        if reason is None:
            kept.append(example)
        else:
            skips[example.sample_id] = reason
    return kept


def make_split(samples: Any, options: TrainOptions, draft_wh: tuple[int, int] | None = None) -> Split:
    """The training and validation examples ``options`` (read by ``read_train_options``) ask for."""
    fields, prompt_field = options.label_field, options.prompt_field
    check_training_collection(samples, fields, prompt_field)
    train_ids, val_ids = split_ids(samples, options.val_view, options.val_tag, options.val_fraction, options.seed)
    skips: dict[str, str] = {}
    classes, val_source = options.classes, validation_source(samples, options.val_view)
    train = readable(collect_examples(samples, train_ids, fields, prompt_field, classes, skips), skips, draft_wh)
    val = readable(collect_examples(val_source, val_ids, fields, prompt_field, classes, skips), skips, draft_wh)
    if not train:
        reasons = sorted(set(skips.values()))[:3]
        raise ValueError(f"None of the {len(train_ids)} training samples can be learnt: {'; '.join(reasons)}.")
    if val_ids and not val:
        raise ValueError("None of the validation samples can be used: " + "; ".join(sorted(set(skips.values()))[:3]))
    return Split(train, val, skips)


def validation_source(samples: Any, val_view: Any) -> Any:
    """The view whose labels validation reads: ``val_view`` when given, else the view trained on."""
    return samples if val_view is None else val_view


def drop_unlearnable(split: Split, check_question: Callable[[str], None], check_answer: Callable[[str], None]) -> None:
    """Skips the samples with a question the model cannot read or an answer it cannot write (the checks raise
    ``ValueError`` with the reason: a caption too long to fit beside the image, an answer longer than the
    decoder's positions)."""
    examples = [*split.train, *split.val]
    validating = bool(split.val)
    questions = _problems({example.question for example in examples}, check_question)
    answers = _problems({example.answer for example in examples}, check_answer)
    reasons: dict[str, str] = {}
    for example in examples:
        problem = questions.get(example.question) or answers.get(example.answer)
        if problem:
            reasons[example.sample_id] = f"not learnt: {problem}"
    split.skips.update(reasons)
    split.train = [example for example in split.train if example.sample_id not in split.skips]
    split.val = [example for example in split.val if example.sample_id not in split.skips]
    if not split.train or (validating and not split.val):
        which = "training" if not split.train else "validation"
        raise ValueError(f"No {which} sample is left: " + "; ".join(sorted(set(reasons.values()))[:3]))


def _problems(texts: Iterable[str], check: Callable[[str], None]) -> dict[str, str]:
    """``{text: why check refuses it}`` for each text ``check`` refuses."""
    found = {}
    for text in texts:
        try:
            check(text)
        except ValueError as error:
            found[text] = str(error)
    return found

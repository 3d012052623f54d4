"""Confidence thresholds, one for every class or one per class. Standard library only.

A threshold is given as a number (every class), as a mapping of class to number with ``"*"`` for
every other class (``{"car": 0.7, "*": 0.4}``), or as text, the way the command line and the App
form send it (``"0.4"``, ``"car=0.7,*=0.4"``, ``"0.4,car=0.7"``: a bare number is the default).
Calibration results give the mapping form, which can be passed straight back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fiftyone_florence2.core.tasks import Task

ANY_CLASS = "*"


@dataclass(frozen=True)
class Thresholds:
    """Per-class confidence thresholds.

    Attributes:
        default: the threshold of a class not named in ``per_class`` (None: such a class is unknown)
        per_class: class name -> threshold
    """

    default: float | None = None
    per_class: Mapping[str, float] = field(default_factory=dict)

    def for_class(self, label: str | None) -> float:
        """The threshold ``label`` must reach; raises ``ValueError`` for a class with none."""
        if label is not None and label in self.per_class:
            return self.per_class[label]
        if self.default is None:
            known = ", ".join(sorted(self.per_class)) or "none"
            raise ValueError(
                f"No threshold for class {label!r} (thresholds are set for: {known}); "
                f"add one for it, or a default with {ANY_CLASS!r}."
            )
        return self.default

    def unknown_classes(self, labels: Iterable[str | None]) -> list[str]:
        """The classes among ``labels`` that have no threshold (always empty with a default)."""
        if self.default is not None:
            return []
        return sorted({str(label) for label in labels if label not in self.per_class})

    def as_value(self) -> float | dict[str, float]:
        """The JSON form: a number when there is only a default, else the mapping with ``"*"``."""
        if not self.per_class and self.default is not None:
            return self.default
        value = dict(self.per_class)
        if self.default is not None:
            value[ANY_CLASS] = self.default
        return value

    def describe(self) -> str:
        """One short line for logs and summaries (``car >= 0.7, others >= 0.4``)."""
        parts = [f"{name} >= {value:g}" for name, value in sorted(self.per_class.items())]
        if self.default is not None:
            parts.append(f"{'others' if parts else 'all'} >= {self.default:g}")
        return ", ".join(parts)


def _threshold(name: str, key: str, value: Any) -> float:
    where = name if key == ANY_CLASS else f"{name}[{key!r}]"
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{where} must be a number from 0 to 1, got {value!r}.") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number from 0 to 1, got {value!r}.")
    if not 0 <= value <= 1:
        raise ValueError(f"{where} must be from 0 to 1 (confidences are probabilities), got {value!r}.")
    return float(value)


def _pairs_from_text(name: str, text: str) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for part in (part.strip() for part in text.split(",")):
        if not part:
            continue
        key, sep, number = part.rpartition("=")
        key = key.strip() if sep else ANY_CLASS
        if sep and not key:
            raise ValueError(f"{name}: {part!r} names no class; write CLASS=NUMBER, or a bare number for every class.")
        if key in pairs:
            raise ValueError(f"{name} gives class {key!r} more than once.")
        pairs[key] = number
    if not pairs:
        raise ValueError(f"{name} must be a number from 0 to 1, or CLASS=NUMBER pairs, got {text!r}.")
    return pairs


def read_thresholds(name: str, value: Any) -> Thresholds | None:
    """``value`` (a number, a mapping or text; see the module docstring) as :class:`Thresholds`, or None
    for None; anything else raises ``ValueError`` naming ``name``."""
    if value is None:
        return None
    if isinstance(value, Thresholds):
        return value
    if isinstance(value, str):
        value = _pairs_from_text(name, value)
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{name} must name at least one class, or be a number.")
        bad = [key for key in value if not isinstance(key, str) or not key.strip()]
        if bad:
            raise ValueError(f"{name}: class names must be non-empty texts, got {bad[0]!r}.")
        per_class = {key: _threshold(name, key, number) for key, number in value.items() if key != ANY_CLASS}
        default = _threshold(name, ANY_CLASS, value[ANY_CLASS]) if ANY_CLASS in value else None
        return Thresholds(default, per_class)
    return Thresholds(_threshold(name, ANY_CLASS, value), {})


def known_classes(tasks: Sequence[Task], values: Mapping[str, Any]) -> list[str] | None:
    """The classes every label of ``tasks`` will carry, when the run fixes them (``classes``, or one
    ``prompt``, of tasks that label by the prompt); None when some task names its own classes."""
    fixed = values.get("classes") or ([values["prompt"]] if values.get("prompt") else None)
    if not tasks or fixed is None or not all(task.labelled_by_prompt for task in tasks):
        return None
    return list(fixed)


def uncovered_classes(thresholds: Thresholds | None, tasks: Sequence[Task], values: Mapping[str, Any]) -> str | None:
    """Why per-class thresholds with no default do not cover every class the run can write, or None.

    Where the run fixes its classes, each needs a threshold; where a task names its own (detection,
    captions, a prompt field), a default is needed, since a label with no threshold would be dropped
    or kept by a rule nobody chose.
    """
    if thresholds is None or thresholds.default is not None:
        return None
    classes = known_classes(tasks, values)
    if classes is None:
        names = ", ".join(task.name for task in tasks)
        return (f"names no threshold for the classes it does not list, and {names} can write any class: add a "
                f"default for them (a bare number, or {ANY_CLASS}=NUMBER), e.g. 0.4,car=0.7")  # fmt: skip
    unknown = thresholds.unknown_classes(classes)
    if unknown:
        return (f"has no threshold for class(es) {', '.join(map(repr, unknown))} of the classes asked for: "
                f"add one for each, or a default for them (a bare number, or {ANY_CLASS}=NUMBER)")  # fmt: skip
    return None

"""``Florence2ModelConfig``: the model options of :mod:`~fiftyone_florence2.core.options`, checked when built."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone.core.config as foc

from fiftyone_florence2.core.errors import OptionError, literal, named
from fiftyone_florence2.core.options import MODEL_OPTIONS, OPTIONS, given, refuse_unmet
from fiftyone_florence2.core.tasks import Task, get_tasks
from fiftyone_florence2.core.thresholds import Thresholds, uncovered_classes
from fiftyone_florence2.core.tiling import Tiling

_TEXT_SOURCES = ("prompt", "prompt_field", "classes")
_TEXT_OPTIONS = tuple(OPTIONS[name] for name in _TEXT_SOURCES)


class Florence2ModelConfig(foc.Config):
    """Settings of a :class:`~fiftyone_florence2.runs.model.Florence2Model`, validated when built.

    Each option of :data:`fiftyone_florence2.core.options.MODEL_OPTIONS` is an
    attribute, with the default, check and help declared there (see
    ``docs/OPTIONS.md``). Bad values, unknown options and inputs that no task
    reads raise ``ValueError`` before any weights load.
    """

    def __init__(self, d: dict):
        unknown = sorted(set(d) - {option.name for option in MODEL_OPTIONS})
        if unknown:
            names = ", ".join(option.name for option in MODEL_OPTIONS)
            raise ValueError(f"Unknown option(s) {', '.join(unknown)}. Options are: {names}.")
        for option in MODEL_OPTIONS:
            setattr(self, option.name, option.read(self.parse_raw(d, option.name, default=None)))
        self.tasks: tuple[Task, ...] = get_tasks(self.task)
        self._check_inputs()

    def _check_inputs(self) -> None:
        """Each task gets exactly the inputs it needs; an input no task reads is a mistake."""
        values = {option.name: getattr(self, option.name) for option in MODEL_OPTIONS}
        for option in MODEL_OPTIONS:
            if option.applies and given(option, values[option.name]) and not any(map(option.applies, self.tasks)):
                raise OptionError(
                    f"{named(option.name)} was given, but none of the tasks ({self._names()}) reads it.", option
                )
        refuse_unmet(MODEL_OPTIONS, values)
        reason = uncovered_classes(self.confidence_thresh, self.tasks, values)
        if reason:
            raise OptionError(f"{named('confidence_thresh')} {literal(reason)}.", OPTIONS["confidence_thresh"])
        text_tasks = [t.name for t in self.tasks if t.input == "text"]
        sources = [name for name in _TEXT_SOURCES if getattr(self, name) is not None]
        if text_tasks and not sources:
            raise OptionError(
                f"Task(s) {', '.join(text_tasks)} need text: pass {{prompt:'...'|TEXT}}, "
                "{prompt_field:'<field>'|FIELD} or, "
                f"for {', '.join(t.name for t in self.tasks if t.takes_classes) or 'some tasks'}, "
                "{classes:[...]|A,B}.",
                *_TEXT_OPTIONS,
            )
        if len(sources) > 1:
            raise OptionError(
                f"Pass only one of {{prompt:name}}, {{prompt_field:name}} and {{classes:name}} (got "
                f"{', '.join(map(named, sources))}).",
                *_TEXT_OPTIONS,
            )
        without = [t.name for t in self.tasks if t.input == "text" and not t.takes_classes]
        if self.classes is not None and without:
            raise OptionError(
                f"{{classes:name}} is not read by {', '.join(without)}; give it {{prompt:name}} or "
                "{prompt_field:name}.",
                *_TEXT_OPTIONS,
            )
        region_tasks = [t.name for t in self.tasks if t.input == "region"]
        if region_tasks and self.regions_field is None:
            raise OptionError(
                f"Task(s) {', '.join(region_tasks)} need {{regions_field:'<Detections field>'|FIELD}}.",
                OPTIONS["regions_field"],
            )

    def _names(self) -> str:
        return ", ".join(task.name for task in self.tasks)

    @property
    def label_types(self) -> dict[str, str]:
        """The FiftyOne label type each task writes, with ``masks`` taken into account."""
        return {t.name: "Detections" if self.masks and t.can_mask else t.label_type for t in self.tasks}

    def label_fields(self, label_field: str) -> dict[str, str]:
        """The field each task writes: ``label_field``, or ``<label_field>_<task>`` for several tasks."""
        return field_names(self.tasks, label_field, self.multitask)

    @property
    def tiling(self) -> Tiling | None:
        """How each image is tiled for the tasks that find their own boxes, or None without tiles."""
        tiled = [task.finds_instances for task in self.tasks]
        if self.tiles == 1 or not any(tiled):
            return None
        return Tiling(self.tiles, self.tile_overlap, whole=not all(tiled))

    @property
    def multitask(self) -> bool:
        """Whether predictions are dicts keyed by task name."""
        return len(self.tasks) > 1 or isinstance(self.task, (list, tuple))

    def settings(self) -> dict[str, Any]:
        """The options as JSON for a run record: the tasks and inputs, and ``generation``."""
        record: dict[str, Any] = {"tasks": [task.name for task in self.tasks]}
        generation: dict[str, Any] = {}
        for option in MODEL_OPTIONS:
            if option.name == "task":
                continue
            value = getattr(self, option.name)
            if isinstance(value, Thresholds):
                value = value.as_value()  # the JSON form, which confidence_thresh takes back
            elif value is not None and not isinstance(value, (str, int, float, bool, list)):
                value = repr(value)
            (generation if option.group == "generation" else record)[option.name] = value
        record["checkpoint"] = record.pop("model")
        return {**record, "generation": generation}


def field_names(tasks: Sequence[Task], label_field: str, multitask: bool) -> dict[str, str]:
    """``{task: field}``: ``label_field`` for one task, ``<label_field>_<task>`` for each of several."""
    if multitask:
        return {t.name: f"{label_field}_{t.name}" for t in tasks}
    return {tasks[0].name: label_field}


def option_help(name: str) -> str:
    """The declared help of an option."""
    return OPTIONS[name].help

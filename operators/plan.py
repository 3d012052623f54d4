"""What one execution of an operator will do, read from its parameters and checked by the library.

Both the form (``resolve_input``) and the run (``execute``) build a
:class:`Plan`, so the App shows the problem that would stop the run. The
form's plan reads only the schema and two aggregations, so that it stays fast
on large datasets; the run's plan also snapshots the target ids and checks
every one of them (:func:`~fiftyone_florence2.runs.checks.check_run`). A preview
(the dry run) plans the current sample or a few selected ones, and checks what
the model reads, not the fields a run would write.

Tasks: ``task`` is a name or a list of names, as ``load_model`` takes it;
``tasks`` (the form's multi-select) is a list. A list of one name is that
task: its output field is ``label_field`` itself, not a prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fiftyone import ViewField as F

from fiftyone_florence2.core.errors import for_route
from fiftyone_florence2.core.options import (
    AUTO,
    MODEL_OPTIONS,
    OPTIONS,
    RUN_OPTIONS,
    Option,
    default_label_field,
    whole_number,
)
from fiftyone_florence2.core.tasks import DEFAULT_TASK, Task, get_tasks
from fiftyone_florence2.runs.checks import (
    check_collection,
    check_fields,
    check_inputs,
    check_run,
    check_sample_ids,
    check_sampling,
    frames_to_label,
    media_of,
    refuse_existing,
    written_fields,
)
from fiftyone_florence2.runs.config import Florence2ModelConfig, field_names

# Above this many target samples a run defaults to delegated execution: on a
# CPU, Florence-2-base takes seconds per image, and immediate runs time out
# after fo.config.operator_timeout (600 s).
DELEGATE_ABOVE = 50
# Immediate runs up to this many samples reload the App when they finish.
RELOAD_UP_TO = 1000
# A preview runs now, in the App server, and shows every label: a few samples at most.
PREVIEW_UP_TO = 8

# Where a text task takes its text from, in the order the form offers them.
TEXT_INPUTS = ("prompt", "prompt_field", "classes")
# The form's choice lists show "auto" where the declared default is None.
_AUTO_CHOICES = frozenset({"device", "dtype"})

FORM_OPTIONS = tuple(option for option in (*MODEL_OPTIONS, *RUN_OPTIONS) if option.form)


def form_default(option: Option) -> Any:
    """The declared default as the form shows it: ``auto`` for a device or dtype left to the runner."""
    return AUTO if option.name in _AUTO_CHOICES else option.default


DEFAULTS: dict[str, Any] = {
    **{o.name: form_default(o) for o in FORM_OPTIONS},
    "tasks": None,  # the form's multi-select; else ``task``
    "text_input": None,  # the first of TEXT_INPUTS that was given, else "prompt"
    "delegate": None,  # by the number of target samples
    "shards": 1,
    # Set only on the operations that a sharded run queues.
    "shard": None,
    "run_key": None,
}

# Text the user must give: left empty, it is a mistake to report, not an option left out.
_TEXTS = frozenset({"model", "prompt"})


def read_params(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with defaults filled in; a blank choice (``""``, ``None``) reads as not given.

    ``task`` becomes what the config takes: ``tasks`` if given, a name for one task, a list for several.
    """
    given = {
        key: value
        for key, value in params.items()
        if key in DEFAULTS and value is not None and (value != "" or key in _TEXTS)
    }
    values = {**DEFAULTS, **given}
    if values["text_input"] is None:
        values["text_input"] = next((key for key in TEXT_INPUTS if values[key] is not None), TEXT_INPUTS[0])
    values["task"] = _one_or_list(values["tasks"] if values["tasks"] is not None else values["task"])
    return values


def _one_or_list(chosen: Any) -> Any:
    if isinstance(chosen, (list, tuple)):
        return chosen[0] if len(chosen) == 1 else list(chosen)
    return chosen


def _conflict(params: dict[str, Any]) -> str | None:
    """Why ``task`` and ``tasks`` disagree, when both are given."""
    task, tasks = params.get("task"), params.get("tasks")
    if task in (None, "") or tasks is None or _one_or_list(task) == _one_or_list(tasks):
        return None
    return f"Pass task or tasks, not both (task={task!r}, tasks={tasks!r})."


def reads(option: Option, tasks: tuple[Task, ...]) -> bool:
    """Whether any of ``tasks`` reads ``option`` (options with no task restriction: always)."""
    return option.applies is None or any(map(option.applies, tasks))


def text_sources(tasks: tuple[Task, ...]) -> list[str]:
    """The text inputs every text task of ``tasks`` reads (``classes`` only if they all take classes)."""
    text_tasks = [task for task in tasks if task.input == "text"]
    if not text_tasks:
        return []
    return [name for name in TEXT_INPUTS if all(map(OPTIONS[name].applies, text_tasks))]


def model_options(values: dict[str, Any], tasks: tuple[Task, ...]) -> dict[str, Any]:
    """The ``Florence2ModelConfig`` options: the form's, less the inputs no task reads and the text
    inputs that were not chosen."""
    options = {"task": values["task"]}
    for option in MODEL_OPTIONS:
        if not option.form or option.name == "task" or not reads(option, tasks):
            continue
        if option.name in TEXT_INPUTS and option.name != values["text_input"]:
            continue
        if option.requires and option.requires(values):
            continue  # the form hides it (tile_overlap while tiles is 1): a value left in it is stale
        options[option.name] = values[option.name]
    return options


@dataclass
class Plan:
    """A checked execution: ``problem`` is the first reason it cannot run, or None."""

    values: dict[str, Any]
    tasks: tuple[Task, ...]
    label_field: str
    samples: Any
    count: int
    shards: int = 1
    shard: tuple[int, int] | None = None
    config: Florence2ModelConfig | None = None
    fields: dict[str, str] | None = None
    problem: str | None = None
    preview: bool = False
    ids: list[str] | None = None  # a preview's samples

    @property
    def delegate(self) -> bool:
        """Whether the labelling runs in delegated operations (sharded runs always do)."""
        if self.preview:
            return False
        if self.shards > 1 or self.shard is not None:
            return True
        chosen = self.values["delegate"]
        return self.count > DELEGATE_ABOVE if chosen is None else bool(chosen)

    @property
    def fans_out(self) -> bool:
        """Whether this execution queues the shards rather than labelling."""
        return self.shards > 1 and self.shard is None and not self.preview

    @property
    def label_types(self) -> dict[str, str]:
        """The label type each task writes (``masks`` taken into account once the config is built)."""
        if self.config is not None:
            return self.config.label_types
        return {task.name: task.label_type for task in self.tasks}

    @property
    def label_fields(self) -> dict[str, str]:
        """The field each task writes."""
        return self.fields or field_names(self.tasks, self.label_field, len(self.tasks) > 1)

    def outputs(self) -> str:
        """Each field with its label type: ``a (Classification), b (Detections)``."""
        types = self.label_types
        return ", ".join(f"{name} ({types[task]})" for task, name in self.label_fields.items())


def make_plan(ctx: Any, full: bool = True, preview: bool = False) -> Plan:
    """Reads the request and checks it with the library, before any model work.

    ``full=False`` (the form) checks what the schema and an aggregation tell;
    ``full=True`` (the run) also checks every target sample's existing labels.
    ``preview`` plans a dry run on the current sample or the selected ones.
    """
    values = read_params(ctx.params)
    try:
        tasks = get_tasks(values["task"])
    except (TypeError, ValueError) as e:
        tasks = get_tasks(DEFAULT_TASK)
        values["task"] = DEFAULT_TASK
        return Plan(values, tasks, default_label_field(tasks), None, 0, preview=preview, problem=for_route(e, "app"))
    label_field = values["label_field"] or default_label_field(tasks)
    plan = Plan(values, tasks, label_field, None, 0, preview=preview, problem=_conflict(ctx.params))
    if ctx.dataset is None:
        plan.problem = "Open a dataset of images first."
        return plan
    if preview:
        _preview_target(ctx, plan)
    else:
        plan.samples = ctx.target_view(require_flat=True)
        plan.count = plan.samples.count()
    if plan.problem:
        return plan
    try:
        plan.config = Florence2ModelConfig(model_options(values, tasks))
        if preview:
            check_collection(plan.samples)
            check_inputs(plan.samples, plan.config)
        else:
            _check_run(plan, full)
        if plan.count == 0:
            raise ValueError("The target holds no samples: choose another target view.")
    except (TypeError, ValueError) as e:
        plan.problem = for_route(e, "app")
    return plan


def _check_run(plan: Plan, full: bool) -> None:
    """The checks of a run that writes: shards, fields, and (``full``: every target's) existing labels."""
    values, samples = plan.values, plan.samples
    plan.shards = whole_number("shards", values["shards"])
    if values["shard"] is not None:
        index, count = values["shard"]
        plan.shard = (int(index), int(count))
    skip, overwrite, vectors = values["skip_existing"], values["overwrite"], values["embeddings_field"]
    if full:
        # A video's frames are sampled to images here, at execution, never while the form is filled in.
        plan.samples = samples = frames_to_label(samples, values["fps"], values["frame_step"])
        # A shard checks only its own samples for labels, not those its sibling shards wrote.
        plan.fields = check_run(samples, plan.config, plan.label_field, skip, overwrite, plan.shard, vectors)
    else:
        check_sampling(media_of(samples), values["fps"], values["frame_step"])
        plan.fields = check_fields(samples, plan.config, plan.label_field, skip, overwrite, vectors)
        # A queued shard's siblings label the same field: its full check counts its own samples only.
        names = written_fields(plan.fields, vectors)
        _check_existing(samples, names, skip or overwrite or plan.shard is not None)


def _preview_target(ctx: Any, plan: Plan) -> None:
    """The sample open in the App, else the selected samples: at most :data:`PREVIEW_UP_TO`."""
    ids = [ctx.current_sample] if ctx.current_sample else list(ctx.selected or [])
    try:
        check_sample_ids(ids)
    except ValueError as e:
        plan.problem = str(e)
        return
    plan.samples = ctx.view.select(ids) if ids else ctx.view
    plan.ids = ids
    if not ids:
        plan.problem = f"Open a sample, or select up to {PREVIEW_UP_TO} samples, to preview their labels."
    elif len(ids) > PREVIEW_UP_TO:
        plan.count = len(ids)
        plan.problem = (
            f"A dry run previews at most {PREVIEW_UP_TO} samples, and {len(ids)} are selected: select fewer, "
            "or run 'Florence-2: label samples' to label them all."
        )
    else:
        plan.count = plan.samples.count()


def _check_existing(samples: Any, names: list[str], allowed: bool) -> None:
    """The form's check of existing labels (and embeddings): one count over the target, in the database."""
    schema = samples.get_field_schema()
    present = [name for name in names if name in schema]
    if allowed or not present:
        return
    count = samples.match(F.any([F(name).exists() for name in present])).count()
    if count:
        refuse_existing(count, present)

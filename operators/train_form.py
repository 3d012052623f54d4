"""The fine-tuning operator's plan and form, from the fine-tuning option declarations.

Both the form (``resolve_input``) and the run (``execute``) build a
:class:`TrainPlan`, so the form shows the problem that would stop the run. The
plan checks what the options, the schema, two counts and the output directory
tell; ``train()`` then checks every sample's labels and image before any
weights load. Inputs are :data:`~fiftyone_florence2.training.options.TRAIN_OPTIONS`
with ``form=True``, walked by the labelling form's
:func:`~.form.place_inputs`; only the task, label-field, checkpoint and caption-field
inputs are placed their own way, and an input whose declaration ``requires`` other choices (the LoRA
settings) shows once they are made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fiftyone.operators.types as types

from fiftyone_florence2.core.errors import for_route
from fiftyone_florence2.core.tasks import Task, get_tasks
from fiftyone_florence2.training.data import check_split_sizes, check_training_collection
from fiftyone_florence2.training.options import TRAIN, TRAIN_OPTIONS, read_train_options
from fiftyone_florence2.training.output import check_output_dir, check_unlocked, media_dirs
from fiftyone_florence2.training.targets import learns_from

from .form import checkpoint_input, place_inputs, prompt_field_choices, tasks_input
from .plan import reads

FORM_TRAIN_OPTIONS = tuple(option for option in TRAIN_OPTIONS if option.form)
# The form's one-field-per-task object when several tasks are chosen; label_field holds one field.
LABEL_FIELDS = "label_fields"


@dataclass
class TrainPlan:
    """A checked fine-tuning run: ``options`` as ``train()`` takes them; ``problem``, the first reason it
    cannot run, or None."""

    options: dict[str, Any]
    tasks: tuple[Task, ...]
    samples: Any = None
    count: int = 0
    problem: str | None = None


def shown(option: Any, tasks: tuple[Task, ...], options: dict[str, Any]) -> bool:
    """Whether the form offers ``option``: a chosen task reads it, and the other choices let it be read (as
    its declaration's ``requires`` says: the LoRA settings with LoRA on)."""
    return reads(option, tasks) and (option.requires is None or option.requires(options) is None)


def train_options(params: dict[str, Any], tasks: tuple[Task, ...] | None = None) -> dict[str, Any]:
    """The parameters as ``train()``'s options: the declared form options given (a blank choice reads as
    not given), ``tasks`` (the multi-select) as ``task``, and ``label_fields`` (one per task) as
    ``label_field``. With ``tasks`` known, options that the form does not offer for them are dropped, as
    the App may still send a value that an earlier choice showed."""
    options = {key: value for key, value in params.items() if key in TRAIN and value not in (None, "")}
    chosen = params.get("tasks")
    if chosen:
        options["task"] = chosen[0] if len(chosen) == 1 else list(chosen)
    fields = params.get(LABEL_FIELDS)
    if isinstance(fields, dict) and isinstance(options.get("task"), list):
        options["label_field"] = {name: fields[name] for name in options["task"] if fields.get(name)}
    if tasks is not None:
        options = {key: value for key, value in options.items() if shown(TRAIN[key], tasks, options)}
    return options


def make_train_plan(ctx: Any) -> TrainPlan:
    """Reads the request and checks it with the library, before any work: options, target, fields,
    validation split sizes, output directory."""
    options = train_options(ctx.params)
    try:
        tasks = get_tasks(options.get("task", TRAIN["task"].default))
    except (TypeError, ValueError) as e:
        return TrainPlan(options, get_tasks(TRAIN["task"].default), problem=for_route(e, "app"))
    plan = TrainPlan(train_options(ctx.params, tasks), tasks)
    if ctx.dataset is None:
        plan.problem = "Open a dataset of images first."
        return plan
    plan.samples = ctx.target_view()
    try:
        read = read_train_options(plan.options)
        check_training_collection(plan.samples, read.label_field, read.prompt_field)
        plan.count = plan.samples.count()
        check_split_sizes(plan.samples, plan.count, read.val_tag, read.val_fraction)
        media = media_dirs(plan.samples)
        check_unlocked(check_output_dir(read.output_dir, read.overwrite, read.resume, media))
    except (TypeError, ValueError) as e:
        plan.problem = for_route(e, "app")
    return plan


def build_train_form(ctx: Any, plan: TrainPlan) -> types.Object:
    """The target, then every declared form option the chosen tasks read, then what the run will do."""
    inputs = types.Object()
    if plan.samples is not None:
        inputs.view_target(ctx, action_description="Fine-tune on")
    offered = [option for option in FORM_TRAIN_OPTIONS if shown(option, plan.tasks, plan.options)]
    place_inputs(inputs, offered, _PLACED, plan)
    if plan.problem:
        inputs.view("problem", types.Error(label="Cannot run", description=plan.problem), invalid=True,
                    error_message=plan.problem)  # fmt: skip
    else:
        note = (
            f"Fine-tunes on {plan.count} sample(s) and writes the checkpoint to {plan.options['output_dir']}. "
            "Queues one operation; a `fiftyone delegated launch` worker on this database runs it. Follow it in "
            "'Florence-2: delegated runs'; once done, 'Florence-2: label samples' offers the checkpoint."
        )
        inputs.view("summary", types.Notice(label=note))
    return inputs


def label_field_choices(samples: Any, task: Task) -> list[str]:
    """Top-level fields holding the label type ``task`` learns from."""
    if samples is None:
        return []
    return list(samples.get_field_schema(embedded_doc_type=learns_from(task)))


def _field_input(inputs: types.Object, name: str, task: Task, plan: TrainPlan, title: str) -> None:
    kinds = " or ".join(kind.__name__ for kind in learns_from(task))
    choices = label_field_choices(plan.samples, task)
    if not choices:
        inputs.view(f"no_{name}", types.Warning(label=f"This dataset has no {kinds} field for {task.name} to learn"))
        return
    declared = TRAIN["label_field"].default
    view = types.Dropdown(label=title, description=f"A {kinds} field of corrected labels for {task.name} to learn from")
    for choice in choices:
        view.add_choice(choice, label=choice)
    inputs.str(name, default=declared if declared in choices else choices[0], view=view)


def _label_field_input(inputs: types.Object, option: Any, plan: TrainPlan) -> None:
    """One dropdown of the fields of the right label type, or (several tasks) one per task."""
    if len(plan.tasks) == 1:
        _field_input(inputs, option.name, plan.tasks[0], plan, option.form_label)
        return
    fields = types.Object()
    for task in plan.tasks:
        _field_input(fields, task.name, task, plan, f"Labels for {task.name}")
    inputs.define_property(LABEL_FIELDS, fields, label="Label fields", description="One field of labels per task")


def _tasks(inputs: types.Object, option: Any, plan: TrainPlan) -> None:
    tasks_input(inputs, plan.tasks, "What Florence-2 learns: one or more tasks, each from its own labels",
                TRAIN["task"].choices)  # fmt: skip


def _caption_field_input(inputs: types.Object, option: Any, plan: TrainPlan) -> None:
    view = types.Dropdown(label=option.form_label, description=option.description)
    for name in prompt_field_choices(plan.samples):
        view.add_choice(name, label=name)
    inputs.str(option.name, view=view)


_PLACED = {
    "task": _tasks,
    "label_field": _label_field_input,
    "model": checkpoint_input,
    "prompt_field": _caption_field_input,
}

"""The operators' form: one form for every choice of tasks, showing only the inputs the chosen tasks need.

The task choices, which inputs appear and the label type shown come from the
task table (:data:`fiftyone_florence2.core.tasks.TASKS`); each input's default,
help and choices come from the option declarations
(:mod:`fiftyone_florence2.core.options`). Nothing here lists tasks or restates a default.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.sample as fos
import fiftyone.operators.types as types

from fiftyone_florence2.core.options import AUTO, OPTIONS, Option, default_label_field
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.labels.convert import PROMPT_LABELS
from fiftyone_florence2.training.record import finished_checkpoints

from .plan import DELEGATE_ABOVE, FORM_OPTIONS, Plan, form_default, reads, text_sources

# What a task reads besides the image, as its choice in a task list says it.
_READS = {"text": ", reads text", "region": ", reads regions"}


def _dropdown(label: str, description: str, choices: list[tuple[str, str]]) -> types.Dropdown:
    view = types.Dropdown(label=label, description=description)
    for value, text in choices:
        view.add_choice(value, label=text)
    return view


def prompt_field_choices(samples: Any) -> list[str]:
    """Top-level fields whose values can be prompts: text, lists of text, or labels with label text."""
    names = []
    if samples is None:
        return names
    own = set(fos.get_default_sample_fields())  # filepath, tags, ...: never prompts
    for name, field in samples.get_field_schema().items():
        if name in own:
            continue
        text = isinstance(field, fof.StringField)
        texts = isinstance(field, fof.ListField) and isinstance(field.field, fof.StringField)
        labels = isinstance(field, fof.EmbeddedDocumentField) and issubclass(field.document_type, PROMPT_LABELS)
        if text or texts or labels:
            names.append(name)
    return names


def regions_field_choices(samples: Any) -> list[str]:
    """Top-level ``Detections`` fields, whose boxes region tasks read."""
    if samples is None:
        return []
    return list(samples.get_field_schema(embedded_doc_type=fol.Detections))


def build_form(ctx: Any, plan: Plan) -> types.Object:
    """The inputs for ``plan``'s tasks; ``plan.problem``, if any, is shown and blocks execution.

    The form offers the declared form options in their declared order, each
    only when a chosen task reads it: an option with no entry in
    :data:`_PLACED` is one :func:`option_input`, so a newly declared option
    appears with no change here. A preview has no target choice and none of
    the run's own options (where to write, delegation).
    """
    inputs = types.Object()
    if plan.samples is not None and not plan.preview:
        inputs.view_target(ctx, action_description="Label", require_flat=True)
    offered = [o for o in FORM_OPTIONS if reads(o, plan.tasks) and not (plan.preview and o.group == "run")]
    place_inputs(inputs, offered, _PLACED, plan)
    if plan.preview:
        tasks = ", ".join(f"{task} ({label_type})" for task, label_type in plan.label_types.items())
        note = f"Previews {plan.count} sample(s) with {tasks}: shows the labels a run would write, writes nothing"
        inputs.view("summary", types.Notice(label=note))
    else:
        _execution_inputs(inputs, plan)
    if plan.problem:
        problem = types.Error(label="Cannot run", description=plan.problem)
        inputs.view("problem", problem, invalid=True, error_message=plan.problem)
    return inputs


def place_inputs(inputs: types.Object, options: Any, placed: dict[str, Any], plan: Any) -> None:
    """The form walk: each option in declared order, placed by ``placed[name](inputs, option, plan)`` where the
    form shows it its own way, else as one :func:`option_input`. The labelling and fine-tuning forms share it."""
    for option in options:
        placed.get(option.name, _declared)(inputs, option, plan)


def _declared(inputs: types.Object, option: Option, plan: Any) -> None:
    option_input(inputs, option)


def _video_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    """Offered when the target holds videos, whose frames are sampled and labelled."""
    if plan.samples is not None and plan.samples.media_type == "video":
        option_input(inputs, option)


def task_choice(task: Any) -> str:
    """A task as a list of tasks offers it: ``caption: short caption → Classification``."""
    return f"{task.name}: {task.description}{_READS.get(task.input, '')} → {task.label_type}"


def task_input(inputs: types.Object) -> None:
    """A dropdown of one task of the table, for forms that take a single task (the zoo operator's)."""
    tasks = [(t.name, task_choice(t)) for t in TASKS]
    view = _dropdown("Task", "What Florence-2 does for each image", tasks)
    inputs.enum("task", [name for name, _ in tasks], default=tasks[0][0], view=view)


def task_inputs(inputs: types.Object, plan: Plan) -> None:
    """The inputs ``plan``'s tasks read, and only those: their text, their regions, instance masks."""
    for name in ("prompt", "prompt_field", "classes", "regions_field", "masks"):
        option = OPTIONS[name]
        if reads(option, plan.tasks):
            _PLACED.get(name, _declared)(inputs, option, plan)


def _tasks_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    """A multi-select of the task table; one field per chosen task, sharing the image features."""
    tasks_input(inputs, plan.tasks, "What Florence-2 does for each image: one or more tasks, one output field each")


def tasks_input(inputs: types.Object, chosen: Any, description: str) -> None:
    """A multi-select ``tasks`` of the task table, ``chosen`` selected."""
    view = types.DropdownView(label="Tasks", description=description)
    for task in TASKS:
        view.add_choice(task.name, label=task_choice(task))
    inputs.list("tasks", types.String(), default=[task.name for task in chosen], view=view)


def _label_field_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    types_ = plan.label_types
    if len(plan.tasks) == 1:
        [(task, label_type)] = types_.items()
        what = f"A new field, or an existing {label_type} field; {task} writes {label_type}"
    else:
        writes = ", ".join(f"{task} writes {label_type}" for task, label_type in types_.items())
        what = f"The prefix of the output fields, one per task: <prefix>_<task>; {writes}"
    placeholder = f"{default_label_field(plan.tasks)} (when left empty)"
    inputs.str(
        option.name, label=option.form_label, description=what, view=types.TextFieldView(placeholder=placeholder)
    )


def option_input(inputs: types.Object, option: Option) -> None:
    """The form input of a declared option: its kind, default, help and choices as declared."""
    title = option.form_label
    default = form_default(option)
    help_text = option.description
    if option.kind == "bool":
        inputs.bool(option.name, default=default, label=title, description=help_text, view=types.CheckboxView())
    elif option.kind == "int":
        inputs.int(option.name, default=default, label=title, description=help_text)
    elif option.kind == "float":
        inputs.float(option.name, default=default, label=title, description=help_text)
    elif option.kind == "choice":
        choices = _available(option)
        inputs.enum(option.name, choices, default=default, view=_dropdown(title, help_text, [(c, c) for c in choices]))
    else:
        inputs.str(option.name, default=default, label=title, description=help_text)


def _available(option: Option) -> list[str]:
    """A choice list, less the devices this machine does not have."""
    if option.name != "device":
        return list(option.choices)
    from fiftyone_florence2.engine.devices import available_devices

    have = set(available_devices())
    return [choice for choice in option.choices if choice == AUTO or choice in have]


def _tile_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    """Tiles and overlap suppression for the tasks that find their own boxes; the overlap once tiles are on."""
    if option.requires is None or not option.requires(plan.values):
        option_input(inputs, option)


def _text_inputs(inputs: types.Object, option: Option, plan: Plan) -> None:
    """One text input for every text task: a prompt, a prompt field, or (when all take them) classes."""
    sources = text_sources(plan.tasks)
    radio = types.RadioGroup(label="Text input", orientation="horizontal")
    for source in sources:
        radio.add_choice(source, label=OPTIONS[source].form_label, description=OPTIONS[source].description)
    source = plan.values["text_input"] if plan.values["text_input"] in sources else sources[0]
    inputs.enum("text_input", sources, default=source, view=radio)
    if source == "prompt":
        option_input(inputs, OPTIONS["prompt"])
    elif source == "prompt_field":
        choices = [(name, name) for name in prompt_field_choices(plan.samples)]
        option = OPTIONS["prompt_field"]
        inputs.str("prompt_field", view=_dropdown(option.form_label, option.description, choices))
    elif isinstance(plan.values["classes"], list):
        inputs.list("classes", types.String(), label=OPTIONS["classes"].form_label)
    else:
        option_input(inputs, OPTIONS["classes"])


def _with_the_prompt(inputs: types.Object, option: Option, plan: Plan) -> None:
    """Offered by :func:`_text_inputs`, as one choice of text input."""


def _thresholds_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    """Text (``0.4,car=0.7``) as the App sends it; a number where a Python caller passed one."""
    value = plan.values[option.name]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        inputs.float(option.name, label=option.form_label, description=option.description)
    else:
        view = types.TextFieldView(placeholder="e.g. 0.4 or 0.4,car=0.7 (empty: keep every label)")
        inputs.str(option.name, label=option.form_label, description=option.description, view=view)


def _regions_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    choices = regions_field_choices(plan.samples)
    view = _dropdown(option.form_label, option.description, [(n, n) for n in choices])
    inputs.str("regions_field", view=view)
    if not choices:
        inputs.view("no_regions", types.Warning(label="This dataset has no Detections field for region tasks to read"))


def _overwrite_input(inputs: types.Object, option: Option, plan: Plan) -> None:
    """Offered when a field the run writes exists already."""
    if plan.samples is None:
        return
    schema = plan.samples.get_field_schema()
    if any(name in schema for name in plan.label_fields.values()):
        option_input(inputs, option)


def checkpoint_input(inputs: types.Object, option: Option, plan: Any) -> None:
    """A Hub id or a local directory, typed, or picked from the checkpoints that this dataset's completed
    training runs wrote (their configs only are read, so the form stays fast)."""
    default = form_default(option)
    dataset = plan.samples._root_dataset if plan.samples is not None else None
    offered = {default: "the released checkpoint", **(finished_checkpoints(dataset) if dataset is not None else {})}
    view = types.AutocompleteView(label=option.form_label, description=option.description)
    for value, what in offered.items():
        view.add_choice(value, label=value, description=what)
    inputs.str(option.name, default=default, view=view)


# Options the form shows its own way; every other declared form option is one option_input.
_PLACED = {
    "model": checkpoint_input,
    "task": _tasks_input,
    "prompt": _text_inputs,
    "prompt_field": _with_the_prompt,
    "classes": _with_the_prompt,
    "regions_field": _regions_input,
    "confidence_thresh": _thresholds_input,
    "label_field": _label_field_input,
    "overwrite": _overwrite_input,
    "fps": _video_input,
    "frame_step": _video_input,
    "tile_overlap": _tile_input,
}


def _execution_inputs(inputs: types.Object, plan: Plan) -> None:
    inputs.bool(
        "delegate",
        default=plan.count > DELEGATE_ABOVE,
        label="Delegate",
        description=(
            f"Run in the background on a `fiftyone delegated launch` worker (the default above "
            f"{DELEGATE_ABOVE} samples); otherwise run now, here"
        ),
        view=types.CheckboxView(),
    )
    if plan.delegate:
        inputs.int(
            "shards",
            default=1,
            label="Shards",
            description="Split the run into this many delegated operations, one per worker (GPU or machine)",
        )
    if plan.fans_out:
        note = f"Queues {plan.shards} operations; start {plan.shards} workers that share this database"
    elif plan.delegate:
        note = "Queues one operation; a `fiftyone delegated launch` worker on this database runs it"
    else:
        note = "Runs now; the App reloads when it is done"
    what = f"{plan.count} sample(s) → {plan.outputs()}"
    inputs.view("summary", types.Notice(label=f"{what}. {note}"))

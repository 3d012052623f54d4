"""The operator's form: one form for every task, showing only the inputs the chosen task needs.

The task choices, which inputs appear and the label type shown come from the
task table (:data:`fiftyone_florence2.tasks.TASKS`); each input's default,
help and choices come from the option declarations
(:mod:`fiftyone_florence2.options`). Nothing here lists tasks or restates a default.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.sample as fos
import fiftyone.operators.types as types

from fiftyone_florence2.options import AUTO, OPTIONS, Option, default_label_field
from fiftyone_florence2.tasks import TASKS

from .plan import DEFAULTS, DELEGATE_ABOVE, TEXT_INPUTS, Plan

# Field values the model reads as prompts (see fiftyone_florence2.labels.texts_from_value).
PROMPT_LABELS = (fol.Classification, fol.Classifications, fol.Detections, fol.Polylines)
# Titles where the option's name does not read well; the rest are the name, capitalised.
_TITLES = {
    "model": "Checkpoint",
    "num_beams": "Beams",
    "dtype": "Precision",
    "confidence_thresh": "Confidence threshold",
    "nms_iou": "Suppress overlaps above IoU",
}


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
    """The inputs for ``plan``'s task; ``plan.problem``, if any, is shown and blocks execution."""
    inputs = types.Object()
    if plan.samples is not None:
        inputs.view_target(ctx, action_description="Label", require_flat=True)
    tasks = [(t.name, f"{t.name}: {t.description} ({t.input} input, {t.label_type})") for t in TASKS]
    inputs.enum(
        "task",
        [name for name, _ in tasks],
        default=tasks[0][0],
        view=_dropdown("Task", "What Florence-2 does for each image", tasks),
    )
    for name in ("model", "revision"):
        option_input(inputs, OPTIONS[name])
    if plan.task.input == "text":
        _text_inputs(inputs, plan)
    if plan.task.input == "region":
        _regions_input(inputs, plan)
    if OPTIONS["masks"].applies(plan.task):
        option_input(inputs, OPTIONS["masks"])
    inputs.str(
        "label_field",
        label="Output field",
        description=f"A new field, or an existing {plan.label_type} field; {plan.task.name} writes {plan.label_type}",
        view=types.TextFieldView(placeholder=f"{default_label_field([plan.task])} (when left empty)"),
    )
    _existing_inputs(inputs, plan)
    _tile_inputs(inputs, plan)
    for name in ("batch_size", "num_beams", "max_new_tokens", "confidence_thresh", "device", "dtype"):
        option_input(inputs, OPTIONS[name])
    _execution_inputs(inputs, plan)
    if plan.problem:
        problem = types.Error(label="Cannot run", description=plan.problem)
        inputs.view("problem", problem, invalid=True, error_message=plan.problem)
    return inputs


def _title(name: str) -> str:
    return _TITLES.get(name, name.replace("_", " ").capitalize())


def option_input(inputs: types.Object, option: Option) -> None:
    """The form input of a declared option: its kind, default, help and choices as declared."""
    title = _title(option.name)
    default = DEFAULTS[option.name]
    help_text = option.help[0].upper() + option.help[1:]
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
    from fiftyone_florence2.runner import available_devices

    have = set(available_devices())
    return [choice for choice in option.choices if choice == AUTO or choice in have]


def _tile_inputs(inputs: types.Object, plan: Plan) -> None:
    """Tiles and overlap suppression, for the tasks that find their own boxes; the overlap once tiles are on."""
    for name in ("tiles", "tile_overlap", "nms_iou"):
        if OPTIONS[name].applies(plan.task) and (name != "tile_overlap" or _tiled(plan.values["tiles"])):
            option_input(inputs, OPTIONS[name])


def _tiled(tiles: Any) -> bool:
    try:
        return int(tiles) > 1
    except (TypeError, ValueError):
        return False


def _text_inputs(inputs: types.Object, plan: Plan) -> None:
    sources = [s for s in TEXT_INPUTS if OPTIONS[s].applies(plan.task)]
    radio = types.RadioGroup(label="Text input", orientation="horizontal")
    for source in sources:
        radio.add_choice(source, label=_title(source), description=OPTIONS[source].help)
    source = plan.values["text_input"] if plan.values["text_input"] in sources else sources[0]
    inputs.enum("text_input", sources, default=source, view=radio)
    if source == "prompt":
        option_input(inputs, OPTIONS["prompt"])
    elif source == "prompt_field":
        choices = [(name, name) for name in prompt_field_choices(plan.samples)]
        inputs.str("prompt_field", view=_dropdown(_title("prompt_field"), OPTIONS["prompt_field"].help, choices))
    elif isinstance(plan.values["classes"], list):
        inputs.list("classes", types.String(), label=_title("classes"))
    else:
        option_input(inputs, OPTIONS["classes"])


def _regions_input(inputs: types.Object, plan: Plan) -> None:
    choices = regions_field_choices(plan.samples)
    view = _dropdown(_title("regions_field"), OPTIONS["regions_field"].help, [(n, n) for n in choices])
    inputs.str("regions_field", view=view)
    if not choices:
        inputs.view("no_regions", types.Warning(label="This dataset has no Detections field for region tasks to read"))


def _existing_inputs(inputs: types.Object, plan: Plan) -> None:
    option_input(inputs, OPTIONS["skip_existing"])
    if plan.samples is not None and plan.label_field in plan.samples.get_field_schema():
        option_input(inputs, OPTIONS["overwrite"])


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
    what = f"{plan.count} sample(s) → {plan.label_field} ({plan.label_type})"
    inputs.view("summary", types.Notice(label=f"{what}. {note}"))

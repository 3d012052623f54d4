"""The operator's form: one form for every task, showing only the inputs the chosen task needs.

The task choices, which inputs appear and the label type shown all come from
the task table (:data:`fiftyone_florence2.tasks.TASKS`) and the model's
option sets; nothing here lists tasks by hand.
"""

from __future__ import annotations

from typing import Any

import fiftyone.core.fields as fof
import fiftyone.core.labels as fol
import fiftyone.core.sample as fos
import fiftyone.operators.types as types

from fiftyone_florence2.model import CLASS_TASKS, SEGMENTATION_TASKS
from fiftyone_florence2.tasks import TASKS

from .plan import AUTO, DELEGATE_ABOVE, TEXT_INPUTS, Plan, default_label_field

DEVICES = (AUTO, "cuda", "mps", "cpu")
DTYPES = (AUTO, "float32", "bfloat16", "float16")
# Field values the model reads as prompts (see fiftyone_florence2.model.texts_from_value).
PROMPT_LABELS = (fol.Classification, fol.Classifications, fol.Detections, fol.Polylines)

_TEXT_INPUT_LABELS = {
    "prompt": ("Prompt", "the same text for every sample"),
    "prompt_field": ("Prompt field", "each sample's own text, from a field"),
    "classes": ("Classes", "one generation per class; each result is labelled by its class"),
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
    inputs.str(
        "model",
        default=plan.values["model"],
        label="Checkpoint",
        description="A Hugging Face Hub id, or a local checkpoint directory in transformers' native format",
    )
    inputs.str("revision", label="Revision", description="A Hub branch, tag or commit (optional)")
    if plan.task.input == "text":
        _text_inputs(inputs, plan)
    if plan.task.input == "region":
        _regions_input(inputs, plan)
    if plan.task.name in SEGMENTATION_TASKS:
        inputs.bool(
            "masks",
            default=False,
            label="Instance masks",
            description="Write Detections with instance masks instead of Polylines",
            view=types.CheckboxView(),
        )
    inputs.str(
        "label_field",
        label="Output field",
        description=f"A new field, or an existing {plan.label_type} field; {plan.task.name} writes {plan.label_type}",
        view=types.TextFieldView(placeholder=f"{default_label_field(plan.task)} (when left empty)"),
    )
    _existing_inputs(inputs, plan)
    _generation_inputs(inputs)
    _execution_inputs(inputs, plan)
    if plan.problem:
        problem = types.Error(label="Cannot run", description=plan.problem)
        inputs.view("problem", problem, invalid=True, error_message=plan.problem)
    return inputs


def _text_inputs(inputs: types.Object, plan: Plan) -> None:
    sources = [s for s in TEXT_INPUTS if s != "classes" or plan.task.name in CLASS_TASKS]
    radio = types.RadioGroup(label="Text input", orientation="horizontal")
    for source in sources:
        text, description = _TEXT_INPUT_LABELS[source]
        radio.add_choice(source, label=text, description=description)
    source = plan.values["text_input"] if plan.values["text_input"] in sources else sources[0]
    inputs.enum("text_input", sources, default=source, view=radio)
    if source == "prompt":
        inputs.str("prompt", label="Prompt", description=f"The text {plan.task.name} reads")
    elif source == "prompt_field":
        choices = [(name, name) for name in prompt_field_choices(plan.samples)]
        view = _dropdown("Prompt field", "Text, a list of texts, or labels whose label text is used", choices)
        inputs.str("prompt_field", view=view)
    elif isinstance(plan.values["classes"], list):
        inputs.list("classes", types.String(), label="Classes")
    else:
        inputs.str("classes", label="Classes", description="Comma-separated, e.g. car, traffic light")


def _regions_input(inputs: types.Object, plan: Plan) -> None:
    choices = regions_field_choices(plan.samples)
    view = _dropdown("Regions field", "One generation per box of this Detections field", [(n, n) for n in choices])
    inputs.str("regions_field", view=view)
    if not choices:
        inputs.view("no_regions", types.Warning(label="This dataset has no Detections field for region tasks to read"))


def _existing_inputs(inputs: types.Object, plan: Plan) -> None:
    inputs.bool(
        "skip_existing",
        default=False,
        label="Skip samples that already have the field",
        view=types.CheckboxView(),
    )
    if plan.samples is not None and plan.label_field in plan.samples.get_field_schema():
        inputs.bool(
            "overwrite",
            default=False,
            label="Overwrite existing labels",
            description=f"{plan.label_field!r} exists; replace its labels on the target samples",
            view=types.CheckboxView(),
        )


def _generation_inputs(inputs: types.Object) -> None:
    inputs.int("batch_size", default=8, label="Batch size", description="Images per batch")
    inputs.int("num_beams", default=3, label="Beams", description="Beam search width; 1 (greedy) is fastest")
    inputs.int("max_new_tokens", label="Max new tokens", description="Leave empty for each task's own budget")
    inputs.float(
        "confidence_thresh",
        label="Confidence threshold",
        description="Drop boxes and polygons whose confidence (from token probabilities) is lower (optional)",
    )
    devices = _dropdown("Device", "auto: cuda, then mps, then cpu", [(d, d) for d in DEVICES])
    inputs.enum("device", list(DEVICES), default=AUTO, view=devices)
    dtypes = _dropdown("Precision", "auto: bf16/fp16 on GPUs, fp32 on CPU", [(d, d) for d in DTYPES])
    inputs.enum("dtype", list(DTYPES), default=AUTO, view=dtypes)


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

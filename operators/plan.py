"""What one execution of the operator will do, read from its parameters and checked by the library.

Both the form (``resolve_input``) and the run (``execute``) build a
:class:`Plan`, so the App shows the problem that would stop the run. The
form's plan reads only the schema and two aggregations, so that it stays fast
on large datasets; the run's plan also snapshots the target ids and checks
every one of them (:func:`~fiftyone_florence2.checks.check_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fiftyone import ViewField as F

from fiftyone_florence2.checks import check_fields, check_run, refuse_existing
from fiftyone_florence2.config import Florence2ModelConfig
from fiftyone_florence2.options import AUTO, MODEL_OPTIONS, RUN_OPTIONS, default_label_field, whole_number
from fiftyone_florence2.tasks import DEFAULT_TASK, Task, get_task

# Above this many target samples a run defaults to delegated execution: on a
# CPU, Florence-2-base takes seconds per image, and immediate runs time out
# after fo.config.operator_timeout (600 s).
DELEGATE_ABOVE = 50
# Immediate runs up to this many samples reload the App when they finish.
RELOAD_UP_TO = 1000

# Where a text task takes its text from, in the order the form offers them.
TEXT_INPUTS = ("prompt", "prompt_field", "classes")
# The form's choice lists show "auto" where the declared default is None.
_AUTO_CHOICES = frozenset({"device", "dtype"})

FORM_OPTIONS = tuple(option for option in (*MODEL_OPTIONS, *RUN_OPTIONS) if option.form)
DEFAULTS: dict[str, Any] = {
    **{o.name: AUTO if o.name in _AUTO_CHOICES else o.default for o in FORM_OPTIONS},
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
    """The parameters with defaults filled in; a blank choice (``""``, ``None``) reads as not given."""
    given = {
        key: value
        for key, value in params.items()
        if key in DEFAULTS and value is not None and (value != "" or key in _TEXTS)
    }
    values = {**DEFAULTS, **given}
    if values["text_input"] is None:
        values["text_input"] = next((key for key in TEXT_INPUTS if values[key] is not None), TEXT_INPUTS[0])
    return values


def model_options(values: dict[str, Any], task: Task) -> dict[str, Any]:
    """The ``Florence2ModelConfig`` options: the form's, less the inputs the task does not read and the
    text inputs that were not chosen."""
    options = {"task": task.name}
    for option in MODEL_OPTIONS:
        if not option.form or option.name == "task":
            continue
        if option.applies is not None and not option.applies(task):
            continue
        if option.name in TEXT_INPUTS and option.name != values["text_input"]:
            continue
        options[option.name] = values[option.name]
    return options


@dataclass
class Plan:
    """A checked execution: ``problem`` is the first reason it cannot run, or None."""

    values: dict[str, Any]
    task: Task
    label_field: str
    samples: Any
    count: int
    shards: int = 1
    shard: tuple[int, int] | None = None
    config: Florence2ModelConfig | None = None
    fields: dict[str, str] | None = None
    problem: str | None = None

    @property
    def delegate(self) -> bool:
        """Whether the labelling runs in delegated operations (sharded runs always do)."""
        if self.shards > 1 or self.shard is not None:
            return True
        chosen = self.values["delegate"]
        return self.count > DELEGATE_ABOVE if chosen is None else bool(chosen)

    @property
    def fans_out(self) -> bool:
        """Whether this execution queues the shards rather than labelling."""
        return self.shards > 1 and self.shard is None

    @property
    def label_type(self) -> str:
        if self.config is not None:
            return self.config.label_types[self.task.name]
        return self.task.label_type


def make_plan(ctx: Any, full: bool = True) -> Plan:
    """Reads the request and checks it with the library, before any model work.

    ``full=False`` (the form) checks what the schema and an aggregation tell;
    ``full=True`` (the run) also checks every target sample's existing labels.
    """
    values = read_params(ctx.params)
    try:
        task = get_task(values["task"])
    except ValueError as e:
        task = get_task(DEFAULT_TASK)
        values["task"] = task.name
        return Plan(values, task, default_label_field([task]), None, 0, problem=str(e))
    label_field = values["label_field"] or default_label_field([task])
    if ctx.dataset is None:
        return Plan(values, task, label_field, None, 0, problem="Open a dataset of images first.")
    samples = ctx.target_view(require_flat=True)
    plan = Plan(values, task, label_field, samples, samples.count())
    try:
        plan.shards = whole_number("shards", values["shards"])
        if values["shard"] is not None:
            index, count = values["shard"]
            plan.shard = (int(index), int(count))
        plan.config = Florence2ModelConfig(model_options(values, task))
        skip, overwrite, vectors = values["skip_existing"], values["overwrite"], values["embeddings_field"]
        if full:
            # A shard checks only its own samples for labels, not those its sibling shards wrote.
            plan.fields = check_run(samples, plan.config, label_field, skip, overwrite, plan.shard, vectors)
        else:
            plan.fields = check_fields(samples, plan.config, label_field, skip, overwrite, vectors)
            # A queued shard's siblings label the same field: its full check counts its own samples only.
            names = [*plan.fields.values(), *([vectors] if vectors else [])]
            _check_existing(samples, names, skip or overwrite or plan.shard is not None)
        if plan.count == 0:
            raise ValueError("The target holds no samples: choose another target view.")
    except (TypeError, ValueError) as e:
        plan.problem = str(e)
    return plan


def _check_existing(samples: Any, names: list[str], allowed: bool) -> None:
    """The form's check of existing labels (and embeddings): one count over the target, in the database."""
    schema = samples.get_field_schema()
    present = [name for name in names if name in schema]
    if allowed or not present:
        return
    count = samples.match(F.any([F(name).exists() for name in present])).count()
    if count:
        refuse_existing(count, present)

"""What one execution of the operator will do, read from its parameters and checked by the library.

Both the form (``resolve_input``) and the run (``execute``) build the same
:class:`Plan`, so the App shows exactly the problem that would stop the run,
and a run never starts from inputs the form would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fiftyone_florence2.checkpoints import DEFAULT_CHECKPOINT
from fiftyone_florence2.labeling import check_run
from fiftyone_florence2.model import Florence2ModelConfig
from fiftyone_florence2.tasks import TASK_NAMES, Task, get_task

# Above this many target samples a run defaults to delegated execution: on a
# CPU, Florence-2-base takes seconds per image, and immediate runs time out
# after fo.config.operator_timeout (600 s).
DELEGATE_ABOVE = 50
# Immediate runs up to this many samples reload the App when they finish.
RELOAD_UP_TO = 1000

# Where a text task takes its text from, in the order the form offers them.
TEXT_INPUTS = ("prompt", "prompt_field", "classes")
AUTO = "auto"

DEFAULTS: dict[str, Any] = {
    "task": TASK_NAMES[0],
    "model": DEFAULT_CHECKPOINT,
    "revision": None,
    "label_field": None,  # florence2_<task>
    "text_input": None,  # the first of TEXT_INPUTS that was given, else "prompt"
    "prompt": None,
    "prompt_field": None,
    "classes": None,
    "regions_field": None,
    "masks": False,
    "batch_size": 8,
    "num_beams": 3,
    "max_new_tokens": None,
    "confidence_thresh": None,
    "device": AUTO,
    "dtype": AUTO,
    "skip_existing": False,
    "overwrite": False,
    "delegate": None,  # by the number of target samples
    "shards": 1,
    # Set only on the operations that a sharded run queues.
    "shard": None,
    "run_key": None,
}


def default_label_field(task: Task) -> str:
    return f"florence2_{task.name}"


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
    """The ``Florence2ModelConfig`` options: only the text input that was chosen, only for tasks that take it."""
    options = {
        "task": task.name,
        "model": values["model"],
        "revision": values["revision"],
        "masks": values["masks"],
        "batch_size": values["batch_size"],
        "num_beams": values["num_beams"],
        "max_new_tokens": values["max_new_tokens"],
        "confidence_thresh": values["confidence_thresh"],
        "device": None if values["device"] == AUTO else values["device"],
        "dtype": None if values["dtype"] == AUTO else values["dtype"],
    }
    if task.input == "text":
        source = values["text_input"]
        options[source] = values[source] if source in TEXT_INPUTS else None
    if task.input == "region":
        options["regions_field"] = values["regions_field"]
    return options


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}.")
    return value


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


def make_plan(ctx: Any) -> Plan:
    """Reads the request and checks it with the library, before any model work."""
    values = read_params(ctx.params)
    try:
        task = get_task(values["task"])
    except ValueError as e:
        task = get_task(DEFAULTS["task"])
        values["task"] = task.name
        return Plan(values, task, default_label_field(task), None, 0, problem=str(e))
    label_field = values["label_field"] or default_label_field(task)
    if ctx.dataset is None:
        return Plan(values, task, label_field, None, 0, problem="Open a dataset of images first.")
    samples = ctx.target_view(require_flat=True)
    plan = Plan(values, task, label_field, samples, samples.count())
    try:
        plan.shards = _count(values["shards"], "shards")
        if values["shard"] is not None:
            index, count = values["shard"]
            plan.shard = (int(index), int(count))
        plan.config = Florence2ModelConfig(model_options(values, task))
        # A shard checks only its own samples for labels, not those its sibling shards wrote.
        plan.fields = check_run(
            samples, plan.config, label_field, values["skip_existing"], values["overwrite"], plan.shard
        )
        if plan.count == 0:
            raise ValueError("The target holds no samples: choose another target view.")
    except (TypeError, ValueError) as e:
        plan.problem = str(e)
    return plan

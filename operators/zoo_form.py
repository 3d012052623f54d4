"""The inputs of FiftyOne's own "Apply zoo model" operator (``@voxel51/zoo``) for a Florence-2 zoo model.

That operator nests the property :func:`resolve_input` returns under
``remote_params``, passes the values given through :func:`parse_parameters`
and calls ``load_zoo_model(name, **params)``. The inputs are this plugin's
form's (the task, then only what it reads), from the same declarations. The
checkpoint is the zoo model's own, and the zoo operator asks for
``batch_size`` and ``confidence_thresh`` itself, for ``apply_model``.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from fiftyone_florence2.core.errors import for_route
from fiftyone_florence2.core.options import OPTIONS, default_label_field
from fiftyone_florence2.core.tasks import DEFAULT_TASK, get_task
from fiftyone_florence2.runs.config import Florence2ModelConfig
from fiftyone_florence2.runs.zoo import ZOO_FIXED_OPTIONS

from .form import option_input, task_input, task_inputs
from .plan import Plan, model_options, read_params

REMOTE_PARAMS = "remote_params"
ASKED_BY_THE_ZOO_OPERATOR = ("batch_size", "confidence_thresh")
GENERATION_INPUTS = ("num_beams", "max_new_tokens", "device", "dtype")


def zoo_options(params: dict[str, Any]) -> dict[str, Any]:
    """``load_zoo_model``'s keywords from the form's values: the task's options, less what the zoo
    model fixes and what the zoo operator asks for itself."""
    values = read_params(params)
    left_out = (*ZOO_FIXED_OPTIONS, *ASKED_BY_THE_ZOO_OPERATOR)
    options = model_options(values, (get_task(values["task"]),))
    return {name: value for name, value in options.items() if name not in left_out}


def resolve_input(model_name: str, ctx: Any) -> types.Property:
    """The form: the task, then only the inputs it reads, then generation; a problem blocks the run."""
    values = read_params((ctx.params or {}).get(REMOTE_PARAMS) or {})
    problem = None
    try:
        task = get_task(values["task"])
    except ValueError as e:
        task, problem = get_task(DEFAULT_TASK), str(e)
        values["task"] = task.name
    inputs = types.Object()
    task_input(inputs)
    task_inputs(inputs, Plan(values, (task,), default_label_field([task]), ctx.dataset, 0))
    for name in GENERATION_INPUTS:
        option_input(inputs, OPTIONS[name])
    problem = problem or _problem(model_name, values)
    if problem:
        error = types.Error(label="Cannot load the model", description=problem)
        inputs.view("problem", error, invalid=True, error_message=problem)
    return types.Property(inputs)


def _problem(model_name: str, values: dict[str, Any]) -> str | None:
    """Why these values cannot configure the model (checked as loading would, without weights), or None."""
    try:
        Florence2ModelConfig({**zoo_options(values), "model": model_name})
    except (TypeError, ValueError) as e:
        return for_route(e, "app")
    return None


def parse_parameters(model_name: str, ctx: Any, params: dict[str, Any]) -> None:
    """Replaces the form's values in ``params`` with ``load_zoo_model``'s keywords, in place."""
    options = zoo_options(params)
    params.clear()
    params.update(options)

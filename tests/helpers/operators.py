"""Calling the App operators from Python as FiftyOne and the App do, and checking that a refusal wrote nothing."""

from __future__ import annotations

import asyncio
import json

import fiftyone.operators as foo
import fiftyone.operators.types as types
import pytest
import yaml
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionError, execute_or_delegate_operator
from fiftyone.operators.server import create_response_generator

from helpers import ROOT

PLUGIN = yaml.safe_load((ROOT / "fiftyone.yml").read_text())["name"]
URI = f"{PLUGIN}/apply_florence2"
# Tiny generations: the labels' content is the library's business; here it is where they go and of what type.
FAST = {"num_beams": 1, "max_new_tokens": 2, "batch_size": 2}
# Inputs every task's form has (the target choice is hidden while the whole dataset is the only one).
COMMON = {"view_target", "tasks", "model", "revision", "label_field", "skip_existing", "embeddings_field",
          "batch_size", "num_beams", "max_new_tokens", "confidence_thresh", "device", "dtype", "delegate"}  # fmt: skip


def run(dataset, **params):
    return foo.execute_operator(URI, ctx={"dataset": dataset, "params": params})


def form(operator, dataset, **params):
    ctx = ExecutionContext(request_params={"dataset_name": dataset.name, "params": params})
    return operator.resolve_type(ctx, "inputs").type.properties


def inputs_of(properties) -> set[str]:
    return {name for name, prop in properties.items() if not isinstance(prop.type, types.Void)}


def run_from_app(dataset, **params) -> list[dict]:
    """Executes as the App's server does (the App's request names the operator) and returns the
    messages it streams to the App, as JSON."""
    request = {"operator_uri": URI, "dataset_name": dataset.name, "view": [], "selected": [], "params": params}
    execution = asyncio.run(execute_or_delegate_operator(URI, request))
    assert execution.is_generator, "the App gets no progress from an operator that is not a generator"
    return [json.loads(line) for line in create_response_generator(execution.result)]


def _snapshot(dataset) -> str:
    """Everything a run could write: samples (their last_modified_at too), fields, runs, queued operations,
    field locks."""
    from fiftyone_florence2.runs.locks import _collection

    dataset.reload()
    samples = [sample.to_dict() for sample in dataset.iter_samples()]
    state = {
        "samples": samples,
        "schema": sorted(dataset.get_field_schema()),
        "runs": dataset.list_runs(),
        "operations": len(DelegatedOperationService().list_operations(dataset_name=dataset.name)),
        "locks": sorted(map(str, _collection().find({}))),
    }
    return json.dumps(state, sort_keys=True, default=str)


def assert_refused(execute, form_of, dataset, params: dict, message: str) -> None:
    """``execute(dataset, **params)`` raises ``message`` and writes nothing; the form of the same
    parameters (``form_of(dataset, **params)``) shows it, and disables its button."""
    before = _snapshot(dataset)
    with pytest.raises(ExecutionError, match="Validation error") as error:
        execute(dataset, **params)
    assert message in str(error.value)
    assert _snapshot(dataset) == before
    problem = form_of(dataset, **params)["problem"]
    assert problem.invalid and message in problem.error_message

"""``florence2_runs``: the progress of this dataset's delegated Florence-2 runs (labelling and fine-tuning), in the App.

Delegated runs write their progress to their operation (``ctx.set_progress``);
this operator reads it back, so that open-source FiftyOne users can follow a
run, shard by shard, without leaving the App.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_florence2.runs.summary import SHOWN_REASONS as SHOWN

APPLY = "apply_florence2"
TRAIN = "florence2_train"


def _progress(operation: Any) -> str:
    status = operation.status
    if status is None or status.progress is None:
        return ""
    return f"{status.progress:.0%} ({status.label})" if status.label else f"{status.progress:.0%}"


def _outcome(operation: Any) -> str:
    outcome = operation.result
    if outcome is None:
        return ""
    if outcome.error:
        return "error: " + str(outcome.error).strip().splitlines()[-1]
    result = outcome.result or {}
    if "output_dir" in result:
        score = "" if result.get("best_score") is None else f", best val score {result['best_score']:.4g}"
        return f"{result['steps']} steps in {result['seconds']:.0f} s{score} → checkpoint {result['output_dir']}"
    if "labelled" not in result:
        return ""
    worker = result.get("worker") or {}
    text = f"{result['labelled']} labelled, {result['failed']} failed in {result['seconds']:.0f} s"
    return text + (f" on {worker.get('host')} (pid {worker.get('pid')})" if worker else "")


def runs_table(operations: list[Any]) -> str:
    """A markdown table of operations: run, state, progress and outcome."""
    if not operations:
        return "No delegated Florence-2 runs on this dataset yet."
    rows = ["| run | state | progress | outcome |", "|---|---|---|---|"]
    for op in operations:
        cells = [op.label or op.operator, op.run_state, _progress(op), _outcome(op)]
        rows.append("| " + " | ".join(str(cell).replace("|", "/") for cell in cells) + " |")
    return "\n".join(rows)


class Florence2Runs(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_runs",
            label="Florence-2: delegated runs",
            description="Progress of this dataset's delegated Florence-2 runs: one line per shard or fine-tuning run",
            dynamic=True,
            allow_delegated_execution=False,
        )

    def operations(self, ctx: Any) -> list[Any]:
        from fiftyone.factory import DelegatedOperationPagingParams
        from fiftyone.operators.delegated import DelegatedOperationService

        service, paging = DelegatedOperationService(), DelegatedOperationPagingParams(limit=SHOWN)
        found = [
            operation
            for name in (APPLY, TRAIN)
            for operation in service.list_operations(
                operator=f"{self.plugin_name}/{name}", dataset_name=ctx.dataset_name, paging=paging
            )
        ]
        return sorted(found, key=lambda operation: operation.queued_at, reverse=True)[:SHOWN]

    def resolve_input(self, ctx: Any) -> types.Property:
        inputs = types.Object()
        inputs.md(runs_table(self.operations(ctx)), name="runs")
        view = types.PromptView(label="Florence-2 delegated runs", submit_button_label="Refresh")
        return types.Property(inputs, view=view)

    def execute(self, ctx: Any) -> None:
        # Fields that finished runs wrote appear in the sidebar; the table opens again, read afresh.
        ctx.ops.reload_dataset()
        ctx.prompt(self.uri)

"""``apply_florence2``: run any Florence-2 task on a dataset, a view or the selected samples.

From Python::

    import fiftyone.operators as foo

    result = foo.execute_operator(
        "@fiftyone-florence2/florence2/apply_florence2",
        ctx=dict(dataset=dataset, params=dict(task="detection", label_field="florence2_od")),
    )
    result.result  # {"run_key": ..., "labelled": ..., "failed": ..., ...}; for shards {"queued": [...], ...}

The parameters are ``load_model``'s (``task``: a name or a list, ``model``, ``revision``,
``prompt``, ``prompt_field``, ``classes``, ``regions_field``, ``masks``,
``tiles``, ``tile_overlap``, ``nms_iou``, ``batch_size``, ``num_beams``, ``max_new_tokens``, ``confidence_thresh``,
``device``, ``dtype``) plus ``label_field``, ``skip_existing``,
``overwrite``, ``embeddings_field``, ``delegate`` and ``shards``; defaults and help are declared in
``fiftyone_florence2.core.options`` (see ``docs/OPTIONS.md``). ``tasks`` (a list,
what the App's multi-select sends) may stand for ``task``. Several tasks share
each image's vision features and write ``<label_field>_<task>`` each
(``florence2_<task>`` by default); a list of one task writes ``label_field``.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .form import build_form
from .plan import make_plan
from .runs import Progress, label, queue_shards, stream


def from_app(ctx: Any) -> bool:
    """Whether the App sent this request: its requests name the operator, ``execute_operator``'s do not."""
    return "operator_uri" in ctx.request_params


class ApplyFlorence2(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="apply_florence2",
            label="Florence-2: label samples",
            description="Run Florence-2 tasks (captions, OCR, detection, grounding, segmentation, regions)",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
            default_choice_to_delegated=False,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        plan = make_plan(ctx, full=False)
        submit = f"Queue {plan.shards} shards" if plan.fans_out else "Schedule" if plan.delegate else "Execute"
        view = types.PromptView(label="Florence-2", submit_button_label=submit)
        return types.Property(build_form(ctx, plan), view=view)

    def resolve_delegation(self, ctx: Any) -> bool:
        plan = make_plan(ctx, full=False)
        # A sharded run is queued from here, immediately; its shards are the delegated operations.
        return plan.delegate and not plan.fans_out

    def resolve_run_name(self, ctx: Any) -> str:
        plan = make_plan(ctx, full=False)
        return f"Florence-2 {', '.join(task.name for task in plan.tasks)} → {', '.join(plan.label_fields.values())}"

    def execute(self, ctx: Any) -> Any:
        """Labels (or queues the shards) and returns the summary; to the App, a stream of progress first."""
        plan = make_plan(ctx)
        if plan.problem:
            raise ValueError(plan.problem)
        if ctx.delegated and not plan.fans_out:
            return label(plan, lambda fraction, text: ctx.set_progress(progress=fraction, label=text))
        run_name = self.resolve_run_name(ctx) if plan.fans_out else ""

        def job(progress: Progress) -> dict[str, Any]:
            return queue_shards(ctx, self.uri, plan, run_name) if plan.fans_out else label(plan, progress)

        # foo.execute_operator exhausts a generator and keeps none of its values, so only
        # the App gets the stream (progress, reload, notification); Python gets the summary.
        return stream(ctx, plan, job) if from_app(ctx) else job(lambda fraction, text: None)

    def resolve_output(self, ctx: Any) -> types.Property | None:
        result = ctx.results or {}
        if "labelled" not in result:
            return None
        outputs = types.Object()
        outputs.int("labelled", label="Labelled")
        outputs.int("skipped", label="Skipped (already labelled)")
        outputs.int("failed", label="Failed")
        outputs.float("seconds", label="Seconds")
        outputs.str("run_key", label="Run (failure reasons are recorded there)")
        return types.Property(outputs, view=types.View(label="Florence-2"))

"""``florence2_dry_run``: what a run would write on the open sample or a few selected ones, writing nothing.

Its form is the labelling form (the same plan and inputs), less the run's own
options, so that a prompt, a threshold or a checkpoint can be tried before a
long run. From Python::

    import fiftyone.operators as foo

    result = foo.execute_operator(
        "@fiftyone-florence2/florence2/florence2_dry_run",
        ctx=dict(dataset=dataset, selected=ids[:2], params=dict(tasks=["caption", "detection"])),
    )
    result.result["rows"]  # per sample and task: labels, confidences, problem

``current_sample`` (the sample open in the App) is previewed when set, else
the selected samples, up to :data:`~.plan.PREVIEW_UP_TO`.
"""

from __future__ import annotations

import os
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from .form import build_form
from .plan import make_plan
from .runs import preview

# Confidences shown per cell; the JSON result keeps them all.
SHOWN_CONFIDENCES = 10


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "/")


def _confidences(values: list[float | None]) -> str:
    shown = ", ".join("none" if c is None else f"{c:.2f}" for c in values[:SHOWN_CONFIDENCES])
    return shown + (f", ... ({len(values)})" if len(values) > SHOWN_CONFIDENCES else "")


def preview_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of a preview: sample, task, what it would write, confidences."""
    if not rows:
        return "None of the chosen samples could be read."
    lines = ["| sample | task | would write | confidence |", "|---|---|---|---|"]
    for row in rows:
        what = row["labels"] if row["problem"] is None else f"not labelled: {row['problem']}"
        cells = [os.path.basename(row["filepath"]), f"{row['task']} ({row['label_type']})", what]
        lines.append("| " + " | ".join(map(_cell, cells)) + f" | {_confidences(row['confidences'])} |")
    return "\n".join(lines)


class Florence2DryRun(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_dry_run",
            label="Florence-2: dry run (preview labels)",
            description="Run Florence-2 on the open sample or a few selected ones and show the labels; writes nothing",
            dynamic=True,
            allow_immediate_execution=True,
            allow_delegated_execution=False,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        plan = make_plan(ctx, full=False, preview=True)
        view = types.PromptView(label="Florence-2 dry run", submit_button_label="Preview")
        return types.Property(build_form(ctx, plan), view=view)

    def execute(self, ctx: Any) -> dict[str, Any]:
        """The preview's rows (JSON) and their table; raises with the form's message on a bad input."""
        plan = make_plan(ctx, full=False, preview=True)
        if plan.problem:
            raise ValueError(plan.problem)
        result = preview(plan)
        return {**result, "table": preview_table(result["rows"])}

    def resolve_output(self, ctx: Any) -> types.Property | None:
        result = ctx.results or {}
        if "rows" not in result:
            return None
        outputs = types.Object()
        outputs.str("table", label=f"Previewed {result['previewed']} sample(s); nothing was written",
                    view=types.MarkdownView())  # fmt: skip
        outputs.float("seconds", label="Seconds")
        return types.Property(outputs, view=types.View(label="Florence-2 dry run"))

"""``florence2_train``: fine-tune Florence-2 on the current view's labels, in a delegated operation.

Training takes longer than an immediate operation may run
(``fo.config.operator_timeout``, 600 s), so the operator is delegated only: the
App queues it and a ``fiftyone delegated launch`` worker runs
:func:`fiftyone_florence2.train` on the target view. Its progress (step, loss,
validation score) is stored on the operation, where 'Florence-2: delegated
runs' shows it; its result holds the metrics and the checkpoint directory,
which the labelling form then offers as a checkpoint. From Python::

    import fiftyone.operators as foo

    foo.execute_operator(
        "@fiftyone-florence2/florence2/florence2_train",
        ctx=dict(view=dataset.match_tags("reviewed"), params=dict(
            task="detection", label_field="ground_truth", output_dir="/models/florence2-ft", max_steps=500)),
    )  # queued; a worker runs it
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_florence2.runs.summary import SHOWN_REASONS

from .train_form import build_train_form, make_train_plan

# Logged values that describe the run's speed rather than what it learnt.
_NOT_METRICS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


class TrainingProgress:
    """``on_progress`` for ``train()``: each logged step to ``set_progress``, with the latest loss and
    validation score (they are logged in separate entries)."""

    def __init__(self, set_progress: Callable[..., Any]):
        self.set_progress, self.loss, self.score = set_progress, None, None

    def __call__(self, entry: dict[str, Any]) -> None:
        self.loss = entry.get("loss", self.loss)
        self.score = entry.get("eval_score", self.score)
        step, total = entry["step"], entry.get("max_steps") or 0
        text = f"step {step}/{total}"
        if self.loss is not None:
            text += f", loss {self.loss:.4g}"
        if self.score is not None:
            text += f", val score {self.score:.4g}"
        self.set_progress(progress=min(1.0, step / total) if total else None, label=text)


def per_epoch(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last training loss and validation metrics of each epoch (an entry logged at epoch 1.5 counts
    towards epoch 2), with the step they were logged at."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in history:
        epoch = max(1, -int(-entry.get("epoch", 0) // 1))
        row = rows.setdefault(epoch, {"epoch": epoch})
        row["step"] = entry["step"]
        for key, value in entry.items():
            if key == "loss" or (key.startswith("eval_") and key not in _NOT_METRICS):
                row[key] = value
    return list(rows.values())


def metrics_table(epochs: list[dict[str, Any]]) -> str:
    """A markdown table of :func:`per_epoch`'s rows: epoch, step, loss and each metric."""
    if not epochs:
        return "No step was logged."
    keys = list(dict.fromkeys(key for row in epochs for key in row))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in epochs:
        cells = [row.get(key) for key in keys]
        lines.append("| " + " | ".join("" if c is None else f"{c:.4g}" if isinstance(c, float) else str(c)
                                        for c in cells) + " |")  # fmt: skip
    return "\n".join(lines)


def fine_tune(plan: Any, set_progress: Callable[..., Any]) -> dict[str, Any]:
    """Trains on the plan's samples and returns what the run made, as JSON."""
    from fiftyone_florence2.training.trainer import train  # torch and transformers: only where a run executes

    set_progress(progress=0.0, label="Reading the labels and loading the weights")
    result = train(plan.samples, progress=False, on_progress=TrainingProgress(set_progress),
                   **plan.options)  # fmt: skip
    epochs = per_epoch(result.history)
    return {
        "output_dir": result.output_dir,
        "run_key": result.run_key,
        "tasks": [task.name for task in plan.tasks],
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "train_samples": result.train_samples,
        "val_samples": result.val_samples,
        "best": result.best,
        "best_score": result.best["eval_score"] if result.best else None,
        "epochs": epochs,
        "metrics": metrics_table(epochs),
        "skipped": len(result.skips),
        "skips": dict(list(result.skips.items())[:SHOWN_REASONS]),
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }


class Florence2Train(foo.Operator):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="florence2_train",
            label="Florence-2: fine-tune",
            description="Fine-tune Florence-2 on the current view's labels in the background; the labelling "
            "operator then offers the checkpoint",
            dynamic=True,
            allow_immediate_execution=False,
            allow_delegated_execution=True,
            default_choice_to_delegated=True,
        )

    def resolve_input(self, ctx: Any) -> types.Property:
        plan = make_train_plan(ctx)
        view = types.PromptView(label="Fine-tune Florence-2", submit_button_label="Schedule")
        return types.Property(build_train_form(ctx, plan), view=view)

    def resolve_delegation(self, ctx: Any) -> bool:
        return True  # an immediate run would time out (fo.config.operator_timeout)

    def resolve_run_name(self, ctx: Any) -> str:
        plan = make_train_plan(ctx)
        tasks = ", ".join(task.name for task in plan.tasks)
        return f"Florence-2 fine-tune {tasks} → {plan.options.get('output_dir')}"

    def execute(self, ctx: Any) -> dict[str, Any]:
        """Fine-tunes (in a delegated operation only) and returns the metrics and checkpoint directory."""
        if not ctx.delegated:
            raise ValueError("Fine-tuning runs only as a delegated operation: queue it, and run a worker.")
        plan = make_train_plan(ctx)
        if plan.problem:
            raise ValueError(plan.problem)
        return fine_tune(plan, ctx.set_progress)

    def resolve_output(self, ctx: Any) -> types.Property | None:
        result = ctx.results or {}
        if "output_dir" not in result:
            return None
        outputs = types.Object()
        outputs.str("output_dir", label="Checkpoint ('Florence-2: label samples' offers it)")
        if result.get("best_score") is not None:
            outputs.float("best_score", label=f"Best validation score (step {result['best']['step']})")
        outputs.str("metrics", label="Per epoch", view=types.MarkdownView())
        outputs.int("steps", label="Steps")
        outputs.float("seconds", label="Seconds")
        outputs.int("skipped", label="Samples left out (reasons in the run record)")
        outputs.str("run_key", label="Run")
        return types.Property(outputs, view=types.View(label="Fine-tune Florence-2"))

"""Running a plan: labelling with progress, streaming it to the App, queueing shards, and previews."""

from __future__ import annotations

import copy
import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from fiftyone_florence2.core.errors import for_route
from fiftyone_florence2.labels.convert import summarize
from fiftyone_florence2.runs.labelling import label_samples, preview_samples
from fiftyone_florence2.runs.model import Florence2Model
from fiftyone_florence2.runs.records import new_run_key
from fiftyone_florence2.runs.summary import SHOWN_REASONS, similarity_hint

from .plan import RELOAD_UP_TO, Plan
from .runners import use_runner

Progress = Callable[[float, str], None]


def label(plan: Plan, progress: Progress) -> dict[str, Any]:
    """Labels the plan's samples (or its shard) and returns what happened, as JSON."""
    config = plan.config
    progress(0.0, f"Loading {config.model}")
    with use_runner(config) as runner:
        model = Florence2Model(config, runner=runner)
        summary = label_samples(
            plan.samples,
            model,
            plan.label_field,
            skip_existing=plan.values["skip_existing"],
            overwrite=plan.values["overwrite"],
            shard=plan.shard,
            progress=lambda done, total: progress(done / total if total else 1.0, f"{done}/{total} images"),
            run_key=plan.values["run_key"],
            embeddings_field=plan.values["embeddings_field"],
        )
    return {
        **summary.as_dict(shown=SHOWN_REASONS),
        "label_types": plan.label_types,
        "shard": list(plan.shard) if plan.shard else None,
        "worker": {"host": socket.gethostname(), "pid": os.getpid()},
    }


def describe(result: dict[str, Any]) -> str:
    """One line for a notification: what was written where, and what failed."""
    types = result["label_types"]
    fields = ", ".join(f"{name} ({types[task]})" for task, name in result["label_fields"].items())
    text = f"Florence-2 labelled {result['labelled']} of {result['targeted']} sample(s) into {fields}"
    text += f" in {result['seconds']:.1f} s."
    if result["skipped"]:
        text += f" Skipped {result['skipped']} that already had labels."
    if result["failed"]:
        reason = next(iter(result["failures"].values()))
        text += f" {result['failed']} failed (first: {reason}); all reasons are in run {result['run_key']!r}."
    if result.get("embedded"):
        text += f" Stored {result['embedded']} embedding(s) in {result['embeddings_field']}. " + similarity_hint(
            result["embeddings_field"]
        )
    return text


def stream(ctx: Any, plan: Plan, job: Callable[[Progress], dict[str, Any]]) -> Iterator[Any]:
    """Runs ``job`` in a thread and yields its progress to the App as it goes (immediate runs)."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = job(lambda fraction, text: events.put((fraction, text)))
        except BaseException as e:  # handed to the generator, which re-raises it
            outcome["error"] = e
        finally:
            events.put(None)

    threading.Thread(target=work, name="florence2-operator", daemon=True).start()
    while (event := events.get()) is not None:
        fraction, text = event
        yield ctx.ops.set_progress(progress=fraction, label=text)
    if "error" in outcome:
        yield ctx.ops.set_progress(label="Failed")
        yield ctx.ops.notify(f"Florence-2 failed: {for_route(outcome['error'], 'app')}", variant="error")
        raise outcome["error"]
    result = outcome["result"]
    if "queued" in result:
        yield ctx.ops.notify(result["message"], variant="info")
        return
    if plan.count <= RELOAD_UP_TO:
        yield ctx.ops.reload_dataset()
        text = describe(result)
    else:
        text = describe(result) + " Reload the App to see them."
    yield ctx.ops.notify(text, variant="warning" if result["failed"] else "success")


def queue_shards(ctx: Any, operator_uri: str, plan: Plan, run_name: str) -> dict[str, Any]:
    """Queues one delegated operation per shard; they share a run key, so they share the field lock."""
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    run_key = new_run_key(plan.label_field)
    service = DelegatedOperationService()
    ids = []
    for index in range(plan.shards):
        request = copy.deepcopy(ctx.request_params)
        request["params"] = {**copy.deepcopy(ctx.params), "shard": [index, plan.shards], "run_key": run_key}
        request["delegated"] = True
        request["request_delegation"] = True
        operation = service.queue_operation(
            operator=operator_uri,
            label=f"{run_name} (shard {index + 1}/{plan.shards})",
            delegation_target=ctx.delegation_target,
            context=ExecutionContext(request_params=request).serialize(),
        )
        ids.append(str(operation.id))
    message = (
        f"Queued {plan.shards} delegated operations, one per shard of {plan.count} samples (run {run_key!r}). "
        "Each `fiftyone delegated launch` worker on this database takes one; "
        "follow them in the operator 'Florence-2: delegated runs'."
    )
    return {"queued": ids, "run_key": run_key, "message": message}


def preview(plan: Plan) -> dict[str, Any]:
    """Labels the plan's few samples and returns, per sample and task, what a run would write; writes
    nothing. The weights stay loaded for the run that follows."""
    start = time.perf_counter()
    with use_runner(plan.config) as runner:
        model = Florence2Model(plan.config, runner=runner)
        previewed = preview_samples(plan.samples, model, plan.ids)
    rows = []
    for item, filepath, outcome in previewed:
        for task, label_type in plan.label_types.items():
            label = outcome.labels.get(task)
            text, confidences = summarize(label) if label is not None else (None, [])
            reason = next((r for r in outcome.failed + outcome.skipped if r.startswith(f"{task}: ")), outcome.reason)
            rows.append({
                "sample_id": item.sample_id,
                "filepath": filepath,
                "task": task,
                "label_type": label_type,
                "labels": text,
                "confidences": confidences,
                "problem": None if label is not None else reason,
            })  # fmt: skip
    return {"previewed": len(previewed), "rows": rows, "seconds": round(time.perf_counter() - start, 3)}

"""Fine-tuning Florence-2 on a collection's own labels, on transformers' ``Trainer``.

``Trainer`` does the optimisation, mixed precision, gradient accumulation,
resumable checkpoints (model, optimizer, scheduler, RNG and data position),
``torchrun``/DDP and peft. This module adds what is ours: FiftyOne samples to
(image, question, answer) batches through the labelling path's safe image
reader, validation in FiftyOne's terms after each epoch, the run record, and
a native checkpoint (LoRA merged) that ``load_model`` loads like any other.
The output directory's rules (staging, the final swap, the lock) live in
:mod:`.output`. The trainer's resumable ``checkpoint-N`` folders are
*resume points* here; *checkpoint* means the weights ``load_model`` loads.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer

from fiftyone_florence2.core.checkpoints import weights_fingerprint
from fiftyone_florence2.core.errors import Florence2Error
from fiftyone_florence2.core.tasks import get_tasks
from fiftyone_florence2.engine.runner import Florence2Runner
from fiftyone_florence2.runs.config import Florence2ModelConfig
from fiftyone_florence2.runs.model import Florence2Model
from fiftyone_florence2.runs.records import mark_interrupted, new_run_key
from fiftyone_florence2.training.data import Example, Split, drop_unlearnable, make_split, validation_source
from fiftyone_florence2.training.loop import (
    DRAFT_WH,
    Collator,
    ExampleImages,
    FiniteLoss,
    FlorenceTrainer,
    LogRecorder,
    finite_weights,
    precision_args,
    prepare_model,
    training_args,
)
from fiftyone_florence2.training.options import RESUME_DIR, TrainOptions, read_train_options
from fiftyone_florence2.training.output import (
    MUST_MATCH,
    SCHEDULE,
    STAGED_MODEL,
    STAGING,
    TRAINING_RECORD,
    OutputDirLock,
    check_output_dir,
    commit,
    discard_staging,
    locked_output,
    media_dirs,
    resume_changes,
    resume_point_of,
    start_staging,
)
from fiftyone_florence2.training.progress import ProgressBar
from fiftyone_florence2.training.record import METHOD, finish_training_run, record_training_progress, start_training_run
from fiftyone_florence2.training.validation import delete_copy, evaluate, label_classes, regions_field, validation_copy

__all__ = ["TrainResult", "TrainingDiverged", "train", "training_args"]


class TrainingDiverged(Florence2Error, RuntimeError):
    """The loss stopped being finite: nothing was saved."""


@dataclass
class TrainResult:
    """What a training run made: the checkpoint directory, its metrics, what it left out, and (a resume) the
    schedule options it changed, ``{option: [before, now]}``."""

    output_dir: str
    run_key: str | None
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, float] | None = None
    steps: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    train_samples: int = 0
    val_samples: int = 0
    world_size: int = 1
    skips: dict[str, str] = field(default_factory=dict)
    resume_changes: dict[str, list[Any]] = field(default_factory=dict)


def _validator(copy: Any, processor: Any, options: TrainOptions, fields: dict[str, str], val: list[Example]):
    """``validate(model) -> metrics``: labels the validation copy with the weights in training, greedily and
    with room for twice the longest expected answer (an unconverged model may ramble to its budget)."""
    tasks = [get_tasks(name)[0] for name in fields]
    classes = options.classes
    if classes is None and any(task.takes_classes for task in tasks):
        classes = label_classes(copy, fields[next(task.name for task in tasks if task.takes_classes)]) or None
    longest = max(len(processor.tokenizer(example.answer).input_ids) for example in val)
    config = Florence2ModelConfig(
        {
            "task": list(fields),
            "model": options.model,
            "prompt_field": options.prompt_field,
            "classes": classes,
            "regions_field": regions_field(copy, fields),
            "batch_size": options.batch_size,
            "num_beams": 1,
            "max_new_tokens": 2 * longest + 8,
        }
    )

    def validate(model: Any) -> dict[str, float]:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        runner = Florence2Runner.from_loaded(base, processor, str(options.model))
        with torch.no_grad():
            return evaluate(copy, Florence2Model(config, runner=runner), fields)

    return validate


def save_native(trainer: Trainer, processor: Any, output: Path) -> None:
    """Writes the trained (best, if validated) weights to ``output`` as a native checkpoint: safetensors,
    LoRA merged, and the processor."""
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(output, safe_serialization=True)
    processor.save_pretrained(output)


def answer_check(runner: Florence2Runner) -> Callable[[str], None]:
    """``check(answer)``: ``ValueError`` when an answer takes more tokens than the decoder has positions."""
    limit = runner.max_text_positions

    def check(answer: str) -> None:
        used = len(runner.tokenizer(answer).input_ids)
        if used > limit:
            raise ValueError(f"the answer is too long to learn: it takes {used} tokens, and the decoder has {limit}")

    return check


def output_settings(options: TrainOptions) -> dict[str, Any]:
    """The options a resume is compared on, as JSON."""
    values = options.as_dict()
    return {name: str(values[name]) if name == "model" else values[name] for name in (*MUST_MATCH, *SCHEDULE)}


def train(samples: Any, progress: bool = True, on_progress: Callable[[dict], None] | None = None,
          **options: Any) -> TrainResult:  # fmt: skip
    """Fine-tunes Florence-2 on the labels of ``samples`` (as the view shows them) and writes a checkpoint
    ``load_model`` loads.

    The options are the fine-tuning table of ``docs/OPTIONS.md`` (``task``,
    ``label_field``, ``output_dir``, ``model``, ``epochs``, ``max_steps``,
    ``batch_size``, ``learning_rate``, ``freeze_vision``, ``lora``,
    ``val_fraction``, ``resume``, ...). Bad options and data are refused
    before any weights load, each naming the options as the route that shows
    it spells them (:class:`OptionError`). ``on_progress(entry)`` gets each logged
    step. The previous checkpoint in ``output_dir`` is replaced only once the
    new one is complete; a run whose loss stops being finite raises
    :class:`TrainingDiverged` and replaces nothing.

    Returns:
        a :class:`TrainResult`
    """
    read = read_train_options(options)
    precision_args(read.device, read.dtype)  # a device or precision this machine lacks
    if int(os.environ.get("RANK", "0")) != 0:
        # Another process of a torchrun job: process 0 checks, locks, stages and swaps the output directory,
        # whose state it may already have changed.
        read = replace(read, output_dir=str(Path(read.output_dir).expanduser().resolve()))
        split = make_split(samples, read, DRAFT_WH)
        return _train(samples, read, split, None, output_settings(read), {})
    media = media_dirs(samples)
    output = check_output_dir(read.output_dir, read.overwrite, read.resume, media)
    read = replace(read, output_dir=str(output))  # the record's checkpoint path, whatever directory a process runs in
    settings = output_settings(read)
    changes = resume_changes(output, settings) if read.resume else {}
    split = make_split(samples, read, DRAFT_WH)
    with locked_output(output, new_run_key(method=METHOD)) as lock:
        for abandoned in lock.abandoned_records():
            mark_interrupted(samples._root_dataset, abandoned)
        check_output_dir(str(output), read.overwrite, read.resume, media)  # now ours alone
        return _train(samples, read, split, lock, settings, changes, progress, on_progress)


def _train(
    samples: Any,
    options: TrainOptions,
    split: Split,
    lock: OutputDirLock | None,
    settings: dict,
    changes: dict,
    progress: bool = False,
    on_progress: Callable[[dict], None] | None = None,
) -> TrainResult:
    """The run once its output directory is checked (and, in process 0, locked): weights, staging, training,
    and the swap into place."""
    output, fields = Path(options.output_dir), options.label_field
    started = time.monotonic()
    runner = Florence2Runner(options.model, revision=options.revision, device="cpu", dtype="float32")
    processor = runner.processor
    drop_unlearnable(split, runner.check_question, answer_check(runner))
    model = prepare_model(runner.model, options)
    resume_point = resume_point_of(output) if options.resume else None
    staging = start_staging(output, settings, options.resume) if lock else output / STAGING
    source = validation_source(samples, options.val_view)
    copy = validation_copy(source, split.val_ids, fields, options.prompt_field) if split.val else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = options.batch_size * options.grad_accum * world
    args = training_args(options, staging, copy is not None, max(1, math.ceil(len(split.train) / per_step)))
    run_key = None
    if lock:
        run_key = start_training_run(
            samples, lock.run_key, options, split, resumed_from=resume_point, changes=changes, runner=runner
        )
        lock.note_record(run_key)
    bar = ProgressBar(progress and lock is not None, per_step)

    def on_log(entry: dict, state: Any) -> None:
        bar.update(entry, state)
        if run_key:
            record_training_progress(samples, run_key, entry)
        if on_progress:
            on_progress({**entry, "max_steps": state.max_steps})

    record, finite = LogRecorder(on_log), FiniteLoss()
    trainer = FlorenceTrainer(
        model=model,
        args=args,
        train_dataset=ExampleImages(split.train),
        eval_dataset=ExampleImages(split.val) if split.val else None,
        data_collator=Collator(processor),
        callbacks=[record, bar, finite],
        validate=_validator(copy, processor, options, fields, split.val) if copy is not None else None,
        skips=split.skips,
        shuffle=options.shuffle,
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the logs
    status, summary = "failed", {"history": record.logs, "skips": split.skips}
    try:
        outcome = trainer.train(resume_from_checkpoint=str(resume_point) if resume_point else None)
        if finite.bad_step is not None or not finite_weights(trainer.model):
            status = "diverged"
            raise TrainingDiverged(
                f"The loss stopped being finite (step {finite.bad_step or trainer.state.global_step}): nothing was "
                "saved, and any earlier checkpoint in the output directory stays. Lower the learning rate."
            )
        result = _result(trainer, record, split, output, run_key, started, outcome.metrics, changes)
        if lock:
            summary = _save(trainer, processor, output, staging, result, settings)
        status = "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        bar.close()
        delete_copy(copy)
        if status == "diverged" and lock:
            discard_staging(output)  # non-finite weights: nothing to resume from
        if run_key:
            finish_training_run(samples, run_key, "failed" if status == "diverged" else status, summary)
    return result


def _result(trainer: Trainer, record: LogRecorder, split: Split, output: Path, run_key: str | None,
            started: float, metrics: dict, changes: dict) -> TrainResult:  # fmt: skip
    evals = [entry for entry in record.logs if "eval_score" in entry]
    return TrainResult(
        output_dir=str(output),
        run_key=run_key,
        history=record.logs,
        best=max(evals, key=lambda entry: entry["eval_score"]) if evals else None,
        steps=trainer.state.global_step,
        seconds=time.monotonic() - started,
        samples_per_second=float(metrics.get("train_samples_per_second", 0.0)),
        train_samples=len(split.train_ids),
        val_samples=len(split.val_ids),
        world_size=trainer.args.world_size,
        skips=dict(split.skips),
        resume_changes=changes,
    )


def _save(trainer: Trainer, processor: Any, output: Path, staging: Path, result: TrainResult,
          settings: dict) -> dict[str, Any]:  # fmt: skip
    """Writes the native checkpoint and its record into the staging directory, then swaps them into place;
    returns the record."""
    best_point = trainer.state.best_model_checkpoint
    if best_point:  # where the best resume point will be once moved into place
        best_point = str(output / RESUME_DIR / Path(best_point).relative_to(staging / RESUME_DIR))
    summary = {**result.__dict__, "best_checkpoint": best_point}
    summary.pop("run_key")
    save_native(trainer, processor, staging / STAGED_MODEL)
    (staging / STAGED_MODEL / TRAINING_RECORD).write_text(json.dumps(summary, indent=1, default=str))
    commit(output, settings)
    summary["checkpoint_sha256"] = weights_fingerprint(output)  # what labelling with it records
    return summary

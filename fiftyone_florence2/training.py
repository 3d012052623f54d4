"""Fine-tuning Florence-2 on a collection's own labels, on transformers' ``Trainer``.

``Trainer`` does the optimisation, mixed precision, gradient accumulation,
resumable checkpoints (model, optimizer, scheduler, RNG and data position),
``torchrun``/DDP and peft. This module adds what is ours: FiftyOne samples to
(image, question, answer) batches through the labelling path's safe image
reader, validation in FiftyOne's terms after each epoch, the run record, and
a native checkpoint (LoRA merged) that ``load_model`` loads like any other.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from .checkpoints import weights_fingerprint
from .config import Florence2ModelConfig
from .devices import pick_device, pick_dtype
from .images import ImageLoadError, load_rgb
from .model import Florence2Model
from .runner import Florence2Runner
from .tasks import get_tasks
from .train_data import (
    TRAINING_RECORD,
    Example,
    check_output_dir,
    drop_unaskable,
    incomplete_checkpoints,
    last_complete_checkpoint,
    make_split,
)
from .train_eval import delete_copy, evaluate, label_classes, regions_field, validation_copy
from .train_options import CHECKPOINTS_DIR, read_train_options
from .train_progress import ProgressBar
from .train_record import finish_training_run, record_training_progress, start_training_run

# Decode the images of a step no larger than this first (JPEG draft): the processor resizes them anyway.
_DRAFT_WH = (768, 768)
# LoRA adapts these linear layers; with the vision tower frozen, only the text model's.
_TEXT_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"


@dataclass
class TrainResult:
    """What a training run made: the checkpoint directory, its metrics, and what it left out."""

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


class ExampleImages(torch.utils.data.Dataset):
    """Examples with their images, read through the labelling path's safe reader.

    A file that stopped reading since the run began is replaced by the next
    example, and its sample's reason travels with the batch (``failed``).
    """

    def __init__(self, examples: list[Example]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        failed = []
        for offset in range(len(self.examples)):
            example = self.examples[(index + offset) % len(self.examples)]
            try:
                image = load_rgb(example.filepath, _DRAFT_WH).image
            except ImageLoadError as error:
                failed.append((example.sample_id, str(error)))
                continue
            return {"example": example, "image": image, "failed": failed}
        raise RuntimeError("None of the training images can be read any more: " + failed[0][1])


class Collator:
    """A list of examples with images to the model's inputs, and ``labels``: the answers' tokens, padding
    masked out of the loss."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        questions = [item["example"].question for item in items]
        batch = self.processor(
            text=questions, images=[item["image"] for item in items], return_tensors="pt", padding=True
        )
        answers = self.processor.tokenizer(
            [item["example"].answer for item in items], return_tensors="pt", padding=True
        )
        labels = answers["input_ids"].masked_fill(answers["attention_mask"] == 0, -100)
        failed = [pair for item in items for pair in item["failed"]]
        return {**batch, "labels": labels, "failed": failed}


class FlorenceTrainer(Trainer):
    """``Trainer`` that keeps the reasons of images that failed mid-run, and validates in FiftyOne's terms."""

    def __init__(self, *args, validate: Callable[[Any], dict[str, float]] | None = None, skips=None,
                 shuffle: bool = True, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.validate, self.skips, self.shuffle = validate, skips if skips is not None else {}, shuffle

    def _get_train_sampler(self, *args, **kwargs):
        if self.shuffle:
            return super()._get_train_sampler(*args, **kwargs)
        return torch.utils.data.SequentialSampler(self.train_dataset)  # the view's order: a curriculum

    def _prepare_inputs(self, inputs):
        for sample_id, reason in inputs.pop("failed", ()):
            self.skips[sample_id] = reason
        return super()._prepare_inputs(inputs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.validate is not None:
            found = {f"{metric_key_prefix}_{key}": value for key, value in self.validate(self.model).items()}
            self.log(found)
            metrics.update(found)
        return metrics


class _Record(TrainerCallback):
    """Keeps every logged loss and metric, and stores the run's progress on the dataset."""

    def __init__(self, on_log: Callable[[dict, Any], None]):
        self.logs: list[dict[str, float]] = []
        self.on_log_ = on_log

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs:
            entry = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
            self.logs.append(entry)
            if state.is_world_process_zero:
                self.on_log_(entry, state)


def precision_args(device: str | None, dtype: str | None) -> dict[str, Any]:
    """``TrainingArguments`` for a device and dtype: bf16 mixed precision on GPUs that have it (fp16 on
    others), fp32 on CPU unless asked."""
    if device is not None and device.startswith("cuda:"):
        raise ValueError(f"device {device!r}: pick the GPU with CUDA_VISIBLE_DEVICES, or use torchrun for several.")
    chosen = pick_device(device)
    # Mixed precision by default only on CUDA (inference's choice there); MPS and CPU train in fp32.
    chosen_dtype = pick_dtype(dtype, chosen) if dtype is not None or chosen.type == "cuda" else torch.float32
    if chosen_dtype is torch.float16 and chosen.type != "cuda":
        raise ValueError("dtype float16 trains only on CUDA GPUs; use bfloat16 or float32.")
    on_cpu = chosen.type == "cpu"
    args = {"use_cpu": on_cpu, "bf16": chosen_dtype is torch.bfloat16, "fp16": chosen_dtype is torch.float16}
    if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args["ddp_backend"] = "gloo"
    return args


def prepare_model(model: Any, options: dict[str, Any]) -> Any:
    """Freezes the vision tower and/or wraps the model with LoRA adapters, as ``options`` ask."""
    if options["freeze_vision"]:
        for parameter in model.model.vision_tower.parameters():
            parameter.requires_grad = False
    if not options["lora"]:
        return model
    from peft import LoraConfig, get_peft_model

    targets = _TEXT_LINEAR if options["freeze_vision"] else "all-linear"
    config = LoraConfig(r=options["lora_rank"], lora_alpha=options["lora_alpha"], lora_dropout=0.05,
                        target_modules=targets)  # fmt: skip
    return get_peft_model(model, config)


def training_args(options: dict[str, Any], output: Path, validating: bool, steps_per_epoch: int) -> TrainingArguments:
    """``TrainingArguments`` from the checked options: saving and validating at each epoch's end (or
    every ``save_steps``), keeping the best checkpoint by ``score`` when there is a validation split."""
    every = options["save_steps"]
    strategy = "steps" if every else "epoch"
    return TrainingArguments(
        output_dir=str(output / CHECKPOINTS_DIR),
        num_train_epochs=options["epochs"],
        max_steps=options["max_steps"] or -1,
        per_device_train_batch_size=options["batch_size"],
        per_device_eval_batch_size=options["batch_size"],
        gradient_accumulation_steps=options["grad_accum"],
        learning_rate=options["learning_rate"],
        lr_scheduler_type=options["lr_schedule"],
        warmup_steps=options["warmup"],
        weight_decay=options["weight_decay"],
        max_grad_norm=options["max_grad_norm"],
        seed=options["seed"],
        data_seed=options["seed"],
        save_strategy=strategy,
        save_steps=every or 500,
        save_total_limit=options["keep_checkpoints"],
        eval_strategy=strategy if validating else "no",
        eval_steps=every,
        load_best_model_at_end=validating,
        metric_for_best_model="score" if validating else None,
        greater_is_better=True,
        # Log every 10 steps, or more often where a run is short: a loss shows before the end.
        logging_steps=max(
            1, min(10, steps_per_epoch, (options["max_steps"] or steps_per_epoch * options["epochs"]) // 2)
        ),
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=options["workers"],
        **precision_args(options["device"], options["dtype"]),
    )


def _validator(copy: Any, processor: Any, options: dict[str, Any], fields: dict[str, str], val: list[Example]):
    """``validate(model) -> metrics``: labels the validation copy with the weights in training, greedily and
    with room for twice the longest expected answer (an unconverged model may ramble to its budget)."""
    tasks = [get_tasks(name)[0] for name in fields]
    classes = options["classes"]
    if classes is None and any(task.takes_classes for task in tasks):
        classes = label_classes(copy, fields[next(task.name for task in tasks if task.takes_classes)]) or None
    longest = max(len(processor.tokenizer(example.answer).input_ids) for example in val)
    config = Florence2ModelConfig(
        {
            "task": list(fields),
            "model": options["model"],
            "prompt_field": options["prompt_field"],
            "classes": classes,
            "regions_field": regions_field(copy, fields),
            "batch_size": options["batch_size"],
            "num_beams": 1,
            "max_new_tokens": 2 * longest + 8,
        }
    )

    def validate(model: Any) -> dict[str, float]:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        runner = Florence2Runner.from_loaded(base, processor, str(options["model"]))
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


def _resume_point(output: Path, resume: bool) -> str | None:
    """The last complete checkpoint to resume from; incomplete newer ones (a kill while saving) go."""
    if not resume:
        return None
    for partial in incomplete_checkpoints(output / CHECKPOINTS_DIR):
        print(f"florence2 train: removing {partial.name}, which a killed run left half-written")
        shutil.rmtree(partial)
    return str(last_complete_checkpoint(output / CHECKPOINTS_DIR))


def train(samples: Any, progress: bool = True, on_progress: Callable[[dict], None] | None = None, **options: Any):
    """Fine-tunes Florence-2 on the labels of ``samples`` and writes a checkpoint ``load_model`` loads.

    The options are the fine-tuning table of ``docs/OPTIONS.md`` (``task``,
    ``label_field``, ``output_dir``, ``model``, ``epochs``, ``max_steps``,
    ``batch_size``, ``learning_rate``, ``freeze_vision``, ``lora``,
    ``val_fraction``, ``resume``, ...). Bad options and data are refused
    before any weights load. ``on_progress(entry)`` gets each logged step.

    Returns:
        a :class:`TrainResult`
    """
    options = read_train_options(options)
    output = check_output_dir(options["output_dir"], options["overwrite"], options["resume"])
    options["output_dir"] = str(output)  # the record's checkpoint path, whatever directory another process runs in
    fields = options["label_field"]
    split = make_split(samples, options, _DRAFT_WH)
    started = time.monotonic()
    runner = Florence2Runner(options["model"], revision=options["revision"], device="cpu", dtype="float32")
    processor = runner.processor
    drop_unaskable(split, runner.check_question)
    if options["overwrite"] and output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    model = prepare_model(runner.model, options)
    copy = validation_copy(samples, split.val_ids, fields, options["prompt_field"]) if split.val else None
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = options["batch_size"] * options["grad_accum"] * world
    args = training_args(options, output, copy is not None, max(1, math.ceil(len(split.train) / per_step)))
    run_key = start_training_run(samples, options, split, runner) if args.process_index == 0 else None
    bar = ProgressBar(progress and args.process_index == 0, per_step)

    def on_log(entry: dict, state: Any) -> None:
        bar.update(entry, state)
        if run_key:
            record_training_progress(samples, run_key, entry)
        if on_progress:
            on_progress({**entry, "max_steps": state.max_steps})

    record = _Record(on_log)
    trainer = FlorenceTrainer(
        model=model,
        args=args,
        train_dataset=ExampleImages(split.train),
        eval_dataset=ExampleImages(split.val) if split.val else None,
        data_collator=Collator(processor),
        callbacks=[record, bar],
        validate=_validator(copy, processor, options, fields, split.val) if copy is not None else None,
        skips=split.skips,
        shuffle=options["shuffle"],
    )
    trainer.remove_callback(PrinterCallback)  # our bar shows the logs
    status = "failed"
    try:
        outcome = trainer.train(resume_from_checkpoint=_resume_point(output, options["resume"]))
        status = "completed"
    finally:
        bar.close()
        delete_copy(copy)
        if status != "completed" and run_key:
            finish_training_run(samples, run_key, status, {"history": record.logs, "skips": split.skips})
    state = trainer.state
    evals = [entry for entry in record.logs if "eval_score" in entry]
    best = max(evals, key=lambda entry: entry["eval_score"]) if evals else None
    result = TrainResult(
        output_dir=str(output),
        run_key=run_key,
        history=record.logs,
        best=best,
        steps=state.global_step,
        seconds=time.monotonic() - started,
        samples_per_second=float(outcome.metrics.get("train_samples_per_second", 0.0)),
        train_samples=len(split.train_ids),
        val_samples=len(split.val_ids),
        world_size=args.world_size,
        skips=dict(split.skips),
    )
    if trainer.is_world_process_zero():
        save_native(trainer, processor, output)
        summary = {**result.__dict__, "best_checkpoint": state.best_model_checkpoint}
        summary["checkpoint_sha256"] = weights_fingerprint(output)  # what labelling with it records
        summary.pop("run_key")
        (output / TRAINING_RECORD).write_text(json.dumps(summary, indent=1, default=str))
        if run_key:
            finish_training_run(samples, run_key, "completed", summary)
    return result

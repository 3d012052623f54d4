"""The training loop's parts on transformers' ``Trainer``: examples with their images, the collator, the
trainer subclass, the callbacks that record logs and stop a run whose loss is no longer finite, and the
``TrainingArguments`` the options make."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_utils import remove_tied_weights_from_state_dict

from fiftyone_florence2.engine.devices import pick_device, pick_dtype
from fiftyone_florence2.engine.images import ImageLoadError, load_rgb
from fiftyone_florence2.training.data import Example
from fiftyone_florence2.training.options import RESUME_DIR, TrainOptions

# Decode the images of a step no larger than this first (JPEG draft): the processor resizes them anyway.
DRAFT_WH = (768, 768)
# LoRA adapts these linear layers; with the vision tower frozen, only the text model's.
_TEXT_LINEAR = r".*language_model.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"


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
                image = load_rgb(example.filepath, DRAFT_WH).image
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
        # transformers has no public hook for the order; tests pin this private method's name.
        if self.shuffle:
            return super()._get_train_sampler(*args, **kwargs)
        return torch.utils.data.SequentialSampler(self.train_dataset)  # the view's order: a curriculum

    def compute_loss(self, model, inputs, *args, **kwargs):
        # Every batch (training and evaluation) passes here before the model reads it: the reasons of the
        # images its examples replaced are kept, and the model gets only its inputs.
        for sample_id, reason in inputs.pop("failed", ()):
            self.skips[sample_id] = reason
        return super().compute_loss(model, inputs, *args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.validate is not None:
            found = {f"{metric_key_prefix}_{key}": value for key, value in self.validate(self.model).items()}
            self.log(found)
            metrics.update(found)
        return metrics


class LogRecorder(TrainerCallback):
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


def prepare_model(model: Any, options: TrainOptions) -> Any:
    """Freezes the vision tower and/or wraps the model with LoRA adapters, as ``options`` ask."""
    # A save leaves out the aliases of tied weights (embed_tokens, lm_head: one tensor). Naming them lets the
    # Trainer re-tie them when it reloads the best checkpoint, instead of warning that they are missing.
    state = model.state_dict()
    model._keys_to_ignore_on_save = set(state) - set(remove_tied_weights_from_state_dict(dict(state), model))
    if options.freeze_vision:
        for parameter in model.model.vision_tower.parameters():
            parameter.requires_grad = False
    if not options.lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = _TEXT_LINEAR if options.freeze_vision else "all-linear"
    config = LoraConfig(r=options.lora_rank, lora_alpha=options.lora_alpha, lora_dropout=0.05,
                        target_modules=targets)  # fmt: skip
    return get_peft_model(model, config)


def training_args(options: TrainOptions, output: Path, validating: bool, steps_per_epoch: int) -> TrainingArguments:
    """``TrainingArguments`` from the checked options: saving and validating at each epoch's end (or
    every ``save_steps``), keeping the best checkpoint by ``score`` when there is a validation split."""
    every = options.save_steps
    strategy = "steps" if every else "epoch"
    return TrainingArguments(
        output_dir=str(output / RESUME_DIR),
        num_train_epochs=options.epochs,
        max_steps=options.max_steps or -1,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size,
        gradient_accumulation_steps=options.grad_accum,
        learning_rate=options.learning_rate,
        lr_scheduler_type=options.lr_schedule,
        warmup_steps=options.warmup,
        weight_decay=options.weight_decay,
        max_grad_norm=options.max_grad_norm,
        seed=options.seed,
        data_seed=options.seed,
        save_strategy=strategy,
        save_steps=every or 500,
        save_total_limit=options.keep_checkpoints,
        eval_strategy=strategy if validating else "no",
        eval_steps=every,
        load_best_model_at_end=validating,
        metric_for_best_model="score" if validating else None,
        greater_is_better=True,
        # Log every 10 steps, or more often where a run is short: a loss shows before the end.
        logging_steps=max(1, min(10, steps_per_epoch, (options.max_steps or steps_per_epoch * options.epochs) // 2)),
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=options.workers,
        **precision_args(options.device, options.dtype),
    )


class FiniteLoss(TrainerCallback):
    """Stops a run at the first logged loss that is not finite (NaN or infinite), noting its step."""

    def __init__(self):
        self.bad_step: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and self.bad_step is None:
            self.bad_step = state.global_step
            control.should_training_stop = True
            control.should_save = False


def finite_weights(model: Any) -> bool:
    """Whether every weight of ``model`` is finite."""
    return all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters())

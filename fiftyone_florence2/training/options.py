"""Every fine-tuning option, declared once, as the labelling options are. Standard library only.

``train()``, ``florence2 train``, the App's fine-tuning form, the training run
record and ``docs/OPTIONS.md`` derive from :data:`TRAIN_OPTIONS`. A run reads
its options as one frozen, typed :class:`TrainOptions` (the idea of
transformers' ``TrainingArguments``), which :func:`read_train_options` builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from fiftyone_florence2.core.calibration_options import CALIBRATE_OPTIONS
from fiftyone_florence2.core.errors import OptionError, named
from fiftyone_florence2.core.options import (
    OPTIONS,
    Kind,
    Option,
    boolean,
    field_name,
    finite_number,
    options_table,
    positive_number,
    whole_number,
)
from fiftyone_florence2.core.swap import RESUME_DIR
from fiftyone_florence2.core.tasks import DEFAULT_TRAIN_TASK, Task, get_tasks

SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")
DEFAULT_GT_FIELD = "ground_truth"


def label_fields(name: str, value: Any) -> str | dict[str, str]:
    """One field for every task, or ``{task: field}``; from the CLI, ``caption=captions,<OD>=gt``."""
    if isinstance(value, str) and "=" in value:
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        value = {task.strip(): field.strip() for task, field in pairs}
    if isinstance(value, Mapping):
        if not value:
            raise ValueError(f"{name} must name at least one field.")
        return {str(task): field_name(name, field) for task, field in value.items()}
    return field_name(name, value)


def split_fraction(name: str, value: Any) -> float:
    """A share of the samples strictly between 0 and 1."""
    number = finite_number(name, value, "a fraction between 0 and 1")
    if not 0 < number < 1:
        raise ValueError(f"{name} must be between 0 and 1 (a share of the samples), got {value!r}.")
    return number


def warmup(name: str, value: Any) -> float:
    """A share of the steps in [0, 1)."""
    number = finite_number(name, value, "a fraction from 0 to below 1")
    if not 0 <= number < 1:
        raise ValueError(f"{name} must be from 0 to below 1 (a share of the steps), got {value!r}.")
    return number


def non_negative(name: str, value: Any) -> float:
    number = finite_number(name, value, "a number of at least 0")
    if number < 0:
        raise ValueError(f"{name} must be at least 0, got {value!r}.")
    return number


def directory(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a directory path, got {value!r}.")
    return value


def grounds_a_caption(task: Task) -> bool:
    """Whether ``task`` learns to ground each sample's own caption (its text input is not a class list)."""
    return task.input == "text" and not task.takes_classes


def _with_lora(values: Mapping[str, Any]) -> str | None:
    """Why a LoRA setting is not read: LoRA is off."""
    return None if values.get("lora") else "LoRA is off"


def _shared(name: str, help: str | None = None, **changes: Any) -> Option:
    """A labelling option that training reads too, with a training help text where it differs."""
    from dataclasses import replace

    return replace(OPTIONS[name], help=help or OPTIONS[name].help, **changes)


TRAIN_OPTIONS: tuple[Option, ...] = (
    _shared("task", "the task(s) to train, each from its own labels", default=DEFAULT_TRAIN_TASK),
    Option("label_field", DEFAULT_GT_FIELD, "the field of corrected labels to learn, or task=field pairs, "
           "comma-separated, one field per task", "text", label_fields, group="input", label="Label field"),
    Option("output_dir", None, "where the fine-tuned checkpoint is written (its resumable checkpoints go in "
           f"{RESUME_DIR}/ inside it)", "text", directory, group="run", label="Output directory"),
    _shared("model", "the checkpoint to start from: a Hub id or a local checkpoint directory"),
    _shared("revision"),
    _shared("prompt_field", "phrase grounding: the field with each sample's caption, whose phrases the labels "
            "ground", applies=grounds_a_caption, label="Caption field"),
    _shared("classes", "the classes to ask for, one question each (default: the classes in the labels); a class "
            "a sample lacks is learnt as an empty answer"),
    Option("val_tag", None, "samples with this tag are the validation split", "text", group="input",
           label="Validation tag"),
    Option("val_fraction", None, "hold out this share of the samples (drawn with the seed) for validation",
           "float", split_fraction, group="input", label="Validation fraction"),
    Option("val_view", None, "a view of the same dataset to validate on (the rest trains)", group="input",
           cli=False, form=False),
    Option("epochs", 3, "passes over the training samples", "int", whole_number, group="training"),
    Option("max_steps", None, "stop after this many optimizer steps instead (overrides epochs)", "int",
           whole_number, group="training"),
    _shared("batch_size", "images per step, on each device", group="training"),
    Option("grad_accum", 1, "steps whose gradients add up before each optimizer update", "int", whole_number,
           group="training", label="Gradient accumulation steps"),
    Option("learning_rate", 5e-6, "the peak learning rate (AdamW); 1e-4 suits LoRA", "float", positive_number,
           group="training"),
    Option("lr_schedule", "linear", "how the learning rate falls after warmup", "choice", choices=SCHEDULES,
           group="training", label="Learning-rate schedule"),
    Option("warmup", 0.0, "the share of the steps that warm the learning rate up from 0", "float", warmup,
           group="training"),
    Option("weight_decay", 0.0, "AdamW's weight decay", "float", non_negative, group="training"),
    Option("max_grad_norm", 1.0, "clip the gradients' global norm to this before each update (0: no clipping)",
           "float", non_negative, group="training"),
    Option("freeze_vision", False, "train only the text model: the vision tower stays as it is", "bool", boolean,
           group="training"),
    Option("lora", False, "train LoRA adapters (peft) instead of all weights; they are merged into the saved "
           "checkpoint, so it runs at full speed", "bool", boolean, group="training", label="LoRA"),
    Option("lora_rank", 8, "the LoRA rank", "int", whole_number, group="training", label="LoRA rank",
           requires=_with_lora),
    Option("lora_alpha", 16, "the LoRA scale", "int", whole_number, group="training", label="LoRA alpha",
           requires=_with_lora),
    Option("shuffle", True, "shuffle each epoch", "bool", boolean, flag="--in-order", group="training",
           off="train in the view's order, e.g. a curriculum sorted easy first"),
    Option("save_steps", None, "save a resumable checkpoint every N steps (default: at each epoch's end)", "int",
           whole_number, group="run"),
    Option("keep_checkpoints", 2, "resumable checkpoints kept (the best one is always kept)", "int",
           whole_number, group="run"),
    Option("seed", 0, "the seed for weights, data order and the validation draw", "int",
           lambda name, value: whole_number(name, value, minimum=0), group="training"),
    _shared("device", "cuda, cuda:N, mps or cpu; auto picks the best; under torchrun each process takes its own "
            "GPU", group="training"),
    _shared("dtype", "auto trains in bf16 mixed precision on GPUs that have it (fp16 on others) and fp32 on "
            "CPU", group="training"),
    Option("workers", 0, "data-loading worker processes", "int", lambda name, value: whole_number(name, value, 0),
           group="run"),
    Option("overwrite", False, "replace the previous training run's checkpoint in the output directory, once the "
           "new one is complete (other files there stay)", "bool", boolean, group="run"),
    Option("resume", False, "go on from the output directory's last resumable checkpoint", "bool", boolean,
           group="run"),
)  # fmt: skip

TRAIN: dict[str, Option] = {option.name: option for option in TRAIN_OPTIONS}
# The options read only with LoRA on, as declared (their ``requires``).
LORA_ONLY: tuple[str, ...] = tuple(option.name for option in TRAIN_OPTIONS if option.requires is _with_lora)

# The type of a checked value, by the kind of text it is read from.
_KIND_TYPES: dict[Kind, Any] = {
    "task": str | list[str], "text": str, "int": int, "float": float, "bool": bool, "choice": str,
    "texts": list[str], "field": str, "shard": tuple[int, int], "any": Any,
}  # fmt: skip
# Where checking changes a value's type: label_field is read from one field or task=field pairs into one
# field per task (task_fields).
_READ_TYPES: dict[str, Any] = {"label_field": dict[str, str]}


def _value_type(option: Option) -> Any:
    kind = _READ_TYPES.get(option.name, _KIND_TYPES[option.kind])
    return kind | None if option.default is None and kind is not Any else kind


def _as_dict(self: Any) -> dict[str, Any]:
    """Every option by name, the values as they are (a validation view stays a view)."""
    return {name: getattr(self, name) for name in TRAIN}


TrainOptions = dataclasses.make_dataclass(
    "TrainOptions",
    [(o.name, _value_type(o), dataclasses.field(default=o.default)) for o in TRAIN_OPTIONS],
    namespace={"as_dict": _as_dict},
    frozen=True,
)
TrainOptions.__module__ = __name__  # make_dataclass would name its own module (pickling looks it up)
TrainOptions.__doc__ = (
    "A training run's checked options, one attribute each (``options.batch_size``), made from "
    ":data:`TRAIN_OPTIONS`; frozen. Build it with :func:`read_train_options`, which checks them; "
    "``dataclasses.replace`` gives a changed copy."
)


def read_train_options(values: Mapping[str, Any]) -> TrainOptions:
    """Every training option, checked (defaults for those not given), as a :class:`TrainOptions`; or
    ``ValueError`` naming the problem."""
    unknown = sorted(set(values) - set(TRAIN))
    if unknown:
        raise ValueError(f"Unknown training option(s) {', '.join(unknown)}. Options are: {', '.join(TRAIN)}.")
    read = {name: option.read(values.get(name)) for name, option in TRAIN.items()}
    if read["output_dir"] is None:
        raise OptionError("{output_dir:name} is required: the directory the fine-tuned checkpoint is written to.",
                          TRAIN["output_dir"])  # fmt: skip
    if read["lr_schedule"] not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {', '.join(SCHEDULES)}, got {read['lr_schedule']!r}.")
    splits = [name for name in ("val_view", "val_tag", "val_fraction") if read[name] is not None]
    if len(splits) > 1:
        raise OptionError(
            f"Give the validation split one way, not {' and '.join(map(named, splits))}.",
            *(TRAIN[name] for name in splits),
        )
    if not read["lora"]:
        given = [name for name in LORA_ONLY if values.get(name) is not None and read[name] != TRAIN[name].default]
        if given:
            raise OptionError(
                f"{', '.join(map(named, given))} is read only with {{lora}}.",
                TRAIN["lora"],
                *(TRAIN[name] for name in given),
            )
    if read["overwrite"] and read["resume"]:
        raise OptionError(
            "{resume:name} (go on) and {overwrite:name} (start again) exclude each other: choose one.",
            TRAIN["resume"],
            TRAIN["overwrite"],
        )
    tasks = get_tasks(read["task"])
    read["label_field"] = task_fields(tasks, read["label_field"])
    _check_text_inputs(tasks, read)
    return TrainOptions(**read)


def task_fields(tasks: tuple[Task, ...], label_field: str | Mapping[str, str]) -> dict[str, str]:
    """``{task name: field}``: one field for a single task, or one per task from a mapping."""
    if isinstance(label_field, str):
        if len(tasks) > 1:
            raise ValueError(
                f"{len(tasks)} tasks learn from different labels: give label_field as task=field pairs "
                f"({', '.join(task.name + '=<field>' for task in tasks)})."
            )
        return {tasks[0].name: label_field}
    by_name = {get_tasks(key)[0].name: field for key, field in label_field.items()}
    missing = [task.name for task in tasks if task.name not in by_name]
    extra = sorted(set(by_name) - {task.name for task in tasks})
    if missing or extra:
        raise ValueError(
            "label_field must name one field per task: "
            + "; ".join(filter(None, [missing and f"missing {', '.join(missing)}", extra and f"not trained: "
                                      f"{', '.join(extra)}"]))
        )  # fmt: skip
    return {task.name: by_name[task.name] for task in tasks}


def _check_text_inputs(tasks: tuple[Task, ...], read: dict[str, Any]) -> None:
    grounding = [task.name for task in tasks if grounds_a_caption(task)]
    if grounding and read["prompt_field"] is None:
        raise OptionError(
            f"Task(s) {', '.join(grounding)} learn to ground a caption: pass {{prompt_field:'<field>'|FIELD}}.",
            TRAIN["prompt_field"],
        )
    if read["prompt_field"] is not None and not grounding:
        raise OptionError("{prompt_field:name} is read only by tasks that ground a caption.", TRAIN["prompt_field"])
    if read["classes"] is not None and not any(task.takes_classes for task in tasks):
        raise OptionError("{classes:name} is read only by tasks that take classes.", TRAIN["classes"])


def options_doc() -> str:
    """``docs/OPTIONS.md``: the labelling options, then the fine-tuning ones."""
    return "\n".join(
        [
            "# Options\n",
            "Generated from `fiftyone_florence2/core/options.py` and `training/options.py`, where each option is "
            "declared once",
            "with its default, check and help: `python -m fiftyone_florence2.training.options > docs/OPTIONS.md`.",
            "`load_model(task, **options)` and `Florence2ModelConfig` take the model options, `label_samples` and "
            "the App",
            "the run options, and the `florence2 label` command line offers those with a flag. A value left out "
            "(or `None`)",
            "is the default.\n",
            options_table(),
            "\n## Fine-tuning\n",
            "`train(samples, **options)`, `florence2 train` and the App's fine-tuning operator take these (see the "
            "README's",
            "Fine-tune section).\n",
            options_table(TRAIN_OPTIONS),
            "\n## Calibration\n",
            "`calibrate(samples, pred_field, gt_field, **options)`, `florence2 calibrate` and the App's calibration "
            "operator take these (see docs/CALIBRATION.md).\n",
            options_table(CALIBRATE_OPTIONS),
        ]
    )


if __name__ == "__main__":  # python -m fiftyone_florence2.training.options > docs/OPTIONS.md
    print(options_doc())

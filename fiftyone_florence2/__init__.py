"""Florence-2 on FiftyOne datasets, with native labels.

Importing the package is cheap: torch, transformers and fiftyone load only
when a name that needs them is first used.
"""

from __future__ import annotations

import importlib

from .tasks import TASK_NAMES, TASKS, Task, get_task

__version__ = "0.1.0"

_LAZY = {
    "to_label": "labels",
    "to_answer": "labels",
    "to_training_pairs": "labels",
    "load_model": "model",
    "label_samples": "labeling",
    "train": "training",
    "TrainResult": "training",
    "Florence2Model": "model",
    "Florence2ModelConfig": "config",
    "DEFAULT_CHECKPOINT": "checkpoints",
    "NATIVE_CHECKPOINTS": "checkpoints",
    "SEEING_NAME": "seeing",
    "seeing_checkpoint": "seeing",
}

__all__ = ["TASKS", "TASK_NAMES", "Task", "get_task", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

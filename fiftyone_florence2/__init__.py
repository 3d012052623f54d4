"""Florence-2 on FiftyOne datasets, with native labels.

Importing the package is cheap: torch, transformers and fiftyone load only
when a name that needs them is first used.
"""

from __future__ import annotations

import importlib

from fiftyone_florence2.core.tasks import TASK_NAMES, TASKS, Task, get_task
from fiftyone_florence2.core.version import __version__
from fiftyone_florence2.quiet import hide_mongodb_version_notice

hide_mongodb_version_notice()


_LAZY = {
    "to_label": "labels.convert",
    "to_answer": "training.targets",
    "to_training_pairs": "training.targets",
    "load_model": "runs.model",
    "label_samples": "runs.labelling",
    "train": "training.trainer",
    "calibrate": "autolabel.calibrate",
    "load_calibration": "autolabel.calibrate",
    "Calibration": "autolabel.report",
    "TrainResult": "training.trainer",
    "Florence2Model": "runs.model",
    "Florence2ModelConfig": "runs.config",
    "DEFAULT_CHECKPOINT": "core.checkpoints",
    "NATIVE_CHECKPOINTS": "core.checkpoints",
    "Florence2Error": "core.errors",
    "SEEING_NAME": "core.seeing",
    "seeing_checkpoint": "core.seeing",
    "review_queue": "autolabel.queue",
    "ReviewQueue": "autolabel.queue",
    "load_review_queue": "autolabel.queue",
    "training_labels": "autolabel.loop",
}

__all__ = ["TASKS", "TASK_NAMES", "Task", "get_task", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

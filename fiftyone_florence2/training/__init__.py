"""Fine-tuning Florence-2 on a collection's own labels: options, data, targets, the output directory,
the trainer, validation, progress and the run record.

``train`` and ``TrainResult`` load lazily, so that reading the options (the CLI's flags) needs no torch.
"""

from __future__ import annotations

import importlib

__all__ = ["TrainResult", "train"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".trainer", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

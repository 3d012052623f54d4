"""The shipped ``florence2-seeing-tiny`` checkpoint: a 585k-parameter Florence-2 that learnt drawn shapes.

It finds coloured circles, squares and triangles (``fiftyone_florence2.scenes``)
with confidences, and nothing else: it is not Florence-2 and knows no real
photographs. It serves the offline demo, tests and benchmarks that need answers
that mean something, and is a start for fine-tuning experiments on a CPU.
"""

from __future__ import annotations

from pathlib import Path

SEEING_NAME = "florence2-seeing-tiny"
SEEING_DIR = Path(__file__).resolve().parents[1] / "seeing_tiny"


def seeing_checkpoint() -> Path:
    """The directory of the shipped ``florence2-seeing-tiny`` checkpoint, for ``load_model(..., model=...)``
    and ``train(..., model=...)``."""
    if not (SEEING_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"The {SEEING_NAME} checkpoint is missing from {SEEING_DIR}; reinstall the package.")
    return SEEING_DIR

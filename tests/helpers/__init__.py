"""What the tests share: the repository root, forced decoder answers and images to label.

Tests import from here (``from helpers import force``), never from ``conftest.py`` or from another test
file; ``conftest.py`` files only declare fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from support.images import write_image

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "force", "write_image"]


def force(tokenizer, answer: str | Callable[[str, str], str]):
    """``generate_kwargs`` that make the decoder emit ``answer`` (plus ``</s>``).

    ``answer`` may be a function of ``(task name, question)``, so that each
    row of a batch gets its own answer.
    """

    def kwargs(task, questions):
        targets = []
        for question in questions:
            text = answer(task.name, question) if callable(answer) else answer
            targets.append(tokenizer(text + "</s>", add_special_tokens=False).input_ids)

        def allowed(row, prefix):
            target = targets[row]
            n = prefix.shape[-1] - 1
            return [target[n]] if n < len(target) else [tokenizer.pad_token_id]

        return {"prefix_allowed_tokens_fn": allowed, "max_new_tokens": max(map(len, targets)) + 2}

    return kwargs

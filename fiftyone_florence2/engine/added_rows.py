"""The output rows a conversion added to a model (``<image>`` and the vocabulary padding), kept out of its
answers exactly: masked in the logits themselves, before any normalisation.

Suppressing a token in ``generate`` is not enough for beam search: transformers applies its logits processors
after ``log_softmax``, so a suppressed row's probability mass still lowers every beam's scores, by a different
amount for each beam, and the beams can come out ranked otherwise than the original model ranked them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


def added_rows(model: Any) -> list[int]:
    """The suppressed ids from ``<image>`` on: rows the original model lacked, which a conversion added (a
    token the original itself suppressed lies below ``<image>``, and stays a logits processor's business)."""
    image_id = getattr(model.config, "image_token_id", None)
    suppressed = getattr(model.generation_config, "suppress_tokens", None) or ()
    if image_id is None:
        return []
    return sorted({int(i) for i in suppressed if int(i) >= int(image_id)})


@contextlib.contextmanager
def rows_masked(model: Any, rows: Sequence[int]) -> Iterator[None]:
    """While the block runs, each forward pass of ``model`` gives ``rows`` the logit ``-inf``, whichever cache
    or search it runs under. The hook lives only as long as the block, so training's passes never see it."""
    if not rows:
        yield
        return
    index = list(rows)

    def mask(module: Any, inputs: Any, output: Any) -> None:
        logits = output.logits if hasattr(output, "logits") else output[0]
        logits[..., index] = float("-inf")

    handle = model.register_forward_hook(mask)
    try:
        yield
    finally:
        handle.remove()

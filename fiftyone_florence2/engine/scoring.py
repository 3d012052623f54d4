"""Each generated token's log-probability, as labels' confidences read it.

A coordinate token (``<loc_0>`` ... ``<loc_999>``) is scored by the probability that the coordinate lies
within ``LOC_WINDOW`` bins of the one generated, not by its exact bin's alone: a model spreads its mass over
neighbouring bins, so one bin's probability says how finely a box edge is placed, not whether the box is
right. On the shipped seeing model's boxes, exact bins gave confidences that ranked right boxes above
wrong ones at AUROC 0.53 and 0.66 (0.5 is chance) on two sets of 300 scenes; within 50 bins, 0.92 and 0.95
(docs/REFERENCE.md, "Confidence").
"""

from __future__ import annotations

from typing import Any

import torch

LOC_BINS = 1000
LOC_WINDOW = 50  # bins either side: 5% of the image's width or height


def loc_first_id(tokenizer: Any) -> int | None:
    """The id of ``<loc_0>`` when the 1,000 coordinate tokens have consecutive ids (as in every Florence-2
    tokenizer), else None (coordinates are then scored by their own bin)."""
    ids = tokenizer.convert_tokens_to_ids([f"<loc_{i}>" for i in range(LOC_BINS)])
    if any(i is None or i == tokenizer.unk_token_id for i in ids) or ids != list(range(ids[0], ids[0] + LOC_BINS)):
        return None
    return ids[0]


def target_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, loc_first: int | None, window: int = LOC_WINDOW
) -> torch.Tensor:
    """Log-probability of each target under ``logits`` (``[rows, steps, vocab]``); a coordinate target's is
    that of its bin or any bin within ``window`` of it."""
    total = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - total
    if loc_first is None or window <= 0:
        return picked
    is_loc = (targets >= loc_first) & (targets < loc_first + LOC_BINS)
    if not bool(is_loc.any()):
        return picked
    # The window's logits gathered and summed in log space: exact even where the window holds little mass.
    offsets = torch.arange(-window, window + 1, device=targets.device)
    bins = (targets - loc_first).clamp(0, LOC_BINS - 1).unsqueeze(-1) + offsets
    inside = (bins >= 0) & (bins < LOC_BINS)
    near = logits.gather(-1, bins.clamp(0, LOC_BINS - 1) + loc_first).masked_fill(~inside, float("-inf"))
    windowed = torch.logsumexp(near, dim=-1) - total
    return torch.where(is_loc, torch.maximum(windowed, picked).clamp(max=0.0), picked)

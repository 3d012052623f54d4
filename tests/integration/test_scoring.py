"""Confidences' token scores: a coordinate token counts its bin and the ``LOC_WINDOW`` bins either side; every
other token, its own probability. Checked against a direct sum, at the edges, and through a labelled run."""

from __future__ import annotations

import math

import fiftyone as fo
import numpy as np
import pytest
import torch
from helpers import force

import fiftyone_florence2 as f2
from fiftyone_florence2.engine.scoring import LOC_BINS, LOC_WINDOW, loc_first_id, target_logprobs

FIRST = 10  # <loc_0>'s id in the made-up vocabulary below: 10 text tokens, then the 1,000 bins, then 5 more
VOCAB = FIRST + LOC_BINS + 5


def direct(logits: torch.Tensor, target: int, window: int) -> float:
    """The expected score by plain summation over the window's probabilities."""
    probs = torch.softmax(logits.double(), -1)
    if not FIRST <= target < FIRST + LOC_BINS or window == 0:
        return math.log(float(probs[target]))
    lo, hi = max(FIRST, target - window), min(FIRST + LOC_BINS - 1, target + window)
    return math.log(float(probs[lo : hi + 1].sum()))


@pytest.mark.parametrize(
    ("target", "window"),
    [
        (3, LOC_WINDOW),  # a text token: its own probability
        (FIRST + 500, LOC_WINDOW),  # a coordinate mid-range
        (FIRST, LOC_WINDOW),  # <loc_0>: the window stops at the first bin
        (FIRST + LOC_BINS - 1, LOC_WINDOW),  # <loc_999>: and at the last
        (FIRST + 20, LOC_WINDOW),  # partly cut off below
        (FIRST + 500, 0),  # no window: the bin alone
        (FIRST + 500, 1),
        (FIRST + LOC_BINS + 2, LOC_WINDOW),  # a token after the bins
    ],
)
def test_each_target_scores_as_a_direct_sum_says(target, window):
    generator = torch.Generator().manual_seed(target + window)
    logits = torch.randn(2, 3, VOCAB, generator=generator) * 4
    targets = torch.full((2, 3), target)
    scores = target_logprobs(logits, targets, FIRST, window)
    expected = [[direct(logits[r, t], target, window) for t in range(3)] for r in range(2)]
    assert scores.numpy() == pytest.approx(np.array(expected), abs=1e-4)


@pytest.mark.parametrize(
    ("case", "loc_first"),
    [("no coordinate tokens in the vocabulary", None), ("window 0", FIRST)],
)
def test_without_a_window_every_token_scores_its_own_probability(case, loc_first):
    logits = torch.randn(1, 4, VOCAB, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([[FIRST + 5, 2, FIRST + 900, 7]])
    window = 0 if case == "window 0" else LOC_WINDOW
    expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert target_logprobs(logits, targets, loc_first, window) == pytest.approx(expected, abs=1e-5)


def test_a_coordinate_never_scores_below_its_own_bin_nor_above_certainty():
    logits = torch.full((1, 3, VOCAB), -80.0)
    logits[0, 0, FIRST + 10] = 80.0  # all mass on one bin, far from the targets' own
    logits[0, 1, FIRST + 400] = 80.0  # all on the target's own bin
    logits[0, 2, 3] = 80.0  # all on a text token
    targets = torch.tensor([[FIRST + 900, FIRST + 400, FIRST + 400]])
    scores = target_logprobs(logits, targets, FIRST)
    exact = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    assert torch.isfinite(scores).all() and (scores >= exact - 1e-6).all() and (scores <= 0).all()
    assert float(scores[0, 1]) == pytest.approx(0.0, abs=1e-6)


class _Tokenizer:
    unk_token_id = 3

    def __init__(self, ids):
        self.ids = ids

    def convert_tokens_to_ids(self, tokens):
        return [self.ids(i) for i in range(len(tokens))]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        (lambda i: 100 + i, 100),
        (lambda i: 3, None),  # no coordinate tokens: all unknown
        (lambda i: 100 + i + (i > 500), None),  # not consecutive
        (lambda i: None, None),
    ],
)
def test_loc_first_id(ids, expected):
    assert loc_first_id(_Tokenizer(ids)) == expected


def test_the_real_tokenizers_coordinates_are_consecutive(tokenizer):
    first = loc_first_id(tokenizer)
    assert tokenizer.convert_ids_to_tokens([first, first + 999]) == ["<loc_0>", "<loc_999>"]


def test_a_labelled_boxs_confidence_counts_the_window_and_the_record_says_so(tiny_checkpoint, tokenizer, tmp_path):
    from helpers import write_image

    dataset = fo.Dataset()
    dataset.add_sample(fo.Sample(filepath=write_image(tmp_path / "a.jpg", size=(64, 48), seed=0)))
    answer = "car<loc_100><loc_200><loc_500><loc_900>"
    model = f2.load_model("detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, answer))
    f2.label_samples(dataset, model, "boxes", progress=False)
    exact = f2.load_model("detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, answer))
    exact.runner._loc_first = None  # its bins alone
    f2.label_samples(dataset, exact, "exact", progress=False)
    windowed, alone = dataset.first().boxes.detections[0].confidence, dataset.first().exact.detections[0].confidence
    assert 0 < alone < windowed <= 1  # a random model's mass is spread: the window holds more of it
    records = [dataset.get_run_info(key).config for key in dataset.list_runs()]
    assert sorted(str(r.generation["coordinate_window"]) for r in records) == sorted([str(LOC_WINDOW), "None"])

"""A converted checkpoint answers exactly as its original, beams included: the rows a conversion adds
(``<image>``, vocabulary padding) never take part in the runner's search, whatever their weights, and as little
as they can through plain transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.original_layout import Layout, write_original
from safetensors.torch import load_file, save_file

from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.engine.convert import convert_checkpoint
from fiftyone_florence2.engine.runner import Florence2Runner

IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
# Both sides generate the same way: 3 beams, and enough tokens that finished beams compete.
SETTINGS = {"num_beams": 3, "max_new_tokens": 10, "min_new_tokens": 6}
MATRICES = ("model.language_model.shared.weight", "lm_head.weight")


def _question(task) -> str:
    given = {"text": {"text": "a red car"}, "region": {"rel_xywh": [0.1, 0.2, 0.3, 0.4]}}.get(task.input, {})
    return build_question(task, **given)


def _make_added_rows_adversarial(checkpoint: Path, rows: int) -> None:
    """Gives every row past the original's ``rows`` large random weights: unmasked, those rows carry most of
    the probability mass, a different share for each beam."""
    tensors = load_file(checkpoint / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    for key in MATRICES:
        if key in tensors:
            added = tensors[key][rows:]
            added.copy_(torch.randn(added.shape, generator=generator) * 3)
    save_file(tensors, str(checkpoint / "model.safetensors"), {"format": "pt"})


@pytest.fixture(scope="module", params=["tied", "untied lm_head"])
def adversarial(request, tmp_path_factory):
    """``(runner on the converted checkpoint, the original model, its processor)``; the original is the tiny
    native model before it was written in the original layout, its logits cut to the original's rows."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("exact")
    layout = Layout(untied_head=request.param != "tied", text_settings={"no_repeat_ngram_size": 3})
    reference, processor = write_original(tmp / "original", layout)
    rows = reference.config.text_config.vocab_size - 1  # the original lacks <image>
    reference.lm_head.register_forward_hook(lambda module, inputs, output: output[..., :rows])
    converted = convert_checkpoint(tmp / "original", tmp / "native")
    _make_added_rows_adversarial(converted, rows)
    return Florence2Runner(str(converted), device="cpu", dtype="float32"), reference, processor


@pytest.mark.parametrize(
    "cache",
    [{}, {"use_cache": True}, {"use_cache": False}],
    ids=["the runner's cache", "transformers' cache", "no cache"],
)
def test_beams_equal_the_originals_for_every_task(adversarial, cache):
    runner, reference, processor = adversarial
    emitted: list[list[int]] = []

    def recording(*args, real=runner.model.generate, **kwargs):
        out = real(*args, **kwargs)
        emitted.append([t for t in out.sequences[0].tolist() if t != runner.tokenizer.pad_token_id])
        return out

    runner.model.generate = recording
    pixel_values = processor(text=["<OD>"], images=[IMAGE], return_tensors="pt")["pixel_values"]
    features = runner.image_features(pixel_values)
    different = []
    try:
        for task in TASKS:
            question = _question(task)
            [answer] = runner.generate(task, features, [question], [0], max_new_tokens=10, generate_kwargs={
                "min_new_tokens": SETTINGS["min_new_tokens"], **cache})  # fmt: skip
            inputs = processor(text=[question], images=[IMAGE], return_tensors="pt")
            original = reference.generate(
                **inputs, **SETTINGS, do_sample=False, early_stopping=True,
                no_repeat_ngram_size=runner.no_repeat_ngram_size(task),
            )  # fmt: skip
            want = [t for t in original[0].tolist() if t != runner.tokenizer.pad_token_id]
            if emitted[-1] != want:
                different.append((task.name, emitted[-1], want))
            assert min(answer.token_logprobs) > -20  # scored without the added rows' mass too
    finally:
        del runner.model.generate
    assert different == []


def test_training_passes_see_the_added_rows_unmasked(adversarial):
    runner, _, processor = adversarial
    features = runner.image_features(processor(text=["<OD>"], images=[IMAGE], return_tensors="pt")["pixel_values"])
    runner.generate(TASKS[0], features, [_question(TASKS[0])], [0], max_new_tokens=4)
    inputs = processor(text=["<OD>"], images=[IMAGE], return_tensors="pt")
    logits = runner.model(**inputs, labels=torch.tensor([[0, 5, 2]])).logits
    assert not runner.model._forward_hooks
    assert torch.isfinite(logits[..., runner.model.generation_config.suppress_tokens]).all()


@pytest.mark.parametrize(
    "layout",
    [Layout(), Layout(untied_head=True), Layout(tied_as="language_model.lm_head.weight", spare_rows=3)],
    ids=["tied", "untied lm_head", "lm_head copy only, spare rows"],
)
def test_added_rows_hold_at_most_their_share_of_the_mass_through_transformers(tmp_path, layout):
    """Each added row is the mean of the original rows, so its logit is their logits' mean: by Jensen's
    inequality the ``n`` added rows hold at most ``n / (V + n)`` of the probability, for any hidden state."""
    write_original(tmp_path / "original", layout)
    converted = convert_checkpoint(tmp_path / "original", tmp_path / "native")
    tensors = load_file(converted / "model.safetensors")
    rows = json.loads((converted / "config.json").read_text())["image_token_id"]
    for key in (key for key in MATRICES if key in tensors):
        matrix = tensors[key]
        assert torch.allclose(matrix[rows:], matrix[:rows].mean(0).expand_as(matrix[rows:])), key
    head = tensors.get("lm_head.weight", tensors[MATRICES[0]])
    added = head.shape[0] - rows
    generator = torch.Generator().manual_seed(0)
    # Hidden states of every scale, and those against the rows' mean (where all logits are most negative).
    hidden = torch.cat([torch.randn(64, head.shape[1], generator=generator) * s for s in (0.1, 1, 10, 100)])
    hidden = torch.cat([hidden, -torch.logspace(-1, 3, 8)[:, None] * head[:rows].mean(0)])
    share = torch.softmax(hidden @ head.T, dim=-1)[:, rows:].sum(-1)
    assert float(share.max()) <= added / head.shape[0] + 1e-6

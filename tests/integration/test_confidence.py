"""Confidences follow the model's own probabilities of the answers it was forced to give.

Each candidate answer's probability is computed independently, by one plain
transformers forward pass over image, prompt and answer. The pipeline is then
forced to give the most and the least likely candidate, and its confidences
must agree with those probabilities and keep their order.
"""

from __future__ import annotations

import math

import fiftyone as fo
import numpy as np
import pytest
import torch
from helpers import force
from PIL import Image

import fiftyone_florence2 as f2
from fiftyone_florence2.engine.scoring import LOC_WINDOW

L = "<loc_{}>".format


def locs(*bins: int) -> str:
    return "".join(L(b) for b in bins)


# For each task: (load_model options, processor prompt, candidate answers). Each
# candidate makes exactly one label, read from all of its tokens but the final </s>.
CASES = {
    "detection": (
        {},
        "<OD>",
        [
            "car" + locs(100, 200, 500, 900),
            "wheel" + locs(10, 10, 50, 50),
            "person" + locs(300, 50, 700, 990),
            "traffic light" + locs(600, 600, 650, 900),
            "dog" + locs(0, 500, 250, 999),
        ],
    ),
    "segmentation": (
        {"prompt": "the red car"},
        "<REFERRING_EXPRESSION_SEGMENTATION>the red car",
        [
            locs(100, 100, 300, 100, 300, 300, 100, 300),
            locs(500, 20, 900, 40, 880, 600, 520, 580),
            locs(10, 900, 200, 700, 400, 990),
            locs(250, 250, 750, 250, 750, 750, 250, 750),
        ],
    ),
    "caption": (
        {},
        "<CAPTION>",
        ["A red car.", "Dogs and cats play in the park.", "A person holding a phone.", "STOP"],
    ),
}


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> str:
    # PNG, so that every decoder reads exactly the same pixels.
    path = tmp_path_factory.mktemp("confidence") / "scene.png"
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def peaked_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny model with its output layer scaled up.

    Random weights spread probability almost evenly over the vocabulary, so
    that different answers are nearly equally likely; scaled logits make them
    differ by orders of magnitude.
    """
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    path = tmp_path_factory.mktemp("peaked-florence2")
    model = Florence2ForConditionalGeneration.from_pretrained(tiny_checkpoint)
    with torch.no_grad():
        model.lm_head.weight.mul_(16.0)
    model.save_pretrained(path)
    Florence2Processor.from_pretrained(tiny_checkpoint).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(peaked_checkpoint):
    """transformers' Florence-2, used as is, to compute answer probabilities independently."""
    from transformers import Florence2ForConditionalGeneration, Florence2Processor

    processor = Florence2Processor.from_pretrained(peaked_checkpoint)
    model = Florence2ForConditionalGeneration.from_pretrained(peaked_checkpoint).eval()
    return processor, model


def answer_probability(reference, image_path: str, prompt: str, answer: str) -> float:
    """exp(mean log-probability) of the answer's tokens, teacher-forced in one forward pass; a coordinate
    token's probability is that of its bin and the ``LOC_WINDOW`` bins either side, summed here directly."""
    processor, model = reference
    with Image.open(image_path) as file:
        inputs = processor(text=prompt, images=file.convert("RGB"), return_tensors="pt")
    target = processor.tokenizer(answer, add_special_tokens=False).input_ids
    start = model.config.text_config.decoder_start_token_id
    with torch.no_grad():
        logits = model(**inputs, decoder_input_ids=torch.tensor([[start, *target]])).logits[0, :-1]
    probs = torch.softmax(logits.double(), dim=-1)
    first = processor.tokenizer.convert_tokens_to_ids("<loc_0>")
    picked = []
    for step, token in enumerate(target):
        if first <= token < first + 1000:
            low, high = max(first, token - LOC_WINDOW), min(first + 999, token + LOC_WINDOW)
            picked.append(float(probs[step, low : high + 1].sum()))
        else:
            picked.append(float(probs[step, token]))
    return math.exp(sum(map(math.log, picked)) / len(picked))


def pipeline_confidence(checkpoint, tokenizer, image_path: str, task: str, options: dict, answer: str) -> float:
    """The confidence our pipeline gives its one label when forced to answer ``answer``."""
    dataset = fo.Dataset()
    try:
        dataset.add_sample(fo.Sample(filepath=image_path))
        model = f2.load_model(task, model=str(checkpoint), generate_kwargs=force(tokenizer, answer), **options)
        dataset.apply_model(model, label_field="out", batch_size=1)
        label = dataset.first()["out"]
    finally:
        dataset.delete()
    if isinstance(label, fo.Classification):
        return label.confidence
    items = label.detections if isinstance(label, fo.Detections) else label.polylines
    assert len(items) == 1, f"expected one label from {answer!r}, got {len(items)}"
    return items[0].confidence


@pytest.mark.parametrize("task", sorted(CASES))
def test_a_less_likely_forced_answer_gets_a_lower_confidence(peaked_checkpoint, tokenizer, reference, image_path, task):
    options, prompt, candidates = CASES[task]
    probabilities = {a: answer_probability(reference, image_path, prompt, a) for a in candidates}
    likely = max(candidates, key=probabilities.get)
    unlikely = min(candidates, key=probabilities.get)
    # A real check needs a real gap between the two answers.
    assert probabilities[likely] > 2 * probabilities[unlikely], probabilities

    ours = {
        a: pipeline_confidence(peaked_checkpoint, tokenizer, image_path, task, options, a) for a in (likely, unlikely)
    }

    assert all(0 < c <= 1 for c in ours.values())
    assert ours[unlikely] < ours[likely]
    for answer, confidence in ours.items():
        assert confidence == pytest.approx(probabilities[answer], rel=1e-3)


def test_confidences_lie_in_the_unit_interval(tiny_checkpoint, tokenizer, image_path):
    answer = "car" + locs(100, 200, 500, 900) + "wheel" + locs(0, 0, 999, 999) + "dog" + locs(5, 5, 6, 6)
    dataset = fo.Dataset()
    try:
        dataset.add_sample(fo.Sample(filepath=image_path))
        model = f2.load_model("detection", model=str(tiny_checkpoint), generate_kwargs=force(tokenizer, answer))
        dataset.apply_model(model, label_field="out")
        detections = dataset.first()["out"].detections
    finally:
        dataset.delete()
    assert len(detections) == 3
    assert all(0 < d.confidence <= 1 for d in detections)

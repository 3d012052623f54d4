"""The runner's speed options: the shared cross-attention cache changes speed, not answers or
scores; SDPA attention; fp32 by default on a CPU, bf16 only when asked for."""

from __future__ import annotations

import pytest
import torch

from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.engine.runner import Florence2Runner

FIXED = {"min_new_tokens": 12, "max_new_tokens": 12}


@pytest.fixture(scope="module")
def runner(tiny_checkpoint):
    return Florence2Runner(str(tiny_checkpoint), device="cpu")


@pytest.fixture(scope="module")
def pixels(runner):
    torch.manual_seed(3)
    return torch.rand(3, 3, *runner.image_size[::-1]) * 4 - 2


def test_florence2_layout_is_known(runner):
    # Otherwise the tests below would compare transformers' cache with itself.
    assert runner._cross_attention is not None and len(runner._cross_attention) >= 1


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("task_name", ["caption", "detection"])
def test_same_sequences_and_scores_as_transformers_own_cache(runner, pixels, num_beams, task_name):
    task = get_task(task_name)
    features = runner.image_features(pixels)
    questions = [build_question(task)] * len(pixels)
    rows = list(range(len(pixels)))
    fast = runner.generate(task, features, questions, rows, num_beams=num_beams, generate_kwargs=FIXED)
    # use_cache in generate_kwargs hands the cache back to transformers.
    stock = runner.generate(
        task, features, questions, rows, num_beams=num_beams, generate_kwargs={**FIXED, "use_cache": True}
    )
    assert [g.text for g in fast] == [g.text for g in stock]
    for a, b in zip(fast, stock):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-5)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_same_tokens_as_the_models_own_generate(runner, pixels, num_beams):
    task = get_task("caption")
    questions = [build_question(task)] * len(pixels)
    ours = runner.generate(
        task, runner.image_features(pixels), questions, list(range(len(pixels))), num_beams, generate_kwargs=FIXED
    )
    # transformers end to end: pixels in, with the image tokens in front of the prompt.
    texts = [runner._image_prefix + runner.tokenizer.bos_token + q + runner.tokenizer.eos_token for q in questions]
    prompt = runner.tokenizer(texts, add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        theirs = runner.model.generate(**prompt, pixel_values=pixels, num_beams=num_beams, do_sample=False, **FIXED)
    decoded = runner.tokenizer.batch_decode(theirs[:, 1:], skip_special_tokens=False)
    assert [g.text for g in ours] == [text.replace("<pad>", "") for text in decoded]


def test_sdpa_attention_in_the_vision_tower_and_the_language_model(runner):
    config = runner.model.config
    assert config.vision_config._attn_implementation == "sdpa"
    assert config.text_config._attn_implementation == "sdpa"


def test_cpu_runs_in_float32_unless_bfloat16_is_asked_for(tiny_checkpoint, runner, pixels):
    assert runner.dtype == torch.float32
    assert next(runner.model.parameters()).dtype == torch.float32

    bf16 = Florence2Runner(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    task = get_task("detection")
    generations = bf16.generate(
        task, bf16.image_features(pixels), [build_question(task)] * len(pixels), [0, 1, 2], generate_kwargs=FIXED
    )
    assert all(len(g.token_logprobs) == len(g.token_spans) > 0 for g in generations)
    assert all(-100.0 <= lp <= 0.0 for g in generations for lp in g.token_logprobs)

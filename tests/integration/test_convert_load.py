"""Loading an original-format checkpoint: converted once into the cache, said in one line, reused while the
source is unchanged, converted again when it changes; the run records name what was loaded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from helpers.original_layout import MARKER, Layout, write_original

from fiftyone_florence2.core.checkpoints import check_native_config, weights_fingerprint
from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.options import OPTIONS
from fiftyone_florence2.core.tasks import get_task
from fiftyone_florence2.engine import convert
from fiftyone_florence2.engine.runner import Florence2Runner
from fiftyone_florence2.runs.zoo import checkpoint_problem


@pytest.fixture
def original(tmp_path, monkeypatch):
    monkeypatch.setenv("FLORENCE2_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "Florence-2-tiny-ft"
    write_original(path, Layout(untied_head=True, extra_tokens=("<DocVQA>",)))
    return path


@pytest.fixture
def conversions(monkeypatch) -> list[str]:
    done: list[str] = []
    real = convert.convert_checkpoint

    def counting(src, dst, *args, **kwargs):
        done.append(str(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(convert, "convert_checkpoint", counting)
    return done


def test_loading_converts_once_and_reuses_until_the_source_changes(original, conversions, caplog, tmp_path):
    with caplog.at_level(logging.WARNING, logger="fiftyone_florence2.engine.convert"):
        first = Florence2Runner(str(original), device="cpu", dtype="float32")
    lines = [r.getMessage() for r in caplog.records if "florence2 convert" in r.getMessage()]
    assert len(lines) == 1 and str(first.checkpoint) in lines[0]
    assert first.checkpoint.startswith(str(tmp_path / "cache" / "converted" / "Florence-2-tiny-ft-"))
    assert first.converted_from["source"] == str(original) and first.weights_sha256
    assert not (original / MARKER).exists()
    second = Florence2Runner(str(original), device="cpu", dtype="float32")
    assert second.checkpoint == first.checkpoint and len(conversions) == 1
    (original / "preprocessor_config.json").write_text((original / "preprocessor_config.json").read_text() + " ")
    third = Florence2Runner(str(original), device="cpu", dtype="float32")
    assert len(conversions) == 2 and third.checkpoint != first.checkpoint


def test_runner_never_emits_or_scores_the_rows_the_original_lacked(original):
    runner = Florence2Runner(str(original), device="cpu", dtype="float32")
    suppressed = runner.model.generation_config.suppress_tokens
    assert suppressed and runner.tokenizer.image_token_id == suppressed[0]
    emitted = []

    def favour_suppressed(module, inputs, output):  # the rows the original lacked become the likeliest
        output[..., suppressed] = 1e4
        return output

    def recording(*args, real=runner.model.generate, **kwargs):
        out = real(*args, **kwargs)
        emitted.extend(out.sequences.flatten().tolist())
        return out

    runner.model.lm_head.register_forward_hook(favour_suppressed)
    runner.model.generate = recording
    features = runner.image_features(torch.zeros(1, 3, 64, 64))
    for beams in (1, 3):
        [answer] = runner.generate(get_task("caption"), features, ["What does the image describe?"], [0], beams)
        assert emitted and not set(emitted) & set(suppressed)
        # Scored over the original vocabulary: unmasked, every token would score about -1e4 (floored at -100).
        assert min(answer.token_logprobs) > -20


@pytest.mark.parametrize("route", ["option check", "zoo", "config check"])
def test_every_route_accepts_an_original_checkpoint(original, route):
    import json

    if route == "option check":
        assert OPTIONS["model"].check("model", str(original)) == str(original)
    elif route == "zoo":
        assert checkpoint_problem(original) is None
    else:
        check_native_config(json.loads((original / "config.json").read_text()), "x")


def test_remote_code_that_is_not_florence2_original_is_refused():
    with pytest.raises(CheckpointError, match="auto_map"):
        check_native_config({"model_type": "florence2", "auto_map": {}, "text_config": {"model_type": "bart"}}, "x")


def test_bin_only_directory_is_refused_where_a_checkpoint_is_named(original):
    (original / "model.safetensors").rename(original / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"torch\.load is not a safe loader"):
        OPTIONS["model"].check("model", str(original))


def test_two_processes_converting_at_once_both_load_the_one_good_copy(original, tmp_path):
    from helpers.convert_race import load_together

    answers = load_together(str(original), tmp_path)
    assert [kind for kind, _, _ in answers] == ["loaded", "loaded"], answers
    [(_, first, fingerprint), (_, second, again)] = answers
    assert first == second and fingerprint == again
    cache = tmp_path / "cache" / "converted"
    assert [p.name for p in cache.iterdir()] == [Path(first).name]  # no staging folder left beside it
    copy = Path(first)
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".")]  # nor inside it
    assert weights_fingerprint(str(copy)) == fingerprint
    assert Florence2Runner(str(original), device="cpu", dtype="float32").checkpoint == first

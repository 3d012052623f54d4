"""Original-format checkpoints on every route: a Hub id (only JSON, tokenizer text and safetensors fetched),
``florence2 label --model`` on a real dataset, a free prompt on the command line, and an untied fine-tune that
loads every weight as its source holds it."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from pathlib import Path

import fiftyone as fo
import pytest
import torch
from helpers.fake_hub import serve_hub
from helpers.original_layout import MARKER, Layout, write_original

import fiftyone_florence2 as f2
from fiftyone_florence2.cli import main as cli_main
from fiftyone_florence2.core.checkpoints import weights_fingerprint
from fiftyone_florence2.engine.runner import Florence2Runner

REPO = "someone/Florence-2-tiny-ft"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FLORENCE2_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "converted"


@pytest.fixture
def hub(tmp_path, cache, monkeypatch):
    """A Hub holding an original-format checkpoint with its code files and a pickle beside its safetensors;
    the files asked for so far."""
    import huggingface_hub.constants

    repo = tmp_path / "repo"
    write_original(repo, Layout())
    (repo / "pytorch_model.bin").write_bytes(b"a pickle, never to be fetched")
    assert (repo / "modeling_florence2.py").is_file()
    with serve_hub({REPO: repo}) as (url, asked):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read when it was imported
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield asked


def _convert_on_the_cli(tmp_path: Path) -> Path:
    assert cli_main(["convert", REPO, str(tmp_path / "native")]) == 0
    return tmp_path / "native"


def _load_model(tmp_path: Path) -> Path:
    model = f2.load_model(model=REPO, task="caption", num_beams=1, max_new_tokens=2, device="cpu")
    return Path(model.runner.checkpoint)


@pytest.mark.parametrize("route", [_convert_on_the_cli, _load_model], ids=["florence2 convert", "load_model"])
def test_a_hub_id_fetches_no_code_and_no_pickle(hub, tmp_path, route):
    converted = route(tmp_path)
    fetched = {name.removeprefix(f"{REPO}/") for name in hub}
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert [name for name in fetched if not name.endswith((".json", ".safetensors", ".txt"))] == []
    assert not list((tmp_path / "hf").rglob("*.py")) and not list((tmp_path / "hf").rglob("*.bin"))
    assert {"vocab.json", "merges.txt", "preprocessor_config.json"} <= fetched
    assert Florence2Runner(str(converted), device="cpu", dtype="float32").model.config.image_token_id


def _last_run(name: str):
    dataset = fo.load_dataset(name)
    return dataset, dataset.get_run_info(dataset.list_runs()[-1]).config


def test_florence2_label_with_an_original_checkpoint(tmp_path, image_dir, cache, capsys, caplog):
    original = tmp_path / "Florence-2-tiny-ft"
    # min_length: the random weights answer something rather than nothing, so that samples get labels.
    write_original(original, Layout(untied_head=True, text_settings={"min_length": 6}))
    name = f"convert-label-{uuid.uuid4().hex[:8]}"
    args = ["label", "--images", str(image_dir), "--dataset-name", name, "--task", "detection", "--model",
            str(original), "--label-field", "det", "--num-beams", "1", "--max-new-tokens", "8"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="fiftyone_florence2.engine.convert"):
        code = cli_main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    [copy] = list(cache.iterdir())  # converted once, into the cache
    said = [r.getMessage() for r in caplog.records if "florence2 convert" in r.getMessage()]
    assert len(said) == 1 and str(copy) in said[0]
    assert f"Labelled {len(list(image_dir.iterdir()))} of" in out and not (original / MARKER).exists()
    dataset, record = _last_run(name)
    assert record.weights_sha256 == weights_fingerprint(str(copy))
    assert record.converted_from["source"] == str(original)
    assert record.converted_from["source_sha256"] == weights_fingerprint(str(original))
    assert record.generation["image_backend"] == record.converted_from["image_backend"] == "pil"
    assert dataset.count("det") == len(dataset)


def test_florence2_label_with_a_free_prompt(tmp_path, image_dir, tiny_checkpoint, capsys, monkeypatch):
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tiny_checkpoint, checkpoint)
    generation = json.loads((checkpoint / "generation_config.json").read_text())
    (checkpoint / "generation_config.json").write_text(json.dumps({**generation, "min_new_tokens": 4}))
    sent: list[str] = []

    def recording(self, task, features, questions, *args, real=Florence2Runner.generate, **kwargs):
        sent.extend(questions)
        return real(self, task, features, questions, *args, **kwargs)

    monkeypatch.setattr(Florence2Runner, "generate", recording)
    name = f"free-prompt-{uuid.uuid4().hex[:8]}"
    args = ["label", "--images", str(image_dir), "--dataset-name", name, "--task", "free_prompt", "--prompt",
            "<CUSTOM>hello", "--model", str(checkpoint), "--num-beams", "1", "--max-new-tokens", "6"]  # fmt: skip
    code = cli_main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    images = len(list(image_dir.iterdir()))
    assert sent == ["<CUSTOM>hello"] * images  # sent as it is
    assert f"Labelled {images} of {images} sample(s)" in out
    dataset, record = _last_run(name)
    assert record.prompt == "<CUSTOM>hello" and record.tasks == ["free_prompt"]
    assert dataset.count("florence2_free_prompt") == images


@pytest.mark.parametrize(
    "layout",
    [
        Layout(untied_head=True, extra_tokens=("<DocVQA>",)),
        Layout(untied_head=True, tied_as=None, seed=3),
        Layout(untied_head=True, tied_as="language_model.model.encoder.embed_tokens.weight", dtype="bfloat16"),
    ],
    ids=["shared stored", "every copy stored", "encoder copy stored, bfloat16"],
)
def test_an_untied_fine_tune_loads_every_weight_as_its_source_holds_it(tmp_path, cache, layout):
    reference, _ = write_original(tmp_path / "original", layout)
    rows = reference.config.text_config.vocab_size - 1  # the original's rows: the reference adds <image>
    runner = Florence2Runner(str(tmp_path / "original"), device="cpu", dtype=layout.dtype)
    loaded, source = runner.model.state_dict(), reference.state_dict()
    assert loaded.keys() == source.keys()
    vocabulary = {k for k, v in loaded.items() if v.shape[0] == runner.model.config.text_config.vocab_size}
    assert vocabulary == {
        "model.language_model.shared.weight",
        "model.language_model.encoder.embed_tokens.weight",
        "model.language_model.decoder.embed_tokens.weight",
        "lm_head.weight",
    }
    different = [k for k in loaded if k not in vocabulary and not torch.equal(loaded[k], source[k])]
    different += [k for k in vocabulary if not torch.equal(loaded[k][:rows], source[k][:rows])]
    assert different == []
    language = runner.model.model.language_model
    for embeddings in (language.encoder.embed_tokens.weight, language.decoder.embed_tokens.weight):
        assert torch.equal(embeddings, language.shared.weight)
    assert not torch.equal(runner.model.lm_head.weight[:rows], language.shared.weight[:rows])

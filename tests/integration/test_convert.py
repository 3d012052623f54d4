"""Converting original-format checkpoints: the same logits and answers as the model they stand for, for
every task, no checkpoint code ever run, and one-line refusals that write nothing."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.original_layout import MARKER, Layout, write_original
from transformers import Florence2ForConditionalGeneration, Florence2Processor

from fiftyone_florence2.cli import main as cli_main
from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.prompts import build_question
from fiftyone_florence2.core.swap import MANIFEST
from fiftyone_florence2.core.tasks import TASKS
from fiftyone_florence2.engine.convert import SOURCE_RECORD, convert_checkpoint

LAYOUTS = {
    "shared-only": Layout(),
    "lm_head-only, Florence tokens not on disk, tokenizer.json": Layout(
        tied_as="language_model.lm_head.weight", florence_on_disk=False, tokenizer="json"
    ),
    "fine-tune: extra tokens, untied lm_head": Layout(untied_head=True, extra_tokens=("<DocVQA>", "<GEN_TAGS>")),
    "decoder copy only, spare rows, bfloat16": Layout(
        tied_as="language_model.model.decoder.embed_tokens.weight", spare_rows=5, dtype="bfloat16", seed=1
    ),
    "every copy": Layout(tied_as=None, seed=2),
}
IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """One original-format checkpoint, written once; each test spoils its own copy."""
    path = tmp_path_factory.mktemp("written") / "original"
    write_original(path, Layout())
    return path


def _copy(written: Path, tmp_path: Path) -> Path:
    shutil.copytree(written, tmp_path / "original")
    return tmp_path / "original"


def _question(task) -> str:
    given = {"text": {"text": "a red car"}, "region": {"rel_xywh": [0.1, 0.2, 0.3, 0.4]}}.get(task.input, {})
    return build_question(task, **given)


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_converted_checkpoint_answers_as_the_original(tmp_path, name):
    layout = LAYOUTS[name]
    reference, processor = write_original(tmp_path / "original", layout)
    converted_path = convert_checkpoint(tmp_path / "original", tmp_path / "native")
    assert not (tmp_path / "original" / MARKER).exists()  # no file of the checkpoint was ever imported
    converted = Florence2ForConditionalGeneration.from_pretrained(converted_path).eval()
    converted_processor = Florence2Processor.from_pretrained(converted_path)
    rows = reference.config.text_config.vocab_size - 1  # the original's rows: the reference adds <image>
    assert converted.dtype == reference.dtype  # no cast
    assert converted.generation_config.no_repeat_ngram_size == 3 and converted.generation_config.num_beams == 3
    assert converted.generation_config.suppress_tokens == list(range(rows, converted.config.text_config.vocab_size))
    assert (converted.lm_head.weight is converted.model.language_model.shared.weight) != layout.untied_head
    for token in layout.extra_tokens:
        assert converted_processor.tokenizer.convert_tokens_to_ids(token) == processor.tokenizer.convert_tokens_to_ids(
            token
        )
    decoder = torch.tensor([[2, 0, 5, 400, 1200]])
    for task in TASKS:
        question = _question(task)
        ours = converted_processor(text=[question], images=[IMAGE], return_tensors="pt")
        theirs = processor(text=[question], images=[IMAGE], return_tensors="pt")
        assert torch.equal(ours["input_ids"], theirs["input_ids"]), task.name
        with torch.no_grad():
            expected = reference(**theirs.to(reference.dtype), decoder_input_ids=decoder).logits[..., :rows]
            got = converted(**ours.to(converted.dtype), decoder_input_ids=decoder).logits[..., :rows]
            assert torch.equal(expected, got), task.name
            for beams in (1, 3):
                settings = {"max_new_tokens": 12, "num_beams": beams, "do_sample": False, "no_repeat_ngram_size": 3}
                want = reference.generate(**theirs, suppress_tokens=[rows], **settings)
                assert converted.generate(**ours, **settings).tolist() == want.tolist(), (task.name, beams)


def test_conversion_records_its_source_and_owns_its_files(tmp_path, written):
    _copy(written, tmp_path)
    path = convert_checkpoint(tmp_path / "original", tmp_path / "native")
    record = json.loads((path / SOURCE_RECORD).read_text())
    assert record["source"] == str(tmp_path / "original") and len(record["source_sha256"]) == 64
    manifest = json.loads((path / MANIFEST).read_text())
    assert set(manifest["files"]) == set(os.listdir(path)) - {MANIFEST}
    assert not any(name.endswith((".py", ".bin")) for name in os.listdir(path))
    (path / "notes.txt").write_text("mine")
    again = convert_checkpoint(tmp_path / "original", tmp_path / "native", overwrite=True)
    assert (again / "notes.txt").read_text() == "mine"  # a file no conversion wrote stays
    assert Florence2ForConditionalGeneration.from_pretrained(again) is not None


def _bin_only(path: Path) -> None:
    (path / "model.safetensors").rename(path / "pytorch_model.bin")


def _no_config(path: Path) -> None:
    (path / "config.json").unlink()


def _no_weights(path: Path) -> None:
    (path / "model.safetensors").unlink()


def _corrupt(path: Path) -> None:
    (path / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")


def _truncated(path: Path) -> None:
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _config_edit(**vision):
    def edit(path: Path) -> None:
        config = json.loads((path / "config.json").read_text())
        config["vision_config"].update(vision)
        (path / "config.json").write_text(json.dumps(config))

    return edit


def _not_json(path: Path) -> None:
    (path / "config.json").write_text("{not json")


def _unknown_weight(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    tensors["mystery.weight"] = torch.zeros(2)
    save_file(tensors, path / "model.safetensors")


def _nonzero_bias(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    tensors["language_model.final_logits_bias"][0, 3] = 1.0
    save_file(tensors, path / "model.safetensors")


@pytest.mark.parametrize(
    "spoil, message",
    [
        (_bin_only, "torch.load is not a safe loader"),
        (_no_config, "has no config.json"),
        (_not_json, "config.json does not read"),
        (_no_weights, r"no weights \(model.safetensors\)"),
        (_corrupt, "corrupt or incomplete"),
        (_truncated, "corrupt or incomplete"),
        (_config_edit(image_feature_source=["last_frame"]), "image_feature_source"),
        (_config_edit(image_pos_embed={"type": "sine"}), "image_pos_embed.type"),
        (_config_edit(dim_embed=[8, 16, 32]), "per-stage lists"),
        (_unknown_weight, "mystery.weight"),
        (_nonzero_bias, "final_logits_bias is not all zeros"),
    ],
)
def test_bad_sources_are_refused_in_one_line_and_write_nothing(tmp_path, written, spoil, message):
    _copy(written, tmp_path)
    spoil(tmp_path / "original")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(CheckpointError, match=message) as error:
        convert_checkpoint(tmp_path / "original", tmp_path / "native")
    assert "\n" not in str(error.value)
    assert sorted(os.listdir(tmp_path)) == before  # nothing at DST, no staging left beside it


def _existing(tmp_path: Path) -> Path:
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "mine.txt").write_text("mine")
    return tmp_path / "native"


def _foreign_checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "config.json").write_text("{}")
    return tmp_path / "native"


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "afile").write_text("x")
    return tmp_path / "afile" / "native"


@pytest.mark.parametrize(
    "make, overwrite, python, cli",
    [
        (_existing, False, "pass overwrite=True", "pass --overwrite"),
        (_foreign_checkpoint, True, "holds config.json, which no conversion wrote", "holds config.json"),
        (_under_a_file, False, "lies under the file", "lies under the file"),
    ],
)
def test_destinations_that_may_not_be_written(tmp_path, written, capsys, make, overwrite, python, cli):
    _copy(written, tmp_path)
    dst = make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "original" not in p.parts}
    with pytest.raises(ValueError, match=python):
        convert_checkpoint(tmp_path / "original", dst, overwrite=overwrite)
    args = ["convert", str(tmp_path / "original"), str(dst), *(["--overwrite"] if overwrite else [])]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert cli in err and err.count("\n") == 1
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and "original" not in p.parts}
    assert after == before


def test_cli_converts(tmp_path, written, capsys):
    _copy(written, tmp_path)
    assert cli_main(["convert", str(tmp_path / "original"), str(tmp_path / "native")]) == 0
    assert "--model" in capsys.readouterr().out
    assert (tmp_path / "native" / "model.safetensors").is_file()

"""peft LoRA adapters merged into a native checkpoint: equal to peft's own merge, from a native or an
original-format base; bad adapters refused in one line, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from fiftyone_florence2.engine.adapters import merge_adapter
from fiftyone_florence2.engine.convert import image_backend_of

TARGETS = ["q_proj", "v_proj", "qkv", "fc1"]


def _peft_adapter(base: Path, out: Path, seed: int = 0, **settings):
    """A peft LoRA adapter on ``base`` with random (non-zero) weights, saved to ``out``; and peft's merge."""
    from peft import LoraConfig, get_peft_model
    from transformers import Florence2ForConditionalGeneration

    torch.manual_seed(seed)
    model = Florence2ForConditionalGeneration.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **settings)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.1)
    peft_model.save_pretrained(out)
    return peft_model.merge_and_unload().state_dict()


def _loaded(checkpoint: Path) -> dict:
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(checkpoint).state_dict()


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"use_rslora": True},
        {"rank_pattern": {"fc1": 2}, "alpha_pattern": {"v_proj": 3}},
        {"modules_to_save": ["lm_head"]},
        {"bias": "all"},
        {"fan_in_fan_out": True},  # peft turns it off on linear layers, and so does the merge
    ],
    ids=["plain", "rslora", "patterns", "modules_to_save", "bias", "fan_in_fan_out"],
)
def test_the_merge_equals_peft_merge_and_unload(tiny_checkpoint, tmp_path, settings):
    expected = _peft_adapter(tiny_checkpoint, tmp_path / "adapter", **settings)
    merged = _loaded(merge_adapter(tmp_path / "adapter", tmp_path / "merged"))
    assert image_backend_of(tmp_path / "merged") is None  # a native base's: transformers' default
    assert merged.keys() == expected.keys()
    different = [key for key in expected if not torch.equal(merged[key], expected[key])]
    assert different == []


def test_an_adapter_on_an_original_format_base_merges_as_on_the_native_one(tmp_path):
    from helpers.original_layout import Layout, original_name, write_original

    from fiftyone_florence2.engine.convert import convert_checkpoint

    base_native, base_original = tmp_path / "native", tmp_path / "original"
    write_original(base_original, Layout())
    convert_checkpoint(base_original, base_native)
    _peft_adapter(base_native, tmp_path / "adapter")
    native = _loaded(merge_adapter(tmp_path / "adapter", tmp_path / "from-native"))
    # the same adapter as trained against the original layout: original module names, original base
    (tmp_path / "adapter-original").mkdir()
    weights = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    renamed = {_original_key(key, original_name): value for key, value in weights.items()}
    save_file(renamed, tmp_path / "adapter-original" / "adapter_model.safetensors")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base_original)
    (tmp_path / "adapter-original" / "adapter_config.json").write_text(json.dumps(config))
    original = _loaded(merge_adapter(tmp_path / "adapter-original", tmp_path / "from-original"))
    assert [key for key in native if not torch.equal(native[key], original[key])] == []
    # Both see pixels as the original processor made them: through PIL.
    assert image_backend_of(tmp_path / "from-native") == image_backend_of(tmp_path / "from-original") == "pil"
    assert not (base_original / "IMPORTED").exists()


def _original_key(key: str, original_name) -> str:
    prefix, rest = "base_model.model.", key.removeprefix("base_model.model.")
    module, part = rest.rsplit(".lora_", 1)
    return prefix + original_name(module + ".weight").removesuffix(".weight") + ".lora_" + part


def _edit_config(adapter: Path, **changes) -> None:
    path = adapter / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _rename_weight(adapter: Path, old: str, new: str) -> None:
    path = adapter / "adapter_model.safetensors"
    weights = load_file(path)
    save_file({key.replace(old, new): value for key, value in weights.items()}, path)


BAD = [
    (lambda a: _edit_config(a, base_model_name_or_path="/no/such/base"), "is not a directory that exists; pass base="),
    (lambda a: (a / "adapter_model.safetensors").unlink(), "it has no adapter_model.safetensors"),
    (lambda a: (a / "adapter_model.safetensors").write_bytes(b"not safetensors"), "does not read as safetensors"),
    (lambda a: (a / "adapter_model.safetensors").rename(a / "adapter_model.bin"), "never loaded"),
    (lambda a: _edit_config(a, peft_type="IA3"), "peft_type is 'IA3'; only LORA"),
    (lambda a: _edit_config(a, use_dora=True), "use_dora is True; DoRA"),
    (lambda a: _edit_config(a, r=0), "r is 0"),
    (lambda a: _rename_weight(a, "q_proj", "no_such_proj"), "no_such_proj, which the base checkpoint has no weight"),
    (lambda a: _rename_weight(a, "lora_A", "lora_embedding_A"), "LoRA on embeddings is not merged"),
    (lambda a: (a / "adapter_config.json").write_text("{"), "adapter_config.json does not read"),
]


@pytest.mark.parametrize(("damage", "message"), BAD)
def test_bad_adapters_are_refused_in_one_line_and_nothing_is_written(tiny_checkpoint, tmp_path, damage, message):
    adapter = tmp_path / "adapter"
    _peft_adapter(tiny_checkpoint, adapter)
    damage(adapter)
    with pytest.raises(ValueError, match=message) as caught:
        merge_adapter(adapter, tmp_path / "merged")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "merged").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_an_existing_destination_is_refused_unless_overwrite_which_keeps_other_files(tiny_checkpoint, tmp_path):
    _peft_adapter(tiny_checkpoint, tmp_path / "adapter")
    first = merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    (first / "notes.txt").write_text("mine")
    before = (first / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="exists: pass overwrite"):
        merge_adapter(tmp_path / "adapter", tmp_path / "merged")
    assert merge_adapter(tmp_path / "adapter", tmp_path / "merged", overwrite=True) == first
    assert (first / "notes.txt").read_text() == "mine" and (first / "model.safetensors").read_bytes() == before


def test_an_adapter_directory_loads_as_a_checkpoint_merged_once_into_the_cache(
    tiny_checkpoint, tmp_path, monkeypatch, caplog, dataset, tokenizer
):
    from helpers import force

    from fiftyone_florence2 import load_model
    from fiftyone_florence2.runs.labelling import label_samples

    monkeypatch.setenv("FLORENCE2_CACHE", str(tmp_path / "cache"))
    expected = _peft_adapter(tiny_checkpoint, tmp_path / "adapter")
    with caplog.at_level("WARNING"):
        first = load_model("detection", model=str(tmp_path / "adapter"), generate_kwargs=force(tokenizer, "car"))
        again = load_model("detection", model=str(tmp_path / "adapter"))
    assert [r.message.startswith("Merged the LoRA adapter") for r in caplog.records].count(True) == 1
    assert first.runner.checkpoint == again.runner.checkpoint != str(tmp_path / "adapter")
    loaded = first.runner.model.state_dict()
    assert [key for key in expected if not torch.equal(loaded[key], expected[key])] == []
    assert first.runner.converted_from["source"] == str(tmp_path / "adapter")
    assert label_samples(dataset, first, "det").labelled == 5

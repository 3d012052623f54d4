# ruff: noqa: E501 (a table of full weight names)
"""The original-format mapping: config detection, renames, refusals and generation settings (pure data)."""

from __future__ import annotations

import copy

import pytest

from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.original import (
    FLORENCE_TOKENS,
    generation_settings,
    is_original_format,
    native_config,
    native_key,
    padded_rows,
    tokens_to_add,
)

ORIGINAL = {
    "model_type": "florence2",
    "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config"},
    "vision_config": {
        "model_type": "", "dim_embed": [8, 16, 32, 64], "num_heads": [1, 1, 2, 2], "num_groups": [1, 1, 2, 2],
        "depths": [1, 1, 1, 1], "window_size": 2, "projection_dim": 32,
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    },
    "text_config": {"model_type": "florence2_language", "d_model": 32, "vocab_size": 1425, "num_beams": 3,
                    "no_repeat_ngram_size": 3, "early_stopping": True, "forced_bos_token_id": 0},
}  # fmt: skip


def _with(path: str, value):
    config = copy.deepcopy(ORIGINAL)
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    if value is _DROP:
        node.pop(last)
    else:
        node[last] = value
    return config


_DROP = object()


@pytest.mark.parametrize(
    "config, expected",
    [
        (ORIGINAL, True),
        ({}, False),
        ({"model_type": "florence2"}, False),
        (
            {"model_type": "florence2", "text_config": {"model_type": "bart"}, "vision_config": {"embed_dim": [1]}},
            False,
        ),
        ({"model_type": "florence2", "text_config": {"model_type": "florence2_language"}}, True),
        ({"model_type": "florence2", "vision_config": {"dim_embed": [1]}}, True),
        ({"model_type": "bart", "text_config": {"model_type": "florence2_language"}}, False),
        ({"model_type": "florence2", "text_config": "florence2_language", "vision_config": None}, False),
    ],
)
def test_is_original_format(config, expected):
    assert is_original_format(config) is expected


@pytest.mark.parametrize(
    "original, native",
    [
        ("language_model.final_logits_bias", None),
        ("vision_tower.norms.weight", None),
        ("vision_tower.head.bias", None),
        ("language_model.lm_head.weight", "lm_head.weight"),
        ("language_model.model.shared.weight", "model.language_model.shared.weight"),
        ("language_model.model.decoder.layers.0.fc1.weight", "model.language_model.decoder.layers.0.fc1.weight"),
        ("image_projection", "model.multi_modal_projector.image_projection.weight"),
        ("image_proj_norm.bias", "model.multi_modal_projector.image_proj_norm.bias"),
        ("image_pos_embed.row_embeddings.weight", "model.multi_modal_projector.image_position_embed.row_embeddings.weight"),
        ("visual_temporal_embed.pos_idx_to_embed", "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"),
        ("vision_tower.convs.2.proj.weight", "model.vision_tower.convs.2.conv.weight"),
        ("vision_tower.convs.0.norm.bias", "model.vision_tower.convs.0.norm.bias"),
        ("vision_tower.blocks.1.0.spatial_block.conv1.fn.dw.weight", "model.vision_tower.blocks.1.0.spatial_block.conv1.weight"),
        ("vision_tower.blocks.1.0.spatial_block.window_attn.norm.weight", "model.vision_tower.blocks.1.0.spatial_block.norm1.weight"),
        ("vision_tower.blocks.1.0.spatial_block.window_attn.fn.qkv.bias", "model.vision_tower.blocks.1.0.spatial_block.window_attn.qkv.bias"),
        ("vision_tower.blocks.3.0.channel_block.channel_attn.fn.proj.weight", "model.vision_tower.blocks.3.0.channel_block.channel_attn.proj.weight"),
        ("vision_tower.blocks.3.0.channel_block.ffn.norm.weight", "model.vision_tower.blocks.3.0.channel_block.norm2.weight"),
        ("vision_tower.blocks.3.0.channel_block.ffn.fn.net.fc2.bias", "model.vision_tower.blocks.3.0.channel_block.ffn.fc2.bias"),
        ("vision_tower.blocks.0.0.channel_block.conv2.fn.dw.bias", "model.vision_tower.blocks.0.0.channel_block.conv2.bias"),
        ("", ""),
        ("something.else", "something.else"),
    ],
)  # fmt: skip
def test_native_key(original, native):
    assert native_key(original) == native


def test_native_config_maps_vision_and_text():
    config = native_config(ORIGINAL, "x", vocab_size=1472, image_token_id=1425)
    vision, text = config["vision_config"], config["text_config"]
    assert vision["embed_dim"] == [8, 16, 32, 64] and "dim_embed" not in vision
    assert (vision["max_position_embeddings"], vision["max_temporal_embeddings"]) == (50, 100)
    assert vision["patch_size"] == [7, 3, 3, 3]  # the original's default where the file says nothing
    assert text["model_type"] == "bart" and text["vocab_size"] == 1472 and text["d_model"] == 32
    assert text["encoder_layers"] == 12  # the original configuration class's default
    assert "num_beams" not in text  # generation settings go to generation_config.json
    assert config["image_token_id"] == 1425 and "auto_map" not in config


@pytest.mark.parametrize(
    "path, value, field",
    [
        ("vision_config.image_feature_source", ["last_frame"], "image_feature_source"),
        ("vision_config.image_feature_source", [], "image_feature_source"),
        ("vision_config.image_pos_embed", {"type": "sine"}, "image_pos_embed.type"),
        ("vision_config.image_pos_embed", _DROP, "image_pos_embed.type"),
        ("vision_config.visual_temporal_embedding", {"type": "LEARNED"}, "visual_temporal_embedding.type"),
        ("vision_config.depths", [1, 1, 1], "per-stage lists"),
        ("vision_config.num_heads", 2, "per-stage lists"),
        ("vision_config.projection_dim", 64, "projection_dim"),
        ("text_config", None, "text_config"),
        ("text_config.model_type", "t5", "text_config.model_type"),
        ("model_type", "llava", "not an original-format"),
    ],
)
def test_native_config_refuses_what_the_native_cannot_represent(path, value, field):
    with pytest.raises(CheckpointError, match="x") as error:
        native_config(_with(path, value), "x")
    assert field in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ({}, {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2,
              "forced_eos_token_id": 2}),
        ({"num_beams": 3, "no_repeat_ngram_size": 3, "early_stopping": True, "forced_bos_token_id": 0,
          "max_length": 20, "d_model": 768},
         {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2,
          "forced_eos_token_id": 2, "num_beams": 3, "no_repeat_ngram_size": 3, "early_stopping": True,
          "forced_bos_token_id": 0, "max_length": 20}),
        ({"eos_token_id": 5, "num_beams": None}, {"bos_token_id": 0, "eos_token_id": 5, "pad_token_id": 1,
                                                  "decoder_start_token_id": 2, "forced_eos_token_id": 2}),
    ],
)  # fmt: skip
def test_generation_settings(text, expected):
    assert generation_settings({"text_config": text}) == expected


@pytest.mark.parametrize("rows, padded", [(0, 0), (1, 64), (64, 64), (65, 128), (51290, 51328)])
def test_padded_rows(rows, padded):
    assert padded_rows(rows) == padded


@pytest.mark.parametrize(
    "vocab_size, on_disk, rows, florence, filler",
    [
        (10, 0, 10 + 1024, 1024, 0),  # the tokens the processor added at run time
        (10, 1024, 10 + 1024, 0, 0),  # already on disk
        (10, 4, 10 + 1024 + 3, 1020, 3),  # spare embedding rows: fillers, so <image> comes after them
    ],
)
def test_tokens_to_add(vocab_size, on_disk, rows, florence, filler):
    vocab = {f"t{i}": i for i in range(vocab_size)}
    vocab.update({token: vocab_size + i for i, token in enumerate(FLORENCE_TOKENS[:on_disk])})
    added, fillers = tokens_to_add(vocab, rows, "x")
    assert (len(added), len(fillers)) == (florence, filler)
    assert added == [t for t in FLORENCE_TOKENS if t not in vocab]  # their fixed order


@pytest.mark.parametrize("vocab, rows", [({"a": 0, "<image>": 1}, 2000), ({f"t{i}": i for i in range(10)}, 1000)])
def test_tokens_to_add_refuses(vocab, rows):
    with pytest.raises(CheckpointError, match="cannot be converted"):
        tokens_to_add(vocab, rows, "x")

"""Florence-2's original (remote-code) checkpoint format, mapped to transformers' native one: pure data.

The original format is what ``microsoft/Florence-2-*`` and the 2024 fine-tunes ship: a ``config.json`` with
``auto_map``, a DaViT ``vision_config`` (``dim_embed``, nested position embeddings), BART's keys under a
``florence2_language`` ``text_config``, and weights under the original module names. Nothing here reads a
file or runs a checkpoint's code; ``engine.convert`` does the reading and writing.
"""

from __future__ import annotations

import re
from typing import Any

from fiftyone_florence2.core.errors import CheckpointError

# Florence-2's 1,024 added tokens, in the order its processor adds them (the misspelling is Florence-2's).
FLORENCE_TOKENS: tuple[str, ...] = (
    "<od>", "</od>", "<ocr>", "</ocr>", *(f"<loc_{i}>" for i in range(1000)),
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>", "<seg>", "</seg>",
    "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>", "</region_to_desciption>", "<proposal>",
    "</proposal>", "<poly>", "</poly>", "<and>",
)  # fmt: skip
IMAGE_TOKEN = "<image>"
# The native checkpoints pad the embedding matrix to a multiple of 64 rows (51,290 -> 51,328 for base).
VOCAB_MULTIPLE = 64
# The only image features the native projector computes.
FEATURE_SOURCE = ["spatial_avg_pool", "temporal_avg_pool"]

# The original configuration classes' defaults, for keys a config.json leaves out.
_VISION_DEFAULTS: dict[str, Any] = {
    "drop_path_rate": 0.1, "patch_size": [7, 3, 3, 3], "patch_stride": [4, 2, 2, 2], "patch_padding": [3, 1, 1, 1],
    "patch_prenorm": [False, True, True, True], "dim_embed": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64],
    "num_groups": [8, 16, 32, 64], "depths": [1, 1, 9, 1], "window_size": 12, "projection_dim": 1024,
}  # fmt: skip
_TEXT_DEFAULTS: dict[str, Any] = {
    "vocab_size": 51289, "max_position_embeddings": 1024, "encoder_layers": 12, "encoder_ffn_dim": 4096,
    "encoder_attention_heads": 16, "decoder_layers": 12, "decoder_ffn_dim": 4096, "decoder_attention_heads": 16,
    "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "activation_function": "gelu", "d_model": 1024,
    "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0, "init_std": 0.02,
    "classifier_dropout": 0.0, "scale_embedding": False, "use_cache": True, "pad_token_id": 1, "bos_token_id": 0,
    "eos_token_id": 2, "is_encoder_decoder": True, "decoder_start_token_id": 2, "forced_eos_token_id": 2,
}  # fmt: skip
# Per-stage lists of the vision tower: one entry per stage, all the same length.
_STAGE_KEYS = ("depths", "dim_embed", "num_heads", "num_groups", "patch_size", "patch_stride", "patch_padding",
               "patch_prenorm")  # fmt: skip
# Generation settings the original keeps in its text config (its language model generated with them).
_GENERATION_KEYS = (
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
    "forced_eos_token_id", "num_beams", "early_stopping", "no_repeat_ngram_size", "max_length", "min_length",
    "length_penalty", "repetition_penalty", "encoder_no_repeat_ngram_size", "do_sample", "temperature", "top_k",
    "top_p", "num_beam_groups", "diversity_penalty", "bad_words_ids", "suppress_tokens", "begin_suppress_tokens",
)  # fmt: skip
_ID_DEFAULTS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_eos_token_id")

# (pattern, replacement) on original weight names, in order; None drops the weight.
_RENAMES: tuple[tuple[str, str | None], ...] = (
    (r"^language_model\.final_logits_bias$", None),  # BART's bias buffer: zeros, unused by the native model
    (r"^vision_tower\.(norms|head)\.", None),  # the DaViT classifier, which Florence-2 never runs
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
    (r"^image_projection$", "model.multi_modal_projector.image_projection.weight"),
    (r"^image_proj_norm\.", "model.multi_modal_projector.image_proj_norm."),
    (r"^image_pos_embed\.", "model.multi_modal_projector.image_position_embed."),
    (r"^visual_temporal_embed\.", "model.multi_modal_projector.visual_temporal_embed."),
    (r"^vision_tower\.convs\.(\d+)\.proj\.", r"model.vision_tower.convs.\1.conv."),
    (r"\.(conv[12])\.fn\.dw\.", r".\1."),
    (r"\.(window_attn|channel_attn)\.norm\.", ".norm1."),
    (r"\.(window_attn|channel_attn)\.fn\.", r".\1."),
    (r"\.ffn\.norm\.", ".norm2."),
    (r"\.ffn\.fn\.net\.", ".ffn."),
    (r"^vision_tower\.", "model.vision_tower."),
)
# The weight the original uses as ``x @ P``: the native Linear holds its transpose.
TRANSPOSED = "model.multi_modal_projector.image_projection.weight"
# The names one tied matrix goes by; a file may hold any one of them.
TIED = (
    "model.language_model.shared.weight",
    "model.language_model.encoder.embed_tokens.weight",
    "model.language_model.decoder.embed_tokens.weight",
    "lm_head.weight",
)
FINAL_LOGITS_BIAS = "language_model.final_logits_bias"


def is_original_format(config: dict) -> bool:
    """Whether ``config`` (a ``config.json``) is an original-format Florence-2 checkpoint's."""
    text, vision = config.get("text_config"), config.get("vision_config")
    legacy_text = isinstance(text, dict) and text.get("model_type") == "florence2_language"
    legacy_vision = isinstance(vision, dict) and "dim_embed" in vision
    return config.get("model_type") == "florence2" and (legacy_text or legacy_vision)


def native_key(original_key: str) -> str | None:
    """The native weight name of an original one; None for a weight the native model does not have."""
    key = original_key
    for pattern, replacement in _RENAMES:
        if re.search(pattern, key):
            if replacement is None:
                return None
            key = re.sub(pattern, replacement, key)
    return key


def _refuse(name: str, field: str, value: Any, why: str) -> CheckpointError:
    return CheckpointError(f"Checkpoint {name!r} cannot be converted: {field} is {value!r}; {why}.")


def native_vision_config(original: dict, name: str) -> dict[str, Any]:
    """The native ``vision_config`` of an original config; refuses what the native classes cannot represent."""
    given = original.get("vision_config") or {}
    vision = {**_VISION_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}
    source = vision.get("image_feature_source", FEATURE_SOURCE)
    if list(source) != FEATURE_SOURCE:
        raise _refuse(name, "vision_config.image_feature_source", source, f"the native model computes {FEATURE_SOURCE}")
    pos = vision.get("image_pos_embed") or {}
    if pos.get("type") != "learned_abs_2d":
        raise _refuse(
            name, "vision_config.image_pos_embed.type", pos.get("type"), "the native model has 'learned_abs_2d'"
        )
    temporal = vision.get("visual_temporal_embedding") or {}
    if temporal.get("type") != "COSINE":
        raise _refuse(
            name, "vision_config.visual_temporal_embedding.type", temporal.get("type"), "the native model has 'COSINE'"
        )
    stages = {key: len(vision[key]) if isinstance(vision[key], list) else None for key in _STAGE_KEYS}
    if None in stages.values() or len(set(stages.values())) != 1:
        raise _refuse(name, "the vision tower's per-stage lists", stages, "each must be a list, one entry per stage")
    return {
        "model_type": "florence_vision",
        **{key: vision[key] for key in _STAGE_KEYS if key != "dim_embed"},
        "embed_dim": vision["dim_embed"],
        "window_size": vision["window_size"],
        "drop_path_rate": vision["drop_path_rate"],
        "projection_dim": vision["projection_dim"],
        # The original's DaViT hard-codes these; the native reads them from its config.
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "in_channels": 3,
        "max_position_embeddings": int(pos.get("max_pos_embeddings", 50)),
        "max_temporal_embeddings": int(temporal.get("max_temporal_embeddings", 100)),
    }


def native_text_config(original: dict, name: str) -> dict[str, Any]:
    """The native (BART) ``text_config`` of an original config: its architecture keys, defaults filled in."""
    text = original.get("text_config")
    if not isinstance(text, dict):
        raise _refuse(name, "text_config", text, "an original Florence-2 config holds its language model's settings")
    if text.get("model_type", "florence2_language") not in ("florence2_language", "bart"):
        raise _refuse(name, "text_config.model_type", text["model_type"], "Florence-2's language model is BART")
    native = {key: text.get(key, default) for key, default in _TEXT_DEFAULTS.items()}
    return {"model_type": "bart", **native}


def native_config(
    original: dict, name: str, vocab_size: int | None = None, image_token_id: int | None = None
) -> dict[str, Any]:
    """The native ``config.json`` of an original one (``vocab_size`` and ``image_token_id``: the converted
    vocabulary's, which the tokenizer decides). Refuses, naming the field, what the native cannot represent."""
    if not is_original_format(original):
        raise CheckpointError(f"Checkpoint {name!r} is not an original-format Florence-2 checkpoint.")
    vision, text = native_vision_config(original, name), native_text_config(original, name)
    if vision["projection_dim"] != text["d_model"]:
        raise _refuse(
            name,
            "vision_config.projection_dim",
            vision["projection_dim"],
            f"it must equal text_config.d_model ({text['d_model']})",
        )
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    return {
        "architectures": ["Florence2ForConditionalGeneration"],
        "model_type": "florence2",
        "vision_config": vision,
        "text_config": text,
        "image_token_id": image_token_id if image_token_id is not None else text["vocab_size"],
        "is_encoder_decoder": True,
    }


def generation_settings(original: dict) -> dict[str, Any]:
    """What belongs in ``generation_config.json``: the settings the original kept in its text config (its
    language model generated with them), with the token ids its configuration class defaulted."""
    text = original.get("text_config") or {}
    settings = {key: _TEXT_DEFAULTS[key] for key in _ID_DEFAULTS}
    settings.update({key: text[key] for key in _GENERATION_KEYS if text.get(key) is not None})
    return settings


def padded_rows(rows: int) -> int:
    """Embedding rows padded the way the native checkpoints are (a multiple of :data:`VOCAB_MULTIPLE`)."""
    return -(-rows // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def tokens_to_add(vocab: dict[str, int], rows: int, name: str) -> tuple[list[str], list[str]]:
    """``(florence, filler)``: the Florence-2 tokens ``vocab`` lacks (added in their fixed order, as the
    original processor did at run time), then filler tokens up to the embedding's ``rows``, so that the
    ``<image>`` token added next lands after every original row. Refuses a vocabulary the rows cannot hold."""
    florence = [token for token in FLORENCE_TOKENS if token not in vocab]
    size = len(vocab) + len(florence)
    if size > rows:
        raise CheckpointError(
            f"Checkpoint {name!r} cannot be converted: its tokenizer (with Florence-2's tokens) has {size} tokens "
            f"and its embedding matrix only {rows} rows."
        )
    if IMAGE_TOKEN in vocab:
        raise CheckpointError(f"Checkpoint {name!r} cannot be converted: its tokenizer already has {IMAGE_TOKEN}.")
    filler = [f"<florence2_unused_{i}>" for i in range(size, rows)]
    return florence, filler

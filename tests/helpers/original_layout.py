"""Tiny Florence-2 checkpoints written out in the original (remote-code) layout, with the native model they
stand for, so that a conversion can be checked against it.

The layout is written here from the published description of the original format, independently of the
product's own mapping: original weight names, the projection stored as ``x @ P``, BART's zero
``final_logits_bias``, the DaViT classifier weights, an ``auto_map`` config with ``florence2_language`` text
settings, and a ``modeling_florence2.py`` that leaves a marker file if anything ever imports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.original import FLORENCE_TOKENS, IMAGE_TOKEN

MARKER = "IMPORTED"
_MODELING = """import pathlib
pathlib.Path(__file__).with_name("IMPORTED").write_text("remote code ran")
raise RuntimeError("remote code must never run")
"""
# Native name -> original name, applied in order (the inverse of the published renames).
_TO_ORIGINAL = (
    (r"^model\.language_model\.", "language_model.model."),
    (r"^lm_head\.", "language_model.lm_head."),
    (r"^model\.multi_modal_projector\.image_projection\.weight$", "image_projection"),
    (r"^model\.multi_modal_projector\.image_position_embed\.", "image_pos_embed."),
    (r"^model\.multi_modal_projector\.", ""),
    (r"^model\.vision_tower\.convs\.(\d+)\.conv\.", r"vision_tower.convs.\1.proj."),
    (r"\.(spatial_block|channel_block)\.(conv[12])\.", r".\1.\2.fn.dw."),
    (r"\.spatial_block\.norm1\.", ".spatial_block.window_attn.norm."),
    (r"\.channel_block\.norm1\.", ".channel_block.channel_attn.norm."),
    (r"\.(window_attn|channel_attn)\.(qkv|proj)\.", r".\1.fn.\2."),
    (r"\.norm2\.", ".ffn.norm."),
    (r"\.ffn\.(fc[12])\.", r".ffn.fn.net.\1."),
    (r"^model\.vision_tower\.", "vision_tower."),
)


@dataclass
class Layout:
    """How the original checkpoint is written.

    ``tied_as``: the one name the tied matrix is stored under (None: every name). ``florence_on_disk``:
    whether the tokenizer files hold Florence-2's 1,024 tokens. ``extra_tokens``: a fine-tune's own tokens.
    ``untied_head``: an ``lm_head`` that differs from the embeddings. ``spare_rows``: embedding rows beyond the
    tokenizer. ``tokenizer``: ``vocab`` (vocab.json and merges.txt) or ``json`` (tokenizer.json alone).
    """

    tied_as: str | None = "language_model.model.shared.weight"
    florence_on_disk: bool = True
    extra_tokens: tuple[str, ...] = ()
    untied_head: bool = False
    spare_rows: int = 0
    tokenizer: str = "vocab"
    dtype: str = "float32"
    seed: int = 0
    text_settings: dict[str, Any] = field(default_factory=lambda: {"no_repeat_ngram_size": 3, "num_beams": 3})


def original_name(native: str) -> str:
    for pattern, replacement in _TO_ORIGINAL:
        native = re.sub(pattern, replacement, native)
    return native


def reference_model(layout: Layout) -> tuple[Any, Any]:
    """The native ``(model, processor)`` an original checkpoint of ``layout`` stands for: its vocabulary is
    the original's, then fillers for the spare rows, then ``<image>`` (which the original lacks)."""
    import torch
    from transformers import BartTokenizer, Florence2ForConditionalGeneration

    from fiftyone_florence2.engine.random_checkpoint import native_processor, random_model

    base, processor = random_model("tiny", seed=layout.seed)
    vocab, merges = _vocab_and_merges(processor.tokenizer)
    tokenizer = BartTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_tokens(list(FLORENCE_TOKENS), special_tokens=True)
    tokenizer.add_tokens(list(layout.extra_tokens), special_tokens=True)
    tokenizer.add_tokens([f"<spare_{i}>" for i in range(layout.spare_rows)])
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer._set_model_specific_special_tokens(special_tokens={"image_token": IMAGE_TOKEN})
    config = base.config
    config.text_config.vocab_size = len(tokenizer)
    config.image_token_id = len(tokenizer) - 1
    config.tie_word_embeddings = config.text_config.tie_word_embeddings = not layout.untied_head
    torch.manual_seed(layout.seed)
    model = Florence2ForConditionalGeneration(config).eval()
    if layout.untied_head:  # the original always shares its input embeddings; only lm_head moved
        language = model.model.language_model
        with torch.no_grad():
            model.lm_head.weight.copy_(torch.randn_like(model.lm_head.weight) * 0.05)
            language.encoder.embed_tokens.weight.copy_(language.shared.weight)
            language.decoder.embed_tokens.weight.copy_(language.shared.weight)
    model.to(getattr(torch, layout.dtype))
    return model, native_processor(processor.image_processor, tokenizer)


def _vocab_and_merges(tokenizer: Any) -> tuple[dict[str, int], list[tuple[str, str]]]:
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def write_original(path: Path, layout: Layout) -> tuple[Any, Any]:
    """Writes the original-format checkpoint of ``layout`` to ``path``; returns its reference model."""
    from safetensors.torch import save_file

    model, processor = reference_model(layout)
    path.mkdir(parents=True, exist_ok=True)
    rows = model.config.text_config.vocab_size - 1  # the original has no <image> row
    tensors = {}
    for key, value in model.state_dict().items():
        if "embed_tokens" in key or key == "lm_head.weight" or key.endswith("shared.weight"):
            continue
        value = value.t() if key.endswith("image_projection.weight") else value
        tensors[original_name(key)] = value.contiguous().clone()
    shared = model.model.language_model.shared.weight.detach()[:rows]
    tied = ("language_model.model.shared.weight", "language_model.model.encoder.embed_tokens.weight",
            "language_model.model.decoder.embed_tokens.weight", "language_model.lm_head.weight")  # fmt: skip
    for name in [layout.tied_as] if layout.tied_as else tied:
        tensors[name] = shared.clone()
    if layout.untied_head:
        tensors["language_model.lm_head.weight"] = model.lm_head.weight.detach()[:rows].clone()
    tensors["language_model.final_logits_bias"] = shared.new_zeros(1, rows)
    last = model.config.vision_config.embed_dim[-1]
    tensors["vision_tower.norms.weight"] = shared.new_ones(last)
    tensors["vision_tower.norms.bias"] = shared.new_zeros(last)
    tensors["vision_tower.head.weight"] = shared.new_zeros(1000, last)
    tensors["vision_tower.head.bias"] = shared.new_zeros(1000)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(original_config(model.config, rows, layout), indent=1))
    (path / "modeling_florence2.py").write_text(_MODELING)
    (path / "configuration_florence2.py").write_text(_MODELING)
    _write_tokenizer(path, processor.tokenizer, layout)
    image = processor.image_processor.to_dict()
    keep = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
            "do_normalize", "image_mean", "image_std", "do_convert_rgb", "image_seq_length")  # fmt: skip
    preprocessor = {key: image[key] for key in keep if key in image}
    preprocessor |= {"image_processor_type": "CLIPImageProcessor", "processor_class": "Florence2Processor"}
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=1))
    return model, processor


def original_config(config: Any, rows: int, layout: Layout) -> dict[str, Any]:
    vision, text = config.vision_config, config.text_config
    return {
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": {"AutoConfig": "configuration_florence2.Florence2Config",
                     "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration"},
        "model_type": "florence2",
        "projection_dim": vision.projection_dim,
        "vocab_size": rows,
        "torch_dtype": layout.dtype,
        "vision_config": {
            "model_type": "", "drop_path_rate": 0.0, "patch_size": list(vision.patch_size),
            "patch_stride": list(vision.patch_stride), "patch_padding": list(vision.patch_padding),
            "patch_prenorm": list(vision.patch_prenorm), "enable_checkpoint": False,
            "dim_embed": list(vision.embed_dim), "num_heads": list(vision.num_heads),
            "num_groups": list(vision.num_groups), "depths": list(vision.depths), "window_size": vision.window_size,
            "projection_dim": vision.projection_dim,
            "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": vision.max_temporal_embeddings},
            "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": vision.max_position_embeddings},
            "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
        },
        "text_config": {
            "model_type": "florence2_language", "vocab_size": rows, "d_model": text.d_model,
            "encoder_layers": text.encoder_layers, "decoder_layers": text.decoder_layers,
            "encoder_attention_heads": text.encoder_attention_heads,
            "decoder_attention_heads": text.decoder_attention_heads, "encoder_ffn_dim": text.encoder_ffn_dim,
            "decoder_ffn_dim": text.decoder_ffn_dim, "max_position_embeddings": text.max_position_embeddings,
            "dropout": text.dropout, "early_stopping": True, "forced_eos_token_id": 2, **layout.text_settings,
        },
    }  # fmt: skip


def _write_tokenizer(path: Path, tokenizer: Any, layout: Layout) -> None:
    """The original's tokenizer files: without ``<image>`` and the fillers, and without Florence-2's tokens
    where the layout says so (the original processor added them at run time)."""
    vocab, merges = _vocab_and_merges(tokenizer)
    added = {t: i for t, i in tokenizer.get_added_vocab().items() if t not in vocab}
    added = {t: i for t, i in added.items() if t != IMAGE_TOKEN and not t.startswith("<spare_")}
    if not layout.florence_on_disk:
        added = {t: i for t, i in added.items() if t not in FLORENCE_TOKENS}
        extras = [t for t in layout.extra_tokens]
        if extras:
            raise ValueError("a fine-tune's own tokens come after Florence-2's: keep them on disk")
    if layout.tokenizer == "vocab":
        (path / "vocab.json").write_text(json.dumps(vocab))
        (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
        (path / "added_tokens.json").write_text(json.dumps(added))
    else:
        entries = [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False, "rstrip": False,
                    "normalized": False} for t, i in sorted(added.items(), key=lambda item: item[1])]  # fmt: skip
        model = {"type": "BPE", "vocab": vocab, "merges": [" ".join(m) for m in merges]}
        (path / "tokenizer.json").write_text(json.dumps({"version": "1.0", "added_tokens": entries, "model": model}))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BartTokenizer", "auto_map": {}}))

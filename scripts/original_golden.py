"""Writes tests/data/original_golden: tiny original-format Florence-2 checkpoints and the token ids that
Florence-2's own (remote) code generates from them, so that conversion is checked against the original model
itself rather than against this project's own reading of the format.

It needs the original code, which this repository does not hold: ``configuration_florence2.py``,
``modeling_florence2.py`` and ``processing_florence2.py`` from https://huggingface.co/microsoft/Florence-2-base
(or ``-large``; both repositories carry the same files), in one directory. That code does not run on
transformers 5: install an older one, with what the original imports, into a directory of its own and put it
first on the path::

    python -m pip install --no-deps --target /tmp/oldtf "transformers==4.49.*" "tokenizers<0.22" \
        "huggingface_hub<1" "timm==1.0.*" einops
    PYTHONPATH=/tmp/oldtf python scripts/original_golden.py /path/to/original_code tests/data/original_golden

Everything is built offline: a byte-level BPE tokenizer trained on a few sentences (the way the project's
random checkpoints make theirs), Florence-2's 1,024 tokens added by the original processor itself, random
weights, and each checkpoint saved by the original model's own ``save_pretrained`` and reloaded from disk
before it generates. Each case directory gets ``modeling_florence2.py``, ``configuration_florence2.py`` and
``processing_florence2.py`` markers of our own, which leave a file ``IMPORTED`` and raise if anything ever
imports them, in place of the original code.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import tempfile
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = "florence2_original"
MARKER = "IMPORTED"
MARKER_CODE = f"""# A marker, not Florence-2's code: nothing may ever import a checkpoint's code.
import pathlib

pathlib.Path(__file__).with_name("{MARKER}").write_text("checkpoint code was imported")
raise RuntimeError("a checkpoint's code must never run")
"""
CODE_FILES = ("configuration_florence2.py", "modeling_florence2.py", "processing_florence2.py")
PIXELS = "original_pixel_values.safetensors"
MAX_NEW_TOKENS = 20
TEXT_INPUT = "a red square"
REGION_INPUT = "<loc_100><loc_200><loc_500><loc_700>"
# The generation settings each golden is made with, on top of the model's own defaults ("config": none).
SETTINGS: dict[str, dict[str, Any]] = {"config": {}, "greedy": {"num_beams": 1, "no_repeat_ngram_size": 0}}
_CORPUS = [
    "What does the image describe? A red square on a blue background.",
    "Describe in detail what is shown in the image. Describe with a paragraph what is shown in the image.",
    "What is the text in the image, with regions? Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions. Locate the region proposals in the image.",
    "Locate the phrases in the caption: a red square. Locate a red square in the image with mask.",
    "What is the polygon mask of region. What is the region? What does the region describe?",
    "What text is in the region? What colour is the square? A circle, a stripe and a gradient.",
]


@dataclass
class Case:
    """One tiny original-format checkpoint."""

    seed: int
    dtype: str = "float32"
    image_px: int = 64
    dim_embed: list[int] = field(default_factory=lambda: [8, 16, 16, 32])
    num_heads: list[int] = field(default_factory=lambda: [1, 1, 2, 2])
    patch_stride: list[int] = field(default_factory=lambda: [4, 2, 2, 2])
    window_size: int = 2
    d_model: int = 32
    layers: int = 1
    heads: int = 2
    ffn: int = 64
    max_positions: int = 64
    florence_on_disk: bool = False  # Microsoft's repositories leave them to the processor
    extra_tokens: list[str] = field(default_factory=list)  # a fine-tune's own tokens
    untied_head: bool = False
    eos_boost: float = 1.0
    hub_generation_config: bool = True  # Microsoft's generation_config.json (which the original never reads)
    free_prompts: list[str] = field(default_factory=list)


CASES = {
    "fp32_tokens_not_on_disk": Case(seed=0, eos_boost=3.0),
    "fp16_tokens_on_disk": Case(seed=1, dtype="float16", florence_on_disk=True, hub_generation_config=False),
    "bf16_window_padding": Case(
        seed=2,
        dtype="bfloat16",
        image_px=96,
        window_size=4,
        patch_stride=[4, 2, 2, 1],
        max_positions=96,
        dim_embed=[8, 16, 32, 64],
        num_heads=[1, 2, 2, 4],
    ),
    "finetune_extra_token_untied_head": Case(
        seed=3,
        florence_on_disk=True,
        extra_tokens=["<DocVQA>"],
        untied_head=True,
        eos_boost=2.5,
        free_prompts=["<DocVQA>What colour is the square?", "What colour is the square?"],
    ),
}


def load_original(code_dir: Path) -> types.SimpleNamespace:
    """Florence-2's original classes, imported as a package from ``code_dir``."""
    missing = [name for name in CODE_FILES if not (code_dir / name).is_file()]
    if missing:
        sys.exit(f"{code_dir} lacks {', '.join(missing)}: get them from huggingface.co/microsoft/Florence-2-base.")
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(code_dir)]
    sys.modules[PACKAGE] = package
    modeling = importlib.import_module(f"{PACKAGE}.modeling_florence2")
    processing = importlib.import_module(f"{PACKAGE}.processing_florence2")
    return types.SimpleNamespace(
        config=modeling.Florence2Config, model=modeling.Florence2ForConditionalGeneration,
        processor=processing.Florence2Processor,
    )  # fmt: skip


def write_images(out: Path) -> list[str]:
    """Two small deterministic images of different shapes (a square and a circle on gradients)."""
    import numpy as np
    from PIL import Image

    ys, xs = np.mgrid[0:60, 0:80]
    first = np.stack([xs * 3, ys * 4, (xs + ys) * 2], axis=-1).astype(np.uint8)
    first[10:40, 20:50] = (230, 20, 20)
    ys, xs = np.mgrid[0:90, 0:50]
    second = np.stack([255 - ys * 2, (xs * 5) % 256, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    second[(ys - 45) ** 2 + (xs - 25) ** 2 < 18**2] = (20, 40, 220)
    names = ["square.png", "circle.png"]
    for name, pixels in zip(names, (first, second)):
        Image.fromarray(pixels).save(out / name)
    return names


def bpe_tokenizer(directory: Path) -> Any:
    """A byte-level BPE with BART's special tokens, wrapped as the fast BART tokenizer the original uses."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import BartTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=False)
    bpe.model.save(str(directory))
    return BartTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"))


def original_processor(original: types.SimpleNamespace, case: Case, tokenizer: Any) -> Any:
    """The original processor, which adds Florence-2's 1,024 tokens to ``tokenizer`` as it is made."""
    from transformers import CLIPImageProcessor

    reduction = math.prod(case.patch_stride)
    square = {"height": case.image_px, "width": case.image_px}
    image_processor = CLIPImageProcessor(
        size=square, crop_size=square,
        do_center_crop=False, resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
        image_seq_length=(case.image_px // reduction) ** 2 + 1,
    )  # fmt: skip
    return original.processor(image_processor=image_processor, tokenizer=tokenizer)


def original_config(original: types.SimpleNamespace, case: Case, vocab_size: int) -> Any:
    """An original ``Florence2Config`` shaped like Microsoft's, with the case's tiny dimensions."""
    text = {
        "vocab_size": vocab_size, "d_model": case.d_model, "encoder_layers": case.layers,
        "decoder_layers": case.layers, "encoder_attention_heads": case.heads, "decoder_attention_heads": case.heads,
        "encoder_ffn_dim": case.ffn, "decoder_ffn_dim": case.ffn, "max_position_embeddings": case.max_positions,
        "activation_function": "gelu", "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.1,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1, "decoder_start_token_id": 2,
        "forced_bos_token_id": 0, "forced_eos_token_id": 2, "early_stopping": True, "no_repeat_ngram_size": 3,
        "num_beams": 3, "is_encoder_decoder": True, "scale_embedding": False,
    }  # fmt: skip
    stages = len(case.dim_embed)
    vision = {
        "model_type": "davit", "drop_path_rate": 0.1, "patch_size": [7, 3, 3, 3], "patch_stride": case.patch_stride,
        "patch_padding": [3, 1, 1, 1], "patch_prenorm": [False, True, True, True], "enable_checkpoint": False,
        "dim_embed": case.dim_embed, "num_heads": case.num_heads, "num_groups": case.num_heads,
        "depths": [1] * stages, "window_size": case.window_size, "projection_dim": case.d_model,
        "visual_temporal_embedding": {"type": "COSINE", "max_temporal_embeddings": 100},
        "image_pos_embed": {"type": "learned_abs_2d", "max_pos_embeddings": 50},
        "image_feature_source": ["spatial_avg_pool", "temporal_avg_pool"],
    }  # fmt: skip
    return original.config(
        vision_config=vision, text_config=text, vocab_size=vocab_size, projection_dim=case.d_model,
        bos_token_id=0, eos_token_id=2, pad_token_id=1, is_encoder_decoder=True,
    )  # fmt: skip


def randomise(model: Any, seed: int, eos_boost: float) -> None:
    """Weights large enough that answers are long, varied and far from ties (the default initialisation
    gives near-uniform logits, where any rounding could pick another token): matrices scaled to their fan-in,
    embeddings and positions of unit scale, norms near one."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith(("shared.weight", "lm_head.weight")) or "pos" in name or "embed_positions" in name:
                param.copy_(noise)
            elif name == "image_projection":
                param.copy_(noise * 1.5 / param.shape[0] ** 0.5)
            elif param.ndim >= 2:
                param.copy_(noise * 1.5 / param[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                param.copy_(1 + 0.2 * noise)
            else:
                param.copy_(0.2 * noise)
        # A longer </s> row makes some answers end before the token limit (beams then finish early).
        model.language_model.model.shared.weight[2] *= eos_boost


def build_checkpoint(original: types.SimpleNamespace, case: Case, out: Path) -> None:
    """Saves the case's checkpoint with the original code's own ``save_pretrained``, then the markers."""
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = bpe_tokenizer(Path(scratch))
        if not case.florence_on_disk:  # as Microsoft's repositories: the processor adds them when it loads
            tokenizer.save_pretrained(out)
        processor = original_processor(original, case, tokenizer)
        if case.extra_tokens:
            tokenizer.add_tokens(case.extra_tokens, special_tokens=True)
        torch.manual_seed(case.seed)
        model = original.model(original_config(original, case, len(tokenizer)))
        randomise(model, case.seed, case.eos_boost)
        if case.untied_head:
            # A 2024 full fine-tune: the original code loaded lm_head apart from the embeddings (it never
            # re-tied them), so training moved it; the configuration still says tie_word_embeddings.
            head = model.language_model.lm_head
            moved = head.weight.detach() + 0.5 * torch.randn(
                head.weight.shape, generator=torch.Generator().manual_seed(case.seed)
            )
            head.weight = torch.nn.Parameter(moved)
        model.to(getattr(torch, case.dtype)).eval()
        model.save_pretrained(out, safe_serialization=True)
        if case.florence_on_disk:
            tokenizer.save_pretrained(out)
        processor.image_processor.save_pretrained(out)
    config = json.loads((out / "config.json").read_text())
    # The original's vision config is a bare PretrainedConfig, which saves an empty model_type; Microsoft's
    # config.json says "davit", which the original model asserts when it loads.
    config["vision_config"]["model_type"] = "davit"
    config["auto_map"] = {
        "AutoConfig": "configuration_florence2.Florence2Config",
        "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    preprocessor = json.loads((out / "preprocessor_config.json").read_text())
    preprocessor.update(auto_map={"AutoProcessor": "processing_florence2.Florence2Processor"},
                        processor_class="Florence2Processor")  # fmt: skip
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    if case.hub_generation_config:
        (out / "generation_config.json").write_text(json.dumps({"num_beams": 3, "early_stopping": False}))
    for name in CODE_FILES:
        (out / name).write_text(MARKER_CODE)


def prompts(original_proc: Any, case: Case) -> dict[str, str]:
    """Every task of the original processor's own table with its input, then the case's free prompts."""
    asked = {token: token for token in original_proc.task_prompts_without_inputs}
    for token in original_proc.task_prompts_with_input:
        asked[token] = token + (REGION_INPUT if token.startswith("<REGION_TO") else TEXT_INPUT)
    return {**asked, **{prompt: prompt for prompt in case.free_prompts}}


def goldens(original: types.SimpleNamespace, case: Case, out: Path, images: list[Path]) -> dict[str, Any]:
    """The original model's generations, reloaded from ``out`` the way its users load it (the checkpoint's
    own dtype, eager attention)."""
    import torch
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, CLIPImageProcessor

    tokenizer = AutoTokenizer.from_pretrained(out)
    processor = original.processor(CLIPImageProcessor.from_pretrained(out), tokenizer)
    model = original.model.from_pretrained(out, torch_dtype="auto", attn_implementation="eager").eval()
    assert model.dtype == getattr(torch, case.dtype), model.dtype
    # Generated in float32 from the file's own (possibly half-precision) values: in half precision the
    # original and the native classes round differently (other kernels, other order), and answers drift
    # apart after a few tokens; in float32 they agree to about 1e-5, so tokens match exactly.
    model.float()
    language = model.language_model
    if not case.untied_head:
        # The file holds the tied matrix once (save_pretrained keeps one copy). Loaded by this code on
        # transformers 4.49, lm_head stays randomly initialised ("newly initialized" in the log), the fault
        # Microsoft mended in August 2025 by saving lm_head into its checkpoints. The configuration ties it
        # (tie_word_embeddings), as the model was trained: tie it, and check the one copy is what generates.
        language.lm_head.weight = language.model.shared.weight
    assert torch.equal(language.lm_head.weight, language.model.shared.weight) != case.untied_head
    for embeddings in (language.model.encoder.embed_tokens, language.model.decoder.embed_tokens):
        assert embeddings.weight is language.model.shared.weight
    pixels = {}
    defaults = model.language_model.generation_config.to_diff_dict()
    records = []
    for image_path in images:
        image = Image.open(image_path).convert("RGB")
        for task, prompt in prompts(processor, case).items():
            inputs = processor(text=[prompt], images=[image], return_tensors="pt")
            pixels[image_path.name] = inputs["pixel_values"][0]
            for setting, overrides in SETTINGS.items():
                with torch.no_grad():
                    ids = model.generate(
                        input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"],
                        max_new_tokens=MAX_NEW_TOKENS, **overrides,
                    )  # fmt: skip
                records.append({
                    "image": image_path.name, "task": task, "prompt": prompt,
                    "question": processor._construct_prompts([prompt])[0], "setting": setting,
                    "input_ids": inputs["input_ids"][0].tolist(), "sequence": ids[0].tolist(),
                    "text": processor.batch_decode(ids, skip_special_tokens=False)[0],
                })  # fmt: skip
    # The pixel values the original processor made (transformers 4.49's CLIPImageProcessor, PIL resize).
    save_file({name: value.contiguous() for name, value in pixels.items()}, str(out / PIXELS))
    return {
        "case": asdict(case),
        "max_new_tokens": MAX_NEW_TOKENS,
        "compute_dtype": "float32",
        "settings": SETTINGS,
        "original_generation_defaults": {k: v for k, v in defaults.items() if k != "transformers_version"},
        "vocab_size": len(tokenizer),
        "generations": records,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("code_dir", type=Path, help="the directory holding the original Florence-2 code files")
    parser.add_argument("out", type=Path, help="where to write the cases (tests/data/original_golden)")
    args = parser.parse_args()
    import transformers

    original = load_original(args.code_dir.resolve())
    args.out.mkdir(parents=True, exist_ok=True)
    images = [args.out / name for name in write_images(args.out)]
    for name, case in CASES.items():
        target = args.out / name
        if target.exists():
            sys.exit(f"{target} exists: remove it first.")
        target.mkdir()
        build_checkpoint(original, case, target)
        golden = goldens(original, case, target, images)
        golden["made_with"] = {"transformers": transformers.__version__, "code": sorted(CODE_FILES)}
        (target / "golden.json").write_text(json.dumps(golden, indent=1))
        assert not (target / MARKER).exists()
        print(name, sum(f.stat().st_size for f in target.iterdir()) // 1024, "KiB")


if __name__ == "__main__":
    main()

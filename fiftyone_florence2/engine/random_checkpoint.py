"""Random-weight Florence-2 checkpoints, built offline, for tests, benchmarks and the demo.

They load through the same ``from_pretrained`` path as real checkpoints, but
their answers mean nothing. Like ``runner.py`` this module needs torch and
transformers; nothing in the labelling path imports it.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.original import FLORENCE_TOKENS, IMAGE_TOKEN

# Real Florence-2-base dimensions (231M parameters), a tiny shape that keeps
# every stage but weighs about a megabyte, and a "seeing" shape (585k
# parameters) small enough to learn to localise boxes on a CPU in minutes: its
# last two stages keep stride 1, so a 64-px image gives an 8x8 grid (65 tokens),
# and no dropout (it memorises 4 images in about 150 steps instead of 275).
SHAPES = {
    "base": {
        "vision": {"embed_dim": [128, 256, 512, 1024], "num_heads": [4, 8, 16, 32], "num_groups": [4, 8, 16, 32],
                   "depths": [1, 1, 9, 1], "window_size": 12, "projection_dim": 768},
        "text": {"d_model": 768, "layers": 6, "heads": 12, "ffn": 3072},
        "image_px": 768,
    },
    # Florence-2-large (0.77B parameters).
    "large": {
        "vision": {"embed_dim": [256, 512, 1024, 2048], "num_heads": [8, 16, 32, 64],
                   "num_groups": [8, 16, 32, 64], "depths": [1, 1, 9, 1], "window_size": 12, "projection_dim": 1024},
        "text": {"d_model": 1024, "layers": 12, "heads": 16, "ffn": 4096},
        "image_px": 768,
    },
    "tiny": {
        "vision": {"embed_dim": [8, 16, 32, 64], "num_heads": [1, 1, 2, 2], "num_groups": [1, 1, 2, 2],
                   "depths": [1, 1, 1, 1], "window_size": 2, "projection_dim": 32},
        "text": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64},
        "image_px": 64,
    },
    "seeing": {
        "vision": {"embed_dim": [16, 32, 64, 64], "num_heads": [1, 2, 4, 4], "num_groups": [1, 2, 4, 4],
                   "depths": [1, 1, 1, 1], "patch_stride": [4, 2, 1, 1], "window_size": 8, "projection_dim": 64},
        "text": {"d_model": 64, "layers": 2, "heads": 4, "ffn": 128, "dropout": 0.0},
        "image_px": 64,
    },
}  # fmt: skip

_DEFAULT_STRIDES = (4, 2, 2, 2)  # Florence2VisionConfig's patch_stride


def image_tokens(shape: str) -> int:
    """Image tokens the vision tower gives at the shape's size: the final grid, plus one pooled token."""
    dims = SHAPES[shape]
    reduction = 1
    for stride in dims["vision"].get("patch_stride", _DEFAULT_STRIDES):
        reduction *= stride
    return (dims["image_px"] // reduction) ** 2 + 1


_CORPUS = [
    "What does the image describe? A red car parked on a street next to a tree.",
    "Describe in detail what is shown in the image. A person holding a phone.",
    "Describe with a paragraph what is shown in the image. Dogs and cats play in the park.",
    "What is the text in the image, with regions? STOP sign, OPEN 24 hours.",
    "Locate the objects with category name in the image. car, person, dog, wheel, window.",
    "Locate the objects in the image, with their descriptions. Locate the region proposals in the image.",
    "Locate the phrases in the caption: a green bus. Locate a cat in the image with mask.",
    "What is the polygon mask of region. What is the region? What does the region describe?",
    "What text is in the region? Locate the bicycle and the truck in the image.",
]


# The post-processor configuration's keys: without all of them parsing raises "Unsupported parse task".
_POST_PROCESSOR_KEYS = (
    "ocr",
    "phrase_grounding",
    "pure_text",
    "description_with_bboxes",
    "description_with_polygons",
    "polygons",
    "bboxes",
    "description_with_bboxes_or_polygons",
)


def native_processor(image_processor: Any, tokenizer: Any) -> Any:
    """transformers' Florence2Processor over an image processor and a tokenizer that has ``image_token``."""
    from transformers import Florence2Processor

    return Florence2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        post_processor_config={key: {} for key in _POST_PROCESSOR_KEYS},
    )


def _tokenizer(vocab_size: int, base_vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import BartTokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=base_vocab,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.model.save(tmp)
        vocab = json.loads(Path(tmp, "vocab.json").read_text())
        lines = Path(tmp, "merges.txt").read_text().splitlines()
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#")]
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": IMAGE_TOKEN})
    tokenizer.add_tokens(list(FLORENCE_TOKENS), special_tokens=True)
    return tokenizer


def random_model(shape: str = "tiny", seed: int = 0, vocab_size: int | None = None) -> tuple[Any, Any]:
    """A random-weight Florence-2 ``(model, processor)`` of ``shape``, in memory, in fp32 on the CPU.

    ``vocab_size`` pads the text model's vocabulary past the tokenizer's (real
    checkpoints have about 51k entries; the test tokenizer about 1.4k-3k), so
    that timings include a vocabulary-sized output layer.
    """
    import torch
    from transformers import (
        BartConfig,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2VisionConfig,
    )
    from transformers.utils import logging as hf_logging

    if shape not in SHAPES:
        raise ValueError(f"Unknown shape {shape!r}; choose one of {', '.join(SHAPES)}.")
    dims = SHAPES[shape]
    tokenizer = _tokenizer(len(FLORENCE_TOKENS), base_vocab=2000 if dims["image_px"] >= 768 else 400)
    px = dims["image_px"]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the PIL-backend notice, once per build
    try:
        image_processor = CLIPImageProcessor(
            size={"height": px, "width": px},
            crop_size={"height": px, "width": px},
            do_center_crop=False,
            image_seq_length=image_tokens(shape),
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    processor = native_processor(image_processor, tokenizer)
    text = dims["text"]
    config = Florence2Config(
        vision_config=Florence2VisionConfig(**dims["vision"], drop_path_rate=0.0),
        text_config=BartConfig(
            vocab_size=max(len(tokenizer), vocab_size or 0),
            d_model=text["d_model"],
            encoder_layers=text["layers"],
            decoder_layers=text["layers"],
            encoder_attention_heads=text["heads"],
            decoder_attention_heads=text["heads"],
            encoder_ffn_dim=text["ffn"],
            decoder_ffn_dim=text["ffn"],
            max_position_embeddings=1024,
            bos_token_id=0,
            pad_token_id=1,
            eos_token_id=2,
            decoder_start_token_id=2,
            forced_eos_token_id=2,
            dropout=text.get("dropout", 0.1),  # BART's default; 0 lets the seeing shape learn in minutes
        ),
        image_token_id=tokenizer.image_token_id,
    )
    torch.manual_seed(seed)
    return Florence2ForConditionalGeneration(config).eval(), processor


def build_random_checkpoint(path: str | Path, shape: str = "tiny", seed: int = 0) -> Path:
    """Writes a random-weight Florence-2 checkpoint (safetensors) to ``path``.

    Args:
        path: the directory to write
        shape ("tiny"): ``tiny`` (about 1 MB), ``seeing`` (585k parameters, learns boxes on a CPU),
            ``base`` or ``large`` (Florence-2-base's or -large's dimensions)
        seed (0): the weight seed
    """
    model, processor = random_model(shape, seed)
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path

"""Original-format (remote-code) Florence-2 checkpoints converted to transformers' native format.

Only JSON, tokenizer text files and ``.safetensors`` of the source are read; none of its code is imported or
run, and nothing loads through ``auto_map``. The mapping itself is pure data (``core.original``); this module
reads tensors, builds the tokenizer and processor, and writes the native checkpoint into its destination the
way fine-tuning writes its output directory (staged, then moved into place; ``florence2-manifest.json``
lists what it wrote, and only that is ever replaced).
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.checkpoints import weights_fingerprint
from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.original import (
    FINAL_LOGITS_BIAS,
    IMAGE_TOKEN,
    TIED,
    TRANSPOSED,
    generation_settings,
    is_original_format,
    native_config,
    native_key,
    padded_rows,
    tokens_to_add,
)
from fiftyone_florence2.core.swap import MANIFEST, read_json, write_json
from fiftyone_florence2.engine.convert_files import (
    cache_name,
    cache_root,
    check_destination,
    made_once,
    read_config,
    source_directory,
    weights_paths,
    write_into,
)

logger = logging.getLogger(__name__)

SOURCE_RECORD = "florence2-converted-from.json"
# The original processor resizes with PIL. transformers' default image backend (torchvision) resizes bicubic
# differently (pixel values up to 0.017 apart), which changes some answers; PIL's gives the original's pixels
# exactly. A checkpoint's source record names its backend, and loading reads it (``image_backend_of``).
ORIGINAL_IMAGE_BACKEND = "pil"
IMAGE_BACKENDS = ("pil", "torchvision")
# The names a conversion writes (and only those a conversion's manifest lists are ever replaced).
CONVERTED_NAMES = (
    "config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
    "tokenizer_config.json", "chat_template.jinja", SOURCE_RECORD, MANIFEST,
)  # fmt: skip
_IMAGE_SETTINGS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                   "do_normalize", "image_mean", "image_std", "do_convert_rgb")  # fmt: skip


def convert_checkpoint(
    src: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False, revision: str | None = None
) -> Path:
    """Converts the original-format Florence-2 checkpoint ``src`` into a native checkpoint at ``dst``.

    Args:
        src: a local directory, or a Hub id (only its JSON, tokenizer and safetensors files are downloaded)
        dst: the directory to write; refused if it exists, unless ``overwrite`` and it holds an earlier
            conversion's output (only that output is replaced; other files stay)
        overwrite (False): replace an earlier conversion's output at ``dst``
        revision (None): a Hub branch, tag or commit of ``src``

    Refusals and failures write nothing at ``dst``. Returns ``dst``, resolved.
    """
    name = os.fspath(src)
    target = check_destination(Path(dst), overwrite, CONVERTED_NAMES)
    source = source_directory(name, revision)
    with tempfile.TemporaryDirectory(prefix=".florence2-convert-", dir=_scratch_parent(target)) as scratch:
        staged = Path(scratch) / "model"
        write_native(source, staged, name)
        record = {
            "source": name,
            "revision": revision,
            "source_sha256": weights_fingerprint(source),
            "image_backend": ORIGINAL_IMAGE_BACKEND,
        }
        write_json(staged / SOURCE_RECORD, record)
        write_into(staged, target, {"converted_from": record}, replace=overwrite)
    return target


def _scratch_parent(target: Path) -> Path:
    """Where a conversion stages: beside ``target`` (one file system, so the final moves are renames)."""
    parent = target if target.is_dir() else target.parent
    while not parent.exists():
        parent = parent.parent
    return parent


def write_native(source: Path, out: Path, name: str) -> None:
    """Writes the native checkpoint of the original-format checkpoint in ``source`` into ``out``."""
    original = read_config(source / "config.json", name)
    if not is_original_format(original):
        raise CheckpointError(
            f"Checkpoint {name!r} is not an original-format Florence-2 checkpoint; a native one loads as it is."
        )
    native_config(original, name)  # refuses an unrepresentable configuration before any weights are read
    tensors = read_weights(source, name)
    rows = int(tensors[TIED[0]].shape[0])
    tokenizer, suppress = build_tokenizer(source, rows, name)
    tensors = pad_rows(tensors, padded_rows(rows + 1))
    config = native_config(original, name, vocab_size=padded_rows(rows + 1), image_token_id=len(tokenizer) - 1)
    tied = "lm_head.weight" not in tensors
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = tied
    check_weights(config, tensors, name)
    out.mkdir(parents=True)
    _save_tensors(tensors, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    settings = generation_settings(original)
    settings["suppress_tokens"] = sorted({*settings.get("suppress_tokens", []), *suppress})
    (out / "generation_config.json").write_text(json.dumps(settings, indent=2))
    build_processor(source, tokenizer, config, name).save_pretrained(out)


def read_weights(source: Path, name: str) -> dict[str, Any]:
    """The source's tensors under their native names, in their own dtype: the projection transposed, the
    tied matrix once (``lm_head`` kept apart only where it differs), ``final_logits_bias`` checked zero."""
    import torch
    from safetensors import SafetensorError, safe_open

    from fiftyone_florence2.engine.weights import corrupt_weights_error

    tensors: dict[str, Any] = {}
    try:
        for path in weights_paths(source, name):
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (a safetensors file, not a dict)
                    target = native_key(key)
                    if target is not None:
                        tensors[target] = f.get_tensor(key)
                    elif key == FINAL_LOGITS_BIAS and bool(f.get_tensor(key).any()):
                        raise CheckpointError(
                            f"Checkpoint {name!r} cannot be converted: {FINAL_LOGITS_BIAS} is not all zeros, "
                            "and the native model has no output bias."
                        )
    except (SafetensorError, OSError) as e:
        raise corrupt_weights_error(str(source), e) from None
    if TRANSPOSED in tensors:
        tensors[TRANSPOSED] = tensors[TRANSPOSED].t().contiguous()
    present = [key for key in TIED if key in tensors]
    if not present:
        raise CheckpointError(f"Checkpoint {name!r} cannot be converted: its weights hold no token embeddings.")
    shared = tensors[present[0]]
    head = tensors.pop("lm_head.weight", shared)
    for key in TIED[1:3]:
        tensors.pop(key, None)
    tensors[TIED[0]] = shared
    if head.shape != shared.shape or not torch.equal(head, shared):
        # A fine-tune's output layer that training moved: kept as it is. The native model then ties nothing
        # (its input embeddings too follow tie_word_embeddings), so every copy is written out.
        tensors["lm_head.weight"] = head
        tensors.update({key: shared.clone() for key in TIED[1:3]})
    return tensors


def pad_rows(tensors: dict[str, Any], rows: int) -> dict[str, Any]:
    """The vocabulary-sized matrices with rows appended up to ``rows`` (``<image>``, then padding), each the
    mean of the matrix's own rows.

    Generation suppresses those rows, but beam search normalises before it suppresses, so their probability
    still counts. A mean row's logit is the mean of the original logits, so by Jensen's inequality the ``n``
    added rows hold at most ``n / (V + n)`` of the probability for any input (about 0.08% for Florence-2-base);
    zero rows (logit 0) have no such bound and can hold most of it where every original logit is negative.
    As inputs the rows are never read: the image features replace ``<image>``, and padding has no token.
    """
    import torch

    padded = dict(tensors)
    for key in TIED:
        if key in padded:
            matrix = padded[key]
            mean = matrix.float().mean(0).to(matrix.dtype)
            padded[key] = torch.cat([matrix, mean.expand(rows - matrix.shape[0], *matrix.shape[1:])])
    return padded


def check_weights(config: dict[str, Any], tensors: dict[str, Any], name: str) -> None:
    """Refuses weights that do not fit the native model the config describes (names and shapes); fills in
    the temporal embedding table, a fixed function of the config, where the source left it out."""
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration

    with torch.device("meta"):
        model = Florence2ForConditionalGeneration(Florence2Config(**config))
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    table = "model.multi_modal_projector.visual_temporal_embed.pos_idx_to_embed"
    if table not in tensors and table in expected:
        module = model.model.multi_modal_projector.visual_temporal_embed
        tensors[table] = module.get_sinusoid_embeddings(*expected[table]).to(tensors[TIED[0]].dtype)
    optional = set(TIED[1:])  # tied to the shared matrix on load
    unexpected = sorted(set(tensors) - set(expected))
    missing = sorted(set(expected) - set(tensors) - optional)
    wrong = sorted(key for key in set(tensors) & set(expected) if tuple(tensors[key].shape) != expected[key])
    for problem, keys in (("has weights the native model has no place for", unexpected),
                          ("lacks the weights", missing), ("has weights of the wrong shape", wrong)):  # fmt: skip
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise CheckpointError(f"Checkpoint {name!r} cannot be converted: it {problem} {', '.join(keys[:3])}{more}.")


def _save_tensors(tensors: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in tensors.items()}, str(path), metadata={"format": "pt"})


def build_tokenizer(source: Path, rows: int, name: str) -> tuple[Any, list[int]]:
    """The native tokenizer: the source's vocabulary and added tokens at their ids, Florence-2's tokens it
    lacks, fillers up to the embedding's ``rows``, then ``<image>``. Also the ids the original could not
    generate (``<image>`` and the padding rows), which generation must suppress."""
    from transformers import BartTokenizer

    vocab, merges, added = read_vocabulary(source, name)
    tokenizer = BartTokenizer(vocab=vocab, merges=merges)
    for token, _ in sorted(added.items(), key=lambda item: item[1]):
        if token not in tokenizer.get_vocab():
            tokenizer.add_tokens([token], special_tokens=True)
    have = tokenizer.get_vocab()
    moved = [token for token, index in {**vocab, **added}.items() if have.get(token) != index]
    if moved:
        raise CheckpointError(
            f"Checkpoint {name!r} cannot be converted: its tokenizer's ids are not contiguous ({moved[0]!r} "
            f"is {({**vocab, **added})[moved[0]]}, and would become {have.get(moved[0])})."
        )
    florence, filler = tokens_to_add(have, rows, name)
    tokenizer.add_tokens(florence, special_tokens=True)
    tokenizer.add_tokens(filler, special_tokens=False)
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    tokenizer._set_model_specific_special_tokens(special_tokens={"image_token": IMAGE_TOKEN})
    image_id = len(tokenizer) - 1
    return tokenizer, list(range(image_id, padded_rows(rows + 1)))


def read_vocabulary(source: Path, name: str) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int]]:
    """``(vocab, merges, added tokens)`` from ``vocab.json`` and ``merges.txt``, or from ``tokenizer.json``
    (a byte-level BPE, as Florence-2's BART tokenizer is); ``added_tokens.json`` adds to the added tokens."""
    tokenizer_json = read_json(source / "tokenizer.json") or {}
    model = tokenizer_json.get("model") or {}
    added = {entry["content"]: int(entry["id"]) for entry in tokenizer_json.get("added_tokens", [])}
    added.update(read_json(source / "added_tokens.json") or {})
    if (source / "vocab.json").is_file() and (source / "merges.txt").is_file():
        vocab = read_config(source / "vocab.json", name)
        lines = (source / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    elif model.get("type") == "BPE" and isinstance(model.get("vocab"), dict):
        vocab = model["vocab"]
        merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    else:
        raise CheckpointError(
            f"Checkpoint {name!r} cannot be converted: it has no BPE tokenizer (vocab.json and merges.txt, "
            "or tokenizer.json)."
        )
    return vocab, merges, {token: index for token, index in added.items() if token not in vocab}


def build_processor(source: Path, tokenizer: Any, config: dict[str, Any], name: str) -> Any:
    """The native processor: the source's image settings (``preprocessor_config.json``), the image token
    count its vision tower gives at that size, and the tokenizer."""
    from transformers import CLIPImageProcessor

    from fiftyone_florence2.engine.random_checkpoint import native_processor

    given = read_config(source / "preprocessor_config.json", name)
    settings = {key: given[key] for key in _IMAGE_SETTINGS if key in given}
    size = settings.get("size") or {"height": 768, "width": 768}
    height, width = (size.get("height"), size.get("width")) if "height" in size else (size.get("shortest_edge"),) * 2
    reduction = 1
    for stride in config["vision_config"]["patch_stride"]:
        reduction *= stride
    tokens = -(-int(height) // reduction) * -(-int(width) // reduction) + 1
    if given.get("image_seq_length", tokens) != tokens:
        raise CheckpointError(
            f"Checkpoint {name!r} cannot be converted: preprocessor_config.json's image_seq_length is "
            f"{given['image_seq_length']}, and its vision tower gives {tokens} tokens at {width}x{height}."
        )
    settings.setdefault("do_center_crop", False)
    image_processor = CLIPImageProcessor(**settings, image_seq_length=tokens)
    return native_processor(image_processor, tokenizer)


def record_of(checkpoint: str | os.PathLike) -> dict[str, Any] | None:
    """Where a converted checkpoint came from (its source record), or None for any other checkpoint."""
    return read_json(Path(checkpoint) / SOURCE_RECORD) if os.path.isdir(checkpoint) else None


def image_backend_of(checkpoint: str | os.PathLike) -> str | None:
    """The image processor backend ``checkpoint``'s record names (``"pil"`` for a conversion of an
    original-format checkpoint, or a merge into one); None where it names none (transformers' default)."""
    record = record_of(checkpoint) or {}
    # A conversion recorded before records named the backend: every conversion's source used PIL.
    backend = record.get("image_backend", ORIGINAL_IMAGE_BACKEND if "source_sha256" in record else None)
    if backend not in (None, *IMAGE_BACKENDS):
        raise CheckpointError(
            f"Checkpoint {os.fspath(checkpoint)!r}: {SOURCE_RECORD} names the image backend {backend!r}, and only "
            f"{' or '.join(map(repr, IMAGE_BACKENDS))} exist; convert the checkpoint again, or correct the file."
        )
    return backend


def original_source(checkpoint: str, revision: str | None = None) -> Path | None:
    """The directory holding ``checkpoint``'s files if it is in the original format, else None (a native
    checkpoint, or one whose config cannot be had: the ordinary loading path then says why)."""
    if os.path.isdir(checkpoint):
        config = read_json(Path(checkpoint) / "config.json")
        return Path(checkpoint) if config is not None and is_original_format(config) else None
    from huggingface_hub import hf_hub_download

    from fiftyone_florence2.core.checkpoints import hub_endpoint, hub_reachable

    hub = {"revision": revision, "endpoint": hub_endpoint()}
    try:
        path = hf_hub_download(checkpoint, "config.json", local_files_only=True, **hub)
    except Exception:  # not cached (the Hub client's errors have no common class)
        if not hub_reachable(checkpoint, revision):
            return None
        try:
            path = hf_hub_download(checkpoint, "config.json", **hub)
        except Exception:
            return None
    config = read_json(Path(path))
    if config is None or not is_original_format(config):
        return None
    return source_directory(checkpoint, revision)


def cached_conversion(checkpoint: str, revision: str | None = None) -> str | None:
    """The native conversion of an original-format ``checkpoint``, made once into the cache and reused while
    the source's files are unchanged; None for a native checkpoint. Two processes converting at once both
    end with the one complete copy (each stages its own, and the first rename wins)."""
    source = original_source(checkpoint, revision)
    if source is None:
        return None
    fingerprint = weights_fingerprint(source) or ""
    target = cache_root() / cache_name(checkpoint, fingerprint)
    if made_once(target, lambda path: convert_checkpoint(source, path)):
        logger.warning(
            "Converted the original-format Florence-2 checkpoint %s to transformers' native format in %s "
            "(once: later loads reuse it). To convert ahead of time: florence2 convert %s DST",
            checkpoint, target, shlex.quote(checkpoint),
        )  # fmt: skip
    return str(target)


def checkpoint_to_load(checkpoint: str, revision: str | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(checkpoint, revision, converted_from)`` to load: an original-format checkpoint's cached native
    conversion (no revision: it is a local directory) and where it came from; any other checkpoint as it is."""
    converted = cached_conversion(checkpoint, revision)
    if converted is None:
        return checkpoint, revision, None
    return converted, None, {**(record_of(converted) or {}), "source": checkpoint, "revision": revision}

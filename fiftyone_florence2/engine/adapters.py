"""peft LoRA adapters merged into their base: a native checkpoint that labels at full speed, with no peft.

The base (``base_model_name_or_path``, or the ``base`` given) is a native checkpoint or an original-format one,
which is converted first (``engine.convert``); the adapter's weight names follow the base's layout, so for an
original-format base they are renamed as its weights are. Each targeted weight gets ``scale * B @ A``, added
as peft's ``merge_and_unload`` adds it; weights saved whole replace the base's. The result is written the way a
conversion is (staged, then moved into place, its manifest listing what it wrote). Only JSON and
``.safetensors`` are read: ``adapter_model.bin`` is refused, as pickled weights are everywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterWeight,
    adapter_weight,
    check_adapter_settings,
    lora_scale,
    refusal,
)
from fiftyone_florence2.core.checkpoints import looks_like_path, weights_fingerprint
from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.original import TIED, TRANSPOSED, is_original_format, native_key
from fiftyone_florence2.core.swap import write_json
from fiftyone_florence2.engine.convert import (
    CONVERTED_NAMES,
    ORIGINAL_IMAGE_BACKEND,
    SOURCE_RECORD,
    _scratch_parent,
    checkpoint_to_load,
    image_backend_of,
    record_of,
    write_native,
)
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


def adapter_to_load(checkpoint: str) -> tuple[str, dict[str, Any]] | None:
    """``(merged checkpoint, where it came from)`` for a local adapter directory, merged once into the cache
    (beside the conversions) and reused while the adapter and a local base are unchanged; None otherwise."""
    if not is_adapter(checkpoint):
        return None
    folder = Path(checkpoint).resolve()
    settings = read_adapter_settings(folder, str(folder))
    base = base_directory(settings["base_model_name_or_path"], folder, str(folder))
    digest = hashlib.sha256(f"{weights_fingerprint(str(folder))}:{weights_fingerprint(str(base))}".encode())
    target = cache_root() / cache_name(str(folder), digest.hexdigest())
    if made_once(target, lambda path: merge_adapter(folder, path)):
        logger.warning(
            "Merged the LoRA adapter %s into its base %s, as a native checkpoint in %s (once: later loads reuse "
            "it). To merge ahead of time: fiftyone_florence2.merge_adapter(%s, DST)",
            folder, settings["base_model_name_or_path"], target, shlex.quote(str(folder)),
        )  # fmt: skip
    return str(target), {**(record_of(target) or {}), "source": str(folder)}


def native_to_load(checkpoint: str, revision: str | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """``(checkpoint, revision, converted_from)`` to load: an adapter's cached merge, an original-format
    checkpoint's cached conversion, or any other checkpoint as it is (see ``convert.checkpoint_to_load``)."""
    merged = adapter_to_load(checkpoint)
    return (merged[0], None, merged[1]) if merged is not None else checkpoint_to_load(checkpoint, revision)


def is_adapter(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a local peft adapter directory (it holds ``adapter_config.json``)."""
    return os.path.isfile(os.path.join(os.fspath(path), ADAPTER_CONFIG))


def merge_adapter(
    adapter: str | os.PathLike, dst: str | os.PathLike, overwrite: bool = False, base: str | None = None
) -> Path:
    """Merges the peft LoRA adapter directory ``adapter`` into its base and writes a native checkpoint at ``dst``.

    Args:
        adapter: a local adapter directory (``adapter_config.json``, ``adapter_model.safetensors``)
        dst: the directory to write; refused if it exists, unless ``overwrite`` and it holds an earlier
            conversion's or merge's output (only that output is replaced)
        overwrite (False): replace an earlier output at ``dst``
        base (None): the base checkpoint (a local directory or a Hub id); the adapter's
            ``base_model_name_or_path`` when None

    Refusals and failures write nothing at ``dst``. Returns ``dst``, resolved.
    """
    folder = Path(adapter).expanduser().resolve()
    name = str(folder)
    settings = read_adapter_settings(folder, name)
    target = check_destination(Path(dst), overwrite, CONVERTED_NAMES)
    base_name = base or settings["base_model_name_or_path"]
    source = base_directory(base_name, folder, name)
    adapter_tensors = read_adapter_tensors(folder, name)
    with tempfile.TemporaryDirectory(prefix=".florence2-merge-", dir=_scratch_parent(target)) as scratch:
        staged = Path(scratch) / "model"
        original = is_original_format(read_config(source / "config.json", base_name))
        if original:
            write_native(source, staged, base_name)
            tensors = _read_tensors([staged / "model.safetensors"], base_name)
        else:
            copy_native(source, staged, base_name)
            tensors = _read_tensors(weights_paths(source, base_name), base_name)
        merged = merge_tensors(tensors, adapter_tensors, settings, name, native_key if original else None)
        _save(merged, staged)
        record = {
            "source": name,
            "adapter_sha256": weights_fingerprint(str(folder)),
            "base": base_name,
            "base_sha256": weights_fingerprint(str(source)),
        }
        # The merge sees pixels as its base does: an original-format base's (or its conversion's) through PIL.
        backend = ORIGINAL_IMAGE_BACKEND if original else image_backend_of(source)
        if backend is not None:
            record["image_backend"] = backend
        write_json(staged / SOURCE_RECORD, record)
        write_into(staged, target, {"converted_from": record}, replace=overwrite)
    return target


def read_adapter_settings(folder: Path, name: str) -> dict[str, Any]:
    """The adapter's checked ``adapter_config.json``."""
    if not folder.is_dir():
        raise refusal(name, "it is not a directory that exists")
    return check_adapter_settings(read_config(folder / ADAPTER_CONFIG, name), name)


def base_directory(base: str, folder: Path, name: str) -> Path:
    """The base checkpoint's directory: a path as given, or beside the adapter; else a Hub id's files."""
    if looks_like_path(base):
        for candidate in (Path(base).expanduser(), folder / base):
            if candidate.is_dir():
                return candidate.resolve()
        raise refusal(name, f"its base {base!r} (base_model_name_or_path) is not a directory that exists; pass base=")
    return source_directory(base)


def read_adapter_tensors(folder: Path, name: str) -> dict[str, Any]:
    """The adapter's tensors by their saved names; refuses pickled or missing weights."""
    path = folder / ADAPTER_WEIGHTS
    if not path.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise refusal(
                name,
                "its weights are only adapter_model.bin, which is never loaded (torch.load is not a safe loader); "
                "save the adapter with safetensors (peft's save_pretrained does by default)",
            )
        raise refusal(name, f"it has no {ADAPTER_WEIGHTS}")
    return _read_tensors([path], name)


def _read_tensors(paths: list[Path], name: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in paths:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{name!r}: {path.name} does not read as safetensors ({e}).") from None
    return tensors


def copy_native(source: Path, out: Path, name: str) -> None:
    """A native checkpoint's configuration, generation settings and processor, written into ``out``."""
    from transformers import Florence2Processor

    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(read_config(source / "config.json", name), indent=2))
    if (source / "generation_config.json").is_file():
        settings = read_config(source / "generation_config.json", name)
        (out / "generation_config.json").write_text(json.dumps(settings, indent=2))
    Florence2Processor.from_pretrained(str(source)).save_pretrained(str(out))


def merge_tensors(
    tensors: dict[str, Any], adapter: dict[str, Any], settings: dict[str, Any], name: str, rename=None
) -> dict[str, Any]:
    """The base's ``tensors`` with the adapter merged in; ``rename`` maps an adapter weight's name to the
    base's (original-format names to native ones), or None when they already match."""
    merged = dict(tensors)
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in adapter.items():
        place = adapter_weight(key, name)
        target = _native_name(place, rename, tensors, name)
        if place.part == "whole":
            _check_shape(merged, target, tensor, key, name)
            dtype = merged.get(target, merged[TIED[0]]).dtype  # the checkpoint keeps one dtype
            merged[target] = (tensor.t().contiguous() if target == TRANSPOSED else tensor).to(dtype)
        else:
            pairs.setdefault(target, {"module": place.target.removesuffix(".weight")})[place.part] = tensor
    for target, pair in pairs.items():
        if "lora_A" not in pair or "lora_B" not in pair:
            raise refusal(name, f"{pair['module']} has only one of lora_A and lora_B; the adapter file is incomplete")
        merged[target] = _merged(merged[target], pair, lora_scale(settings, pair["module"]), name)
    _untie_if_moved(merged)
    return merged


def _native_name(place: AdapterWeight, rename, tensors: dict[str, Any], name: str) -> str:
    """The base weight an adapter tensor changes; ``lm_head`` saved whole becomes an output layer of its own."""
    target = rename(place.target) if rename else place.target
    module = place.target.removesuffix(".weight")
    if target in TIED[:3]:
        raise refusal(name, f"it changes {module}, the token embeddings, which a merge does not change")
    if target == "lm_head.weight" and target not in tensors:
        if place.part != "whole":
            raise refusal(name, f"it has LoRA on {module}, which the base ties to the token embeddings")
        return target
    if target is None or target not in tensors:
        raise refusal(name, f"it targets {module}, which the base checkpoint has no weight for")
    return target


def _check_shape(tensors: dict[str, Any], target: str, tensor: Any, key: str, name: str) -> None:
    base = tensors.get(target, tensors.get(TIED[0]))
    shape = tuple(tensor.t().shape) if target == TRANSPOSED else tuple(tensor.shape)
    if shape != tuple(base.shape):
        raise refusal(name, f"{key} has shape {tuple(tensor.shape)}, and the base's has {tuple(base.shape)}")


def _merged(weight: Any, pair: dict[str, Any], scale: float, name: str) -> Any:
    """``weight + scale * B @ A``, as peft's merge adds it; conv LoRA (4-d weights) is refused."""
    a, b = pair["lora_A"], pair["lora_B"]
    if weight.dim() != 2 or a.dim() != 2 or b.dim() != 2:
        raise refusal(name, f"{pair['module']} is not a linear layer; LoRA on convolutions is not merged")
    if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(weight.shape):
        raise refusal(
            name,
            f"{pair['module']}'s lora_B {tuple(b.shape)} @ lora_A {tuple(a.shape)} does not fit its weight "
            f"{tuple(weight.shape)}; is the adapter for another base?",
        )
    delta = (b @ a) * scale
    return weight + delta.to(weight.dtype)


def _untie_if_moved(merged: dict[str, Any]) -> None:
    """Drops ``lm_head.weight`` when it equals the shared embeddings again (tied); kept apart otherwise."""
    import torch

    head = merged.get("lm_head.weight")
    if head is not None and TIED[0] in merged and torch.equal(head, merged[TIED[0]]):
        del merged["lm_head.weight"]


def _save(tensors: dict[str, Any], staged: Path) -> None:
    """Writes the merged weights, and says in the config whether ``lm_head`` is tied to the embeddings."""
    from safetensors.torch import save_file

    for path in staged.glob("*.safetensors*"):
        path.unlink()
    if "lm_head.weight" in tensors:  # untied, transformers ties the encoder's and decoder's embeddings no more
        tensors = {**tensors, TIED[1]: tensors[TIED[0]], TIED[2]: tensors[TIED[0]]}
    copies = {key: value.contiguous().clone() for key, value in tensors.items()}  # safetensors stores no shared memory
    save_file(copies, str(staged / "model.safetensors"), {"format": "pt"})
    config = json.loads((staged / "config.json").read_text())
    tied = "lm_head.weight" not in tensors
    config["tie_word_embeddings"] = tied
    if isinstance(config.get("text_config"), dict):
        config["text_config"]["tie_word_embeddings"] = tied
    (staged / "config.json").write_text(json.dumps(config, indent=2))

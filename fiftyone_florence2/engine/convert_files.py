"""The files around a conversion: the source's (local, or downloaded without any code), and the destination's
rules (what may be written, replaced or kept), which are fine-tuning's output-directory rules."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.checkpoints import BIN_ONLY, hub_endpoint, hub_reachable, looks_like_path
from fiftyone_florence2.core.errors import CheckpointError, OptionError, literal
from fiftyone_florence2.core.options import Option
from fiftyone_florence2.core.swap import (
    JOURNAL,
    MANIFEST,
    STAGED_MODEL,
    STAGING,
    file_above,
    finish_swap,
    foreign_entries,
    manifest_files,
    read_json,
    remove_entry,
    write_json,
)

# What a Hub download of an original-format checkpoint fetches: configs, tokenizer text, safetensors; never code
# (``*.py``) and never pickles (``*.bin``).
SOURCE_FILES = ("*.json", "*.safetensors", "*.txt")
OVERWRITE = Option("overwrite", False, "replace an earlier conversion's output in DST", "bool", form=False)


def read_config(path: Path, name: str) -> dict[str, Any]:
    """A JSON object from the checkpoint, or a one-line refusal naming the file."""
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {name!r} cannot be converted: it has no {path.name}.")
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"Checkpoint {name!r} cannot be converted: {path.name} does not read ({e}).") from None
    if not isinstance(found, dict):
        raise CheckpointError(f"Checkpoint {name!r} cannot be converted: {path.name} is not a JSON object.")
    return found


def weights_paths(source: Path, name: str) -> list[Path]:
    """The source's ``model.safetensors`` (a sharded checkpoint's shards, from its index); refuses
    ``.bin``-only weights."""
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_config(index, name).get("weight_map", {}).values()))
        missing = [shard for shard in shards if not (source / shard).is_file()]
        if missing:
            raise CheckpointError(
                f"Checkpoint {name!r} cannot be converted: it lacks the shard(s) {', '.join(missing)}."
            )
        return [source / shard for shard in shards]
    # Only the file transformers itself loads: another *.safetensors beside it (an adapter, a training
    # state, saved tensors) is not the model's, and reading it too would mix foreign tensors in.
    single = source / "model.safetensors"
    if single.is_file():
        return [single]
    if any(source.glob("*.bin")):
        raise CheckpointError(f"Checkpoint {name!r} {BIN_ONLY}.")
    raise CheckpointError(f"Checkpoint {name!r} cannot be converted: it has no weights (model.safetensors).")


def source_directory(name: str, revision: str | None = None) -> Path:
    """A local checkpoint directory as it is, or a Hub checkpoint's JSON, tokenizer and safetensors files
    (from the local Hugging Face cache when they are there; never a ``.py`` or ``.bin``)."""
    if looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if not path.is_dir():
            raise CheckpointError(f"Checkpoint {str(path)!r} is not a directory that exists.")
        return path
    from huggingface_hub import snapshot_download

    hub = {"revision": revision, "allow_patterns": list(SOURCE_FILES), "endpoint": hub_endpoint()}
    try:
        cached = Path(snapshot_download(name, local_files_only=True, **hub))
        if _has_weights(cached, name):  # a snapshot whose config.json alone was fetched is not enough
            return cached
    except Exception:  # not in the cache (the Hub client's errors have no common class)
        pass
    if not hub_reachable(name, revision):
        raise CheckpointError(
            f"The Hugging Face Hub is not reachable, so {name!r} cannot be downloaded; "
            "pass a local checkpoint directory instead."
        )
    try:
        return Path(snapshot_download(name, **hub))
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(f"Downloading {name!r} failed ({reason}).") from None


def _has_weights(path: Path, name: str) -> bool:
    try:
        return (path / "config.json").is_file() and bool(weights_paths(path, name))
    except CheckpointError:
        return False


def _refusal(template: str) -> OptionError:
    return OptionError(template, OVERWRITE)


def _converted(path: Path) -> bool:
    """Whether the manifest in ``path`` is a conversion's (a fine-tuning run's output is not ours to replace)."""
    return "converted_from" in ((read_json(path / MANIFEST) or {}).get("settings") or {})


def check_destination(dst: Path, overwrite: bool, names: tuple[str, ...]) -> Path:
    """The resolved destination, if a conversion may write there; else a one-line refusal."""
    path = dst.expanduser().resolve()
    shown = literal(repr(str(path)))
    blocker = file_above(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"lies under the file {str(blocker)!r}"
        raise _refusal(f"The destination {shown} {literal(what)}: choose a directory.")
    if not path.exists() or not any(path.iterdir()):
        return path
    if manifest_files(path) and not _converted(path):
        raise _refusal(f"The destination {shown} holds a training run's output: choose another directory.")
    foreign = foreign_entries(path, names)
    if foreign:
        raise _refusal(
            f"The destination {shown} holds {literal(', '.join(foreign[:5]))}, which no conversion wrote there "
            "and a conversion would replace: move them, or choose another directory."
        )
    if not overwrite:
        raise _refusal(
            f"The destination {shown} exists: pass {{overwrite}} to replace it, or choose another directory."
        )
    return path


def write_into(staged: Path, target: Path, settings: dict[str, Any], replace: bool = False) -> None:
    """Moves the complete checkpoint ``staged`` into ``target``: a new directory appears whole (one rename);
    with ``replace``, an earlier conversion's files are replaced through the journal that fine-tuning's swaps
    use, and any other file in ``target`` stays."""
    files = sorted(os.listdir(staged))
    if not replace and target.is_dir() and any(target.iterdir()):
        # Written since the destination was checked (another process converting the same source): theirs
        # stays, never swapped under a process that may be loading it.
        shown = literal(repr(str(target)))
        raise _refusal(f"The destination {shown} was written meanwhile: pass {{overwrite}} to replace it, or use it.")
    if not target.exists():
        write_json(staged / MANIFEST, {"files": files, "settings": settings})
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged, target)  # refused if another conversion got there first: theirs stays
        return
    finish_swap(target)
    remove_entry(target / STAGING)
    (target / STAGING).mkdir()
    os.rename(staged, target / STAGING / STAGED_MODEL)
    ours = set(manifest_files(target)) - {MANIFEST}
    write_json(target / JOURNAL, {"files": files, "replaces": sorted(ours), "settings": settings})
    finish_swap(target)


def made_once(target: Path, make: Callable[[Path], object]) -> bool:
    """Makes the cache entry ``target`` with ``make`` unless a complete one (its manifest written) is there;
    whether this call made it. Processes making one entry at once each stage their own copy: the first moved
    into place stays, and the others end using it."""
    if (target / MANIFEST).is_file():
        return False
    try:
        make(target)
    except (OSError, ValueError):  # a refusal, or a failed rename: fine if another process finished first
        if not (target / MANIFEST).is_file():
            raise
        return False
    return True


def cache_root() -> Path:
    """Where loading keeps the checkpoints it converted: ``$FLORENCE2_CACHE``, else
    ``~/.cache/fiftyone-florence2``, under ``converted/``."""
    root = os.environ.get("FLORENCE2_CACHE") or os.path.join("~", ".cache", "fiftyone-florence2")
    return Path(root).expanduser() / "converted"


def cache_name(source: str, fingerprint: str) -> str:
    """A cache folder's name: the source's last part (readable) and its files' fingerprint (what decides)."""
    readable = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(source.rstrip("/")).name)
    return f"{readable or 'checkpoint'}-{fingerprint[:16]}"

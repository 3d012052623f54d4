"""Checkpoint names and checks that need no torch: Hub ids, local directories, remote code."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fiftyone_florence2.core.adapters import ADAPTER_CONFIG
from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.original import is_original_format
from fiftyone_florence2.core.seeing import SEEING_DIR, SEEING_NAME

DEFAULT_CHECKPOINT = "florence-community/Florence-2-base-ft"
# transformers' native Florence-2 format, safetensors weights, no remote code.
NATIVE_CHECKPOINTS = (
    "florence-community/Florence-2-base",
    "florence-community/Florence-2-base-ft",
    "florence-community/Florence-2-large",
    "florence-community/Florence-2-large-ft",
)
# Why pickled weights are refused, and what to do instead.
BIN_ONLY = (
    "has only pickled weights (*.bin), which are never loaded: torch.load is not a safe loader, even with "
    "weights_only=True (CVE-2025-32434, CVE-2026-24747). Convert them to safetensors where you trust the file "
    "(safetensors.torch.save_file), or use a revision of the checkpoint that has model.safetensors"
)


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub id (``org/name``)."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") != 1 or os.path.exists(name)


def resolve_checkpoint(name: str | os.PathLike | None) -> str:
    """Returns a local checkpoint as an absolute, checked directory, or a Hub id unchanged; the shipped model's
    name (``florence2-seeing-tiny``) gives its directory."""
    name = os.fspath(name).strip() if name is not None else ""
    if not name:
        raise CheckpointError("No checkpoint given: pass a Hub id or a local directory.")
    if name == SEEING_NAME:
        name = str(SEEING_DIR)
    if not looks_like_path(name):
        return name
    path = Path(name).expanduser().resolve()
    if not path.is_dir():
        raise CheckpointError(f"Local checkpoint {str(path)!r} is not a directory that exists.")
    if (path / ADAPTER_CONFIG).is_file():  # a LoRA adapter: merged into its base when it loads
        return str(path)
    missing = [f for f in ("config.json", "preprocessor_config.json|processor_config.json") if not _has(path, f)]
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")):
            raise CheckpointError(f"Checkpoint {str(path)!r} {BIN_ONLY}.")
        missing.append("*.safetensors weights")
    if missing:
        raise CheckpointError(
            f"Local checkpoint {str(path)!r} lacks {', '.join(m.split('|')[-1] for m in missing)}; "
            "only checkpoints in transformers' native Florence-2 format, with safetensors weights, load."
        )
    return str(path)


# The files of a local checkpoint that decide its answers: the weights, and the model, generation,
# processor and tokenizer files transformers reads beside them (JSON, merges.txt, sentencepiece models,
# templates). Training's own record, written after the weights, and its checkpoints/ folder do not.
_WEIGHTS_SUFFIXES = (".safetensors", ".json", ".txt", ".model", ".jinja")
_NOT_WEIGHTS = ("training.json",)

# One entry per file: (name, size, mtime_ns, ctime_ns, inode).
WeightsStat = tuple[tuple[str, int, int, int, int], ...]


def weights_files(directory: str | os.PathLike) -> list[Path]:
    """The files that decide a local checkpoint's answers, by name (see ``_WEIGHTS_SUFFIXES``)."""
    files = Path(directory).iterdir() if os.path.isdir(directory) else ()
    return sorted(
        path for path in files if path.suffix in _WEIGHTS_SUFFIXES and path.name not in _NOT_WEIGHTS and path.is_file()
    )


def weights_stat(checkpoint: str | os.PathLike) -> WeightsStat | None:
    """A cheap key that changes whenever a local checkpoint's files change; None for a Hub id.

    It reads no file: names, sizes, ``mtime_ns``, ``ctime_ns`` and inodes.
    ``ctime`` is what makes it sound: every write, rename into place or
    ``os.utime`` sets it, and no copying tool can preserve it, so a file
    rewritten with its size and ``mtime`` kept still changes the key. (A
    ``chmod`` changes it too: one needless reload, never a stale model.)
    """
    if not os.path.isdir(checkpoint):
        return None
    entries = []
    for path in weights_files(checkpoint):
        stat = path.stat()
        entries.append((path.name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
    return tuple(entries)


def weights_fingerprint(checkpoint: str | os.PathLike) -> str | None:
    """The sha256 of a local checkpoint's deciding files (:func:`weights_files`); None for a Hub id.

    Each file adds its name and its content's sha256, so two versions of
    one directory differ whenever any byte differs, whatever their sizes and
    times. It reads every byte (about a second per GB), so it is taken
    once per load, never per lookup: :func:`weights_stat` tells whether the
    files changed since.
    """
    if not os.path.isdir(checkpoint):
        return None
    digest = hashlib.sha256()
    for path in weights_files(checkpoint):
        digest.update(f"{path.name}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def snapshot_commit(cached_path: str | os.PathLike | None) -> str | None:
    """The commit a file in the Hugging Face cache came from (``.../snapshots/<commit>/<file>``), or None."""
    if not cached_path:
        return None
    folder = Path(cached_path).parent
    return folder.name if folder.parent.name == "snapshots" else None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _has(path: Path, names: str) -> bool:
    return any((path / name).is_file() for name in names.split("|"))


def check_native_config(config: dict, name: str) -> None:
    """Refuses checkpoints that are not Florence-2, or that need remote code and are not in the original
    Florence-2 format (which loads converted, its code never run)."""
    if "auto_map" in config and not is_original_format(config):
        raise CheckpointError(
            f"Checkpoint {name!r} declares remote code (auto_map), which is never run, and is not an "
            f"original-format Florence-2 checkpoint that could be converted. Use a checkpoint such as "
            f"{DEFAULT_CHECKPOINT!r}."
        )
    if config.get("model_type") != "florence2":
        raise CheckpointError(f"Checkpoint {name!r} is a {config.get('model_type')!r} model, not Florence-2.")


def hub_endpoint() -> str:
    """The Hub's URL as ``HF_ENDPOINT`` says now (``huggingface_hub`` reads it once, when imported)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(repo_id: str | None = None, revision: str | None = None, timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers, within ``timeout`` seconds, the request loading starts with.

    A real HTTP request (for ``repo_id``, the model API that loading calls
    first), not a TCP connect: a proxy or firewall that accepts connections
    and never answers counts as unreachable.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = hub_endpoint()
    url = endpoint
    if repo_id:
        quoted_revision = urllib.parse.quote(revision or "main", safe="")
        url = f"{endpoint}/api/models/{urllib.parse.quote(repo_id)}/revision/{quoted_revision}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            response.read(1)
            return True
    except urllib.error.HTTPError:
        return True  # it answered, if only with an error status (a missing or private repo, say)
    except (OSError, ValueError):  # URLError, timeouts, refused connections, malformed endpoints
        return False

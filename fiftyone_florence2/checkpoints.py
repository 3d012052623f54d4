"""Checkpoint names and checks that need no torch: Hub ids, local directories, remote code."""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .seeing import SEEING_DIR, SEEING_NAME

DEFAULT_CHECKPOINT = "florence-community/Florence-2-base-ft"
# transformers' native Florence-2 format, safetensors weights, no remote code.
NATIVE_CHECKPOINTS = (
    "florence-community/Florence-2-base",
    "florence-community/Florence-2-base-ft",
    "florence-community/Florence-2-large",
    "florence-community/Florence-2-large-ft",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot or must not be loaded."""


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
    missing = [f for f in ("config.json", "preprocessor_config.json|processor_config.json") if not _has(path, f)]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        raise CheckpointError(
            f"Local checkpoint {str(path)!r} lacks {', '.join(m.split('|')[-1] for m in missing)}; "
            "only checkpoints in transformers' native Florence-2 format, with safetensors weights, load."
        )
    return str(path)


def _has(path: Path, names: str) -> bool:
    return any((path / name).is_file() for name in names.split("|"))


def corrupt_weights_error(checkpoint: str, error: Exception) -> CheckpointError:
    """The error for weights that safetensors could not read: it names the file and the directory.

    ``error`` is safetensors' own (which names no file). In a local
    directory, each ``*.safetensors`` file's header is read again to find the
    one at fault; a Hub checkpoint's files are in the Hugging Face cache.
    """
    reason = str(error).strip() or type(error).__name__
    if not os.path.isdir(checkpoint):
        return CheckpointError(
            f"The weights of checkpoint {checkpoint!r} are corrupt or incomplete ({reason}). "
            f"Remove its copy from the Hugging Face cache (hf cache rm model/{checkpoint}) to download it again."
        )
    bad = [(path, why) for path in sorted(Path(checkpoint).glob("*.safetensors")) if (why := _unreadable(path))]
    path, reason = bad[0] if bad else (Path(checkpoint), reason)
    return CheckpointError(
        f"The weights in {str(path)!r} are corrupt or incomplete ({reason}); "
        f"copy or download the checkpoint {checkpoint!r} again."
    )


def _unreadable(path: Path) -> str | None:
    """Why the safetensors file at ``path`` does not read (its header and size), or None."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            return None
    except Exception as e:  # SafetensorError, OSError: the reason is what the message shows
        return str(e).strip() or type(e).__name__


def check_native_config(config: dict, name: str) -> None:
    """Refuses checkpoints that need remote code or are not Florence-2."""
    if "auto_map" in config:
        raise CheckpointError(
            f"Checkpoint {name!r} declares remote code (auto_map), which is never run. "
            f"Use a native checkpoint such as {DEFAULT_CHECKPOINT!r}."
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

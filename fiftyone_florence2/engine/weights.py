"""A checkpoint directory's weights files before they load: a swap a kill cut short is finished, and a file
that does not read is named with why (safetensors names no file in its errors)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from fiftyone_florence2.core.errors import CheckpointError
from fiftyone_florence2.core.swap import finish_swap


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


def finish_cut_short_swap(checkpoint: str) -> None:
    """A fine-tuned checkpoint whose replacement a kill cut short is finished before it loads, so that it
    loads as one run's checkpoint (a directory that cannot be written to loads as it is)."""
    if os.path.isdir(checkpoint):
        with contextlib.suppress(OSError):
            finish_swap(Path(checkpoint))

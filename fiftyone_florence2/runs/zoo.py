"""The repository as a FiftyOne remote model source: download and load the checkpoints ``manifest.json`` lists.

FiftyOne imports the source's ``__init__.py`` (the repository root's) from
its copy under ``fo.config.model_zoo_dir`` and calls
``download_model(model_name, model_path)`` and
``load_model(model_name, model_path, **kwargs)``; the root file delegates to
the functions here. ``model_name`` is a Hub id of
:data:`~fiftyone_florence2.core.checkpoints.NATIVE_CHECKPOINTS` and
``model_path`` the directory named by its ``base_filename``. See ``docs/ZOO.md``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fiftyone_florence2.core.checkpoints import (
    CheckpointError,
    check_native_config,
    hub_endpoint,
    hub_reachable,
    resolve_checkpoint,
)

logger = logging.getLogger(__name__)

# transformers' native format: safetensors weights, configs, tokenizer and processor files; no pickles, no code.
CHECKPOINT_FILES = ("*.safetensors", "*.json", "*.txt")
# What the zoo entry decides (its Hub id, downloaded to model_path), so a caller cannot pass them.
ZOO_FIXED_OPTIONS = ("model", "revision")
HUB_TIMEOUT_S = 10.0
_PARTIAL = ".partial"


def checkpoint_problem(model_path: str | os.PathLike) -> str | None:
    """Why ``model_path`` is not a complete native checkpoint (a sentence), or None if it is one."""
    try:
        path = Path(resolve_checkpoint(model_path))
    except CheckpointError as e:
        return str(e)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(shard for shard in shards if not (path / shard).is_file())
        if missing:
            return f"Local checkpoint {str(path)!r} lacks the weight shard(s) {', '.join(missing)}."
    return None


def download_model(model_name: str, model_path: str) -> None:
    """Downloads the Hub checkpoint ``model_name`` (native safetensors files only) into ``model_path``.

    A complete checkpoint already at ``model_path`` is kept, and nothing is
    downloaded (FiftyOne asks again before every load). Anything else there is
    never overwritten: it is refused with the reason. The files arrive in
    ``<model_path>.partial`` (a rerun resumes there), which becomes
    ``model_path`` once complete. An unreachable Hub fails at once, in one line.
    """
    if os.path.lexists(model_path):
        problem = checkpoint_problem(model_path)
        if problem is None:
            logger.debug("Zoo model %s is already at %s", model_name, model_path)
            return
        raise CheckpointError(
            f"{problem} It is where the zoo keeps {model_name!r}: complete it, or remove it to download again."
        )
    if not hub_reachable(model_name, timeout=HUB_TIMEOUT_S):
        raise CheckpointError(
            f"Cannot download {model_name!r}: the Hugging Face Hub is not reachable (offline, HF_HUB_OFFLINE set, "
            f"or no answer within {HUB_TIMEOUT_S:g} s). Copy the checkpoint directory (transformers' native "
            f"format) to {model_path!r} instead, or retry where the Hub is reachable."
        )
    partial = model_path + _PARTIAL
    _fetch(model_name, partial)
    os.replace(partial, model_path)
    logger.info("Downloaded %s to %s", model_name, model_path)


def _fetch(repo_id: str, local_dir: str) -> None:
    """The checkpoint's files into ``local_dir``; its config is checked before any weights download."""
    from huggingface_hub import hf_hub_download, snapshot_download

    fresh = not os.path.exists(local_dir)
    hub = {"local_dir": local_dir, "endpoint": hub_endpoint()}  # the Hub that hub_reachable asked
    try:
        config = hf_hub_download(repo_id, "config.json", **hub)
        check_native_config(json.loads(Path(config).read_text()), repo_id)
        snapshot_download(repo_id, allow_patterns=list(CHECKPOINT_FILES), **hub)
    except CheckpointError:
        if fresh:  # refused: remove what this call created, and only that
            shutil.rmtree(local_dir, ignore_errors=True)
        raise
    except Exception as e:  # the Hub client's HTTP and file errors, whatever their class
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CheckpointError(
            f"Downloading {repo_id!r} failed ({reason}); run again to resume into {local_dir!r}."
        ) from None
    problem = checkpoint_problem(local_dir)
    if problem is not None:
        raise CheckpointError(f"{repo_id!r} downloaded incompletely: {problem}")


def load_model(model_name: str, model_path: str, **options: Any):
    """A :class:`~fiftyone_florence2.runs.model.Florence2Model` for the checkpoint at ``model_path``.

    ``options`` are :func:`fiftyone_florence2.load_model`'s (``task``,
    ``prompt``, ``classes``, ... as ``docs/OPTIONS.md`` lists them), less
    ``model`` and ``revision``: the zoo model is its checkpoint.
    """
    fixed = [name for name in ZOO_FIXED_OPTIONS if name in options]
    if fixed:
        raise ValueError(
            f"{' and '.join(fixed)} cannot be passed to the zoo model {model_name!r}: it is the checkpoint at "
            f"{model_path!r}. Load another zoo model, or use fiftyone_florence2.load_model(model=...)."
        )
    problem = checkpoint_problem(model_path)
    if problem is not None:
        raise CheckpointError(f"{problem} Download it with fiftyone.zoo.download_zoo_model({model_name!r}).")
    from fiftyone_florence2.runs.model import load_model as florence2_model

    return florence2_model(model=model_path, **options)

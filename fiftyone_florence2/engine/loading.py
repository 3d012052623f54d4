"""Loading a checkpoint's files for the runner: Hub arguments that fail fast offline, and the processor with
the image backend its checkpoint's answers were made with."""

from __future__ import annotations

import os
from typing import Any

from transformers import Florence2Processor, PretrainedConfig

from fiftyone_florence2.core.checkpoints import hub_reachable
from fiftyone_florence2.core.errors import CheckpointError, OptionError, literal
from fiftyone_florence2.core.options import OPTIONS
from fiftyone_florence2.engine.convert import image_backend_of


class HubUnreachable(CheckpointError, OptionError):
    """A Hub checkpoint that cannot be downloaded; it names the route's control for a local one."""


def hub_kwargs(checkpoint: str, revision: str | None) -> dict[str, Any]:
    """``from_pretrained`` arguments for ``checkpoint``: the local cache when it holds the files; raises
    ``HubUnreachable`` at once when they must be downloaded and the Hub is unreachable."""
    if os.path.isdir(checkpoint):
        return {}
    kwargs: dict[str, Any] = {"revision": revision}
    try:
        PretrainedConfig.get_config_dict(checkpoint, local_files_only=True, **kwargs)
        Florence2Processor.from_pretrained(checkpoint, local_files_only=True, **kwargs)
        return {**kwargs, "local_files_only": True}
    except (OSError, ValueError):
        pass
    if not hub_reachable(checkpoint, revision):
        local = os.path.abspath(os.path.expanduser(checkpoint))
        raise HubUnreachable(
            f"The Hugging Face Hub is not reachable, so {literal(repr(checkpoint))} cannot be downloaded "
            f"(and there is no local directory {literal(repr(local))}). Pass a local checkpoint directory "
            "instead, as {model:'/path/to/checkpoint'|/path/to/checkpoint}.",
            OPTIONS["model"],
        )
    return kwargs


def load_processor(checkpoint: str, **kwargs: Any) -> Any:
    """``checkpoint``'s processor; its image processor on the backend the checkpoint's record names (PIL for
    a conversion of an original-format checkpoint, whose processor made its pixels with PIL), else on
    transformers' default."""
    backend = image_backend_of(checkpoint)
    return Florence2Processor.from_pretrained(checkpoint, **kwargs, **({"backend": backend} if backend else {}))


def backend_name(image_processor: Any) -> str:
    """Which backend ``image_processor`` runs on (``"pil"`` or ``"torchvision"``), for run records."""
    return str(getattr(image_processor, "backend", None) or type(image_processor).__name__)

"""peft LoRA adapters, as data: which settings are merged, each weight's module and part, each module's scale.

Standard library only; ``engine.adapters`` reads the files and merges the tensors. A merge adds
``scale * B @ A`` to each targeted weight (``scale`` is ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with
``use_rslora``; ``rank_pattern`` and ``alpha_pattern`` override ``r`` and ``lora_alpha`` per module), and
replaces the weights an adapter saved whole (``modules_to_save``, biases).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from fiftyone_florence2.core.errors import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# ``<module>.lora_A.weight``, or with the adapter's name (``lora_A.default.weight``) as older peft saved it.
_LORA = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A|lora_B)(?:\.[^.]+)?\.weight$")
# A module kept whole (``modules_to_save``, with the adapter's name), or a wrapped layer's bias (``bias``).
_SAVED_COPY = re.compile(r"\.modules_to_save\.[^.]+\.|\.base_layer\.")
# Settings whose adapters change the model in ways a merge of ``B @ A`` does not give: (field, why).
_UNSUPPORTED = (
    ("use_dora", "DoRA's magnitude vectors are not merged"),
    ("lora_bias", "a bias on lora_B is not merged"),
    ("target_parameters", "LoRA on bare parameters is not merged"),
    ("trainable_token_indices", "trained token rows are not merged"),
    ("layer_replication", "replicated layers are not merged"),
    ("use_qalora", "QA-LoRA is not merged"),
    ("alora_invocation_tokens", "activated LoRA is not merged"),
)
# Weight names that hold LoRA on embeddings or DoRA, which are refused (by the name they are saved under).
_REFUSED_PARTS = (("lora_embedding_A", "LoRA on embeddings"), ("lora_embedding_B", "LoRA on embeddings"),
                  ("lora_magnitude_vector", "DoRA"))  # fmt: skip


@dataclass(frozen=True)
class AdapterWeight:
    """One adapter tensor's place: the module's weight it changes, and how (``lora_A``, ``lora_B``, or
    ``whole``: it replaces that weight)."""

    target: str
    part: str


def refusal(name: str, what: str) -> CheckpointError:
    """The one-line refusal of the adapter ``name``."""
    return CheckpointError(f"Adapter {name!r} cannot be merged: {what}.")


def check_adapter_settings(settings: dict[str, Any], name: str) -> dict[str, Any]:
    """``settings`` (an ``adapter_config.json``) if a merge gives the adapter's model exactly; else a refusal
    naming the field."""
    if settings.get("peft_type") != "LORA":
        raise refusal(name, f"its peft_type is {settings.get('peft_type')!r}; only LORA adapters are merged")
    if not isinstance(settings.get("base_model_name_or_path"), str) or not settings["base_model_name_or_path"]:
        raise refusal(name, f"{ADAPTER_CONFIG} names no base_model_name_or_path; pass the base checkpoint")
    for field, why in _UNSUPPORTED:
        if settings.get(field):
            raise refusal(name, f"{field} is {settings[field]!r}; {why}")
    for field in ("r", "lora_alpha"):
        value = settings.get(field)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise refusal(name, f"{field} is {value!r}; it must be a number above 0")
    return settings


def adapter_weight(key: str, name: str) -> AdapterWeight:
    """Where one saved adapter tensor goes, by its name (peft's ``base_model.model.`` prefix dropped)."""
    key = key.removeprefix(_PEFT_PREFIX)
    for part, what in _REFUSED_PARTS:
        if f".{part}" in key:
            raise refusal(name, f"it holds {key!r}, and {what} is not merged")
    match = _LORA.match(key)
    if match:
        return AdapterWeight(match["module"] + ".weight", match["part"])
    return AdapterWeight(_SAVED_COPY.sub(".", key), "whole")


def _pattern_value(pattern: dict[str, Any] | None, module: str, default: Any) -> Any:
    """peft's per-module override: the first key that matches the end of the module's name."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def lora_scale(settings: dict[str, Any], module: str) -> float:
    """The scale of module ``module``'s ``B @ A``: ``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``."""
    rank = _pattern_value(settings.get("rank_pattern"), module, settings["r"])
    alpha = _pattern_value(settings.get("alpha_pattern"), module, settings["lora_alpha"])
    return alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank

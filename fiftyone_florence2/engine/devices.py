"""Which torch device and dtype a run uses: for labelling (``runner.py``) and for training alike."""

from __future__ import annotations

import torch

from fiftyone_florence2.core.options import dtype_name

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else cuda, then mps, then cpu."""
    if device not in (None, "", "auto"):
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"Unknown device {device!r}: {e}") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"Device {device!r} was requested but CUDA is not available.")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"Device {device!r} was requested but MPS is not available.")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def available_devices() -> list[str]:
    """The device types this machine can run on, best first."""
    found = ["cuda"] if torch.cuda.is_available() else []
    return found + (["mps"] if torch.backends.mps.is_available() else []) + ["cpu"]


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The requested dtype, else bf16 (or fp16) on CUDA, fp16 on MPS and fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    key = dtype_name("dtype", dtype)
    if key is not None:
        return DTYPES[key]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32

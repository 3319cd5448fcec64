"""Device and precision choice: CUDA, MPS or CPU; reduced precision only where it is supported."""

from __future__ import annotations

import torch

__all__ = ["select_device", "select_precision", "PRECISIONS"]

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve ``None``/``"auto"`` to CUDA, then MPS, then CPU; check an explicit choice works."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available: use 'cpu' or 'auto'")
    if resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("device 'mps' was requested but MPS is not available: use 'cpu' or 'auto'")
    return resolved


def select_precision(device: torch.device, precision: str | None = None) -> torch.dtype | None:
    """The autocast dtype for the model call, or ``None`` for plain fp32.

    ``None``/``"auto"``: bf16 on CUDA devices that support it, else fp16 on CUDA; fp32 on CPU and MPS.
    An explicit reduced precision the device cannot run raises ``ValueError``.
    """
    if precision in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose auto, {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is torch.float32:
        return None
    if device.type == "cuda" and dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("this CUDA device does not support bf16: use fp16 or fp32")
    if device.type == "mps" and dtype is torch.bfloat16:
        raise ValueError("bf16 autocast is not supported on MPS here: use fp16 or fp32")
    return dtype

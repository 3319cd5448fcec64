"""Device, precision and thread choice: CUDA, MPS or CPU; reduced precision only where it is supported;
as many intra-op threads as the cores the process may use."""

from __future__ import annotations

import os

import torch

__all__ = ["select_device", "select_precision", "PRECISIONS", "THREADS_ENV", "usable_cores",
           "choose_num_threads", "set_num_threads", "idle_cores"]

#: Environment variable fixing the engine's intra-op threads (wins over everything but an explicit option).
THREADS_ENV = "SINE_NUM_THREADS"

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


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def choose_num_threads(num_threads: int | None = None, reserve_cores: int = 0) -> int:
    """Intra-op threads for the engine.

    Parameters
    ----------
    num_threads : int, optional
        An explicit choice (wins).
    reserve_cores : int
        Cores left to others (the napari plugin leaves its GUI one).

    Returns
    -------
    int
        ``num_threads``, else the ``SINE_NUM_THREADS`` environment variable, else the usable cores minus
        ``reserve_cores``, capped by torch's current setting (so a count lowered by the caller, e.g. a
        scale-out worker's, stays) and by the cores other jobs leave idle (:func:`idle_cores`, read once,
        when the propagator is built); at least 1. More threads than free cores make every parallel step
        wait for the thread that shares a core: on a busy 2-core machine 2 threads cost 6× the CPU time and
        3× the wall time of 1 (docs/benchmarks.md).
    """
    if num_threads is not None:
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        return int(num_threads)
    text = os.environ.get(THREADS_ENV, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ValueError(f"{THREADS_ENV}={text!r} is not a positive integer: set it to the number of "
                             "threads to use (e.g. 1), or unset it")
        return value
    count = min(usable_cores() - max(0, int(reserve_cores)), torch.get_num_threads())
    return max(1, min(count, idle_cores()))


def idle_cores() -> int:
    """Usable cores not taken by other running jobs: usable cores minus the 1-minute load average, rounded
    (all usable cores where the OS reports no load average)."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return usable_cores()
    return max(1, int(usable_cores() - load + 0.5))


def set_num_threads(num_threads: int | None = None, reserve_cores: int = 0) -> int:
    """Set torch's intra-op threads to :func:`choose_num_threads` (process-wide) and return the count."""
    count = choose_num_threads(num_threads, reserve_cores)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count

"""Safe reading and writing of checkpoints, prefix stripping and strict key/shape checks.

Torch files are read only with ``torch.load(..., weights_only=True)``, so pickled code is refused and
never run; safetensors files are read with :mod:`safetensors`. Every check raises a
:class:`~sine_model.errors.WeightsError` subclass whose message says what to do.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sine_model.errors import (
    CorruptCheckpointError,
    KeyMismatchError,
    UnsafeCheckpointError,
    WeightsNotFoundError,
)
from sine_model.hub.presets import Preset
from sine_model.modeling.config import build_model_skeleton

__all__ = [
    "META_PRESET",
    "WRAPPER_PREFIXES",
    "check_is_sine",
    "check_state_dict",
    "expected_shapes",
    "finalise_state_dict",
    "is_safetensors",
    "read_safetensors",
    "read_state_dict",
    "save_safetensors",
    "sha256_file",
    "strip_prefixes",
]

META_PRESET = "napari_sine_preset"  # safetensors metadata key naming the preset of a file
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
_WRAPPER_KEYS = ("state_dict", "model", "module", "teacher")
_CHUNK = 1 << 22


# ------------------------------------------------------------------------------- reading


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_safetensors(path: Path) -> bool:
    """True when the file starts like safetensors (little-endian header size, then ``{``)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read all tensors and the metadata of a safetensors file (on the CPU).

    Raises
    ------
    CorruptCheckpointError
        The file cannot be parsed (truncated or corrupt).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types
        raise CorruptCheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it is probably truncated or "
            "corrupt: download or import it again"
        ) from exc
    return tensors, metadata


def save_safetensors(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``tensors`` with ``metadata`` as a safetensors file (not atomic by itself)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """Return the name → tensor mapping held by a loaded checkpoint, or explain what it holds."""
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, Tensor) for v in obj.values()):
            inner = [k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]
            if inner:
                obj = obj[inner[0]]
                continue
        break
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a mapping of parameter names "
            "to tensors); pass the weights file itself"
        )
    bad = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad or not obj:
        what = f"entries that are not name → tensor: {_short(bad)}" if bad else "no entries"
        raise CorruptCheckpointError(f"{path} is not a plain state dict: {what}")
    return dict(obj)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Read a checkpoint safely: safetensors, or a torch file with ``weights_only=True``.

    Parameters
    ----------
    path : path
        A safetensors file or a torch file holding a state dict (possibly wrapped in
        ``{"state_dict": …}``, ``{"model": …}`` and the like).

    Returns
    -------
    state_dict, metadata : dict, dict
        The tensors and the safetensors metadata (empty for torch files).

    Raises
    ------
    WeightsNotFoundError, UnsafeCheckpointError, CorruptCheckpointError
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such file; check the path")
    if is_safetensors(path):
        return read_safetensors(path)
    _check_torch_format(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pickle-protocol chatter from torch
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text and "truncated" not in text:
            raise UnsafeCheckpointError(
                f"{path} was refused: it contains pickled objects other than tensors, which could "
                f"run code ({_unpickler_reason(text)}). Nothing from it was executed. A plain state "
                "dict such as the authors' release loads fine; re-save a file you made yourself "
                "with torch.save(model.state_dict(), path)"
            ) from exc
        raise CorruptCheckpointError(_corrupt_message(path, exc)) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CorruptCheckpointError(_corrupt_message(path, exc)) from exc
    return _unwrap(obj, path), {}


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default (zip) format
_PICKLE_PROTOCOL = 0x80  # torch's legacy format starts with a pickle protocol opcode


def _check_torch_format(path: Path) -> None:
    """Refuse a file that is neither a torch zip file nor a pickle (random bytes, text, an image).

    Such a file is damaged or not a weights file at all; calling it "pickled objects which could run
    code" (the unpickler's refusal) would send the user looking for the wrong problem.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise CorruptCheckpointError(f"{path} is empty (0 bytes): download or save the weights again")
    if head.startswith(_ZIP_MAGIC) or head[0] == _PICKLE_PROTOCOL:
        return
    raise CorruptCheckpointError(
        f"{path} is not a weights file: it is neither safetensors nor a PyTorch checkpoint (it starts "
        f"with {head!r}). It is damaged or another kind of file: download or import the weights again")


def _unpickler_reason(text: str) -> str:
    """The specific refusal from torch's weights-only unpickler (e.g. ``Unsupported global: …``)."""
    tail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else ""
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    reason = re.split(r" was not an allowed| Please ", lines[0])[0] if lines else "not a plain state dict"
    return reason[:200]


def _corrupt_message(path: Path, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return (
        f"{path} cannot be read as a PyTorch or safetensors checkpoint ({first}); the file is "
        "probably truncated or corrupt: download it again"
    )


def _short(items: Iterable[Any], limit: int = 20) -> str:
    items = list(items)
    more = f" … and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(str(i) for i in items[:limit]) + more


def strip_prefixes(
    state_dict: Mapping[str, Tensor], prefixes: Iterable[str] = WRAPPER_PREFIXES
) -> dict[str, Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, …) shared by *every* key, repeatedly."""
    out = dict(state_dict)
    changed = True
    while changed and out:
        changed = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in out):
                out = {key[len(prefix) :]: value for key, value in out.items()}
                changed = True
    return out


# ------------------------------------------------------------------------------- strict checks


def expected_shapes(preset: Preset) -> dict[str, tuple[torch.Size, torch.dtype]]:
    """State-dict names, shapes and dtypes of a preset's architecture (a skeleton on the meta device)."""
    model = build_model_skeleton(preset.model)
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def check_is_sine(state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple], what: str,
                  ignore_prefix: str = "") -> None:
    """Refuse weights whose names are mostly not SINE's (another model's file), before any detail.

    Without this check such a file gets a long list of missing keys (e.g. the whole DINOv2 encoder)
    that never says the real problem.

    Parameters
    ----------
    state_dict : mapping
        The file's tensors (wrapper prefixes already stripped).
    expected : mapping
        The architecture's names (:func:`expected_shapes`).
    what : str
        How to name the file in the message.
    ignore_prefix : str
        Names under this prefix (e.g. the encoder, which may come from a separate file) are left out
        of the comparison.

    Raises
    ------
    KeyMismatchError
        When fewer than half of the file's names are names of the architecture.
    """
    names = {k for k in state_dict if not (ignore_prefix and k.startswith(ignore_prefix))}
    wanted = {k for k in expected if not (ignore_prefix and k.startswith(ignore_prefix))}
    if not names or not wanted:
        return
    shared = names & wanted
    if len(shared) >= 0.5 * len(names):
        return
    foreign = sorted(names - wanted)
    raise KeyMismatchError(
        f"{what}: these keys are not SINE's: {len(foreign)} of its {len(names)} tensors have names the "
        f"SINE architecture does not use (e.g. {_short(foreign, 3)}), and only {len(shared)} of SINE's "
        f"{len(wanted)} are there. It is probably another model's weights: use the SINE release "
        "(pytorch_model.bin) or a file saved by napari-sine",
        missing=sorted(wanted - names), unexpected=foreign)


def check_state_dict(state_dict: Mapping[str, Tensor], expected: Mapping[str, tuple], what: str) -> None:
    """Raise :class:`KeyMismatchError` listing missing, unexpected and mis-shaped keys.

    Parameters
    ----------
    state_dict : mapping
        The tensors to check.
    expected : mapping
        Name → ``(shape, dtype)``, as from :func:`expected_shapes`.
    what : str
        How to name the checked file in the message.
    """
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = []
    for key in sorted(set(expected) & set(state_dict)):
        shape, dtype = expected[key]
        value = state_dict[key]
        if tuple(value.shape) != tuple(shape):
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(shape)}")
        elif value.is_floating_point() != dtype.is_floating_point:
            mismatched.append(f"{key}: file dtype {value.dtype} vs model {dtype}")
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the architecture:"]
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines.append(f"  {label} ({len(items)}): {_short(items)}")
        lines.append("Check that the file and --preset belong together (and --dinov2 matches the encoder).")
        raise KeyMismatchError("\n".join(lines), missing, unexpected, mismatched)


def _all_finite(value: Tensor) -> bool:
    """True when no element is NaN or infinite (min/max propagate both; far faster than isfinite)."""
    if value.numel() == 0:
        return True
    low, high = torch.aminmax(value.reshape(-1).float())
    return bool(torch.isfinite(low) and torch.isfinite(high))


def finalise_state_dict(
    state_dict: dict[str, Tensor], expected: Mapping[str, tuple], notes: list[str]
) -> dict[str, Tensor]:
    """Cast to the model's dtypes, reject non-finite values, make tensors contiguous and unshared.

    Parameters
    ----------
    state_dict : dict
        Tensors already checked with :func:`check_state_dict`.
    expected : mapping
        Name → ``(shape, dtype)``; the output follows its key order.
    notes : list of str
        Receives a note when tensors were cast.

    Raises
    ------
    CorruptCheckpointError
        A floating-point tensor holds NaN or infinite values.
    """
    out, seen, cast = {}, set(), 0
    bad = []
    for key in expected:
        value = state_dict[key]
        dtype = expected[key][1]
        if value.dtype != dtype:
            value, cast = value.to(dtype), cast + 1
        if value.is_floating_point() and not _all_finite(value):
            bad.append(key)
        value = value.contiguous()
        ptr = value.untyped_storage().data_ptr() if value.numel() else None
        if ptr is not None and ptr in seen:
            value = value.clone()
        seen.add(ptr)
        out[key] = value
    if bad:
        raise CorruptCheckpointError(f"NaN or infinite values in {_short(bad)}: the file is damaged")
    if cast:
        notes.append(f"{cast} tensors converted to the model's dtype")
    return out

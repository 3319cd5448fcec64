"""Import, install and load SINE weights: the public API of napari-sine's weights handling.

* **Import** (:func:`import_checkpoint`, ``napari-sine weights import``) reads the authors' file with
  ``torch.load(..., weights_only=True)`` (pickled code is refused, never run) or as safetensors, drops
  ``criterion.empty_weight``, strips wrapper prefixes such as ``module.``, fills the DINOv2 encoder from
  a separate file (Meta, timm or Hugging Face names; :func:`convert_dinov2_state_dict`) when the SINE
  file lacks it, checks every key and shape strictly, and writes ``<preset>.safetensors`` plus a
  ``<preset>.json`` record (sha256, sources, date) into the cache, each through a temporary file and an
  atomic rename, so a failure never leaves a half-written file behind.
* **Load** (:func:`from_pretrained`) reads only safetensors, re-checks
  the sha256 recorded at import and the preset name stored in the file, and returns the model in eval
  mode. The official preset's licence notice is printed on its first load (once per cache).

The pieces live in :mod:`sine_model.hub.checkpoint_io` (safe reading, strict checks),
:mod:`sine_model.hub.dinov2_keys` (DINOv2 key maps), :mod:`sine_model.hub.cache` (cache folder, atomic
writes, hub download; it documents ``SINE_CACHE_DIR`` and ``HF_HUB_OFFLINE``) and
:mod:`sine_model.errors`; their public names are re-exported here.
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sine_model.errors import (
    CorruptCheckpointError,
    HashMismatchError,
    KeyMismatchError,
    PresetMismatchError,
    UnsafeCheckpointError,
    WeightsError,
    WeightsNotFoundError,
)
from sine_model.hub.cache import (
    CACHE_ENV,
    atomic_write,
    cache_root,
    fetch_dinov2,
    install_steps,
    read_record,
    record_path,
    weights_dir,
    write_installed,
)
from sine_model.hub.checkpoint_io import (
    META_PRESET,
    check_is_sine,
    check_state_dict,
    expected_shapes,
    finalise_state_dict,
    is_safetensors,
    read_safetensors,
    read_state_dict,
    save_safetensors,
    sha256_file,
    strip_prefixes,
)
from sine_model.hub.dinov2_keys import (
    ENCODER_PREFIX,
    convert_dinov2_state_dict,
    dinov2_key_format,
    encoder_from_dinov2,
)
from sine_model.hub.presets import Preset, get_preset
from sine_model.hub.training_export import META_TRAINED_MODEL, load_training_export
from sine_model.modeling.config import build_model_skeleton

__all__ = [  # everything importable from here before the split into the modules above
    "CACHE_ENV", "DROPPED_KEYS", "ENCODER_PREFIX", "META_PRESET", "CorruptCheckpointError",
    "HashMismatchError", "InstalledWeights", "KeyMismatchError", "PresetMismatchError",
    "UnsafeCheckpointError", "WeightsError", "WeightsNotFoundError", "cache_root",
    "check_state_dict", "convert_dinov2_state_dict", "default_preset", "dinov2_key_format", "expected_shapes",
    "META_TRAINED_MODEL",
    "fetch_dinov2", "from_pretrained", "import_checkpoint", "installed_weights", "load_preset_state_dict",
    "read_state_dict", "save_preset_weights", "sha256_file", "strip_prefixes", "verify_installed",
    "weights_dir",
]

DROPPED_KEYS = ("criterion.empty_weight",)  # training-only buffer of the official checkpoint


def save_preset_weights(
    weights: nn.Module | Mapping[str, Tensor], preset: str | Preset, path: str | os.PathLike
) -> str:
    """Write a model's weights for ``preset`` as safetensors (atomically); return the file's sha256.

    The file carries ``napari_sine_preset`` in its metadata, as :func:`from_pretrained` and bundled
    presets expect. Keys and shapes are checked against the preset first.
    """
    preset = get_preset(preset)
    state = weights.state_dict() if isinstance(weights, nn.Module) else dict(weights)
    state = {k: v.detach().cpu() for k, v in state.items()}
    expected = expected_shapes(preset)
    check_state_dict(state, expected, "the weights")
    tensors = finalise_state_dict(state, expected, [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: save_safetensors(tensors, tmp, {"format": "pt", META_PRESET: preset.name}))
    return sha256_file(path)


# ------------------------------------------------------------------------------- installed weights


@dataclass(frozen=True)
class InstalledWeights:
    """An installed weights file.

    Parameters
    ----------
    preset : str
        Preset name.
    path : Path
        The safetensors file.
    sha256 : str or None
        Hash recorded at import (cache) or published (bundled); ``None`` if the record is missing.
    size_bytes : int
        Current file size.
    record : dict
        The import record (``<preset>.json``); empty for bundled files.
    bundled : bool
        Shipped inside the package rather than imported into the cache.
    """

    preset: str
    path: Path
    sha256: str | None
    size_bytes: int
    record: Mapping[str, Any]
    bundled: bool = False


def installed_weights(preset: str | Preset) -> InstalledWeights | None:
    """The installed weights of ``preset``, or ``None`` when there are none (no hashing done)."""
    preset = get_preset(preset)
    if preset.weights.kind == "bundled":
        path = Path(str(importlib.resources.files("sine_model") / preset.weights.location))
        if not path.is_file():
            return None
        return InstalledWeights(preset.name, path, preset.weights.sha256, path.stat().st_size, {}, True)
    path = weights_dir() / f"{preset.name}.safetensors"
    if not path.is_file():
        return None
    record, sha = read_record(path)
    return InstalledWeights(preset.name, path, sha, path.stat().st_size, record)


def verify_installed(preset: str | Preset) -> tuple[bool, str | None, str]:
    """Re-hash installed weights.

    Returns
    -------
    ok, expected, actual : bool, str or None, str
        ``expected`` is the recorded (or published) sha256, ``None`` when no record exists.

    Raises
    ------
    WeightsNotFoundError
        The preset is not installed.
    """
    preset = get_preset(preset)
    installed = installed_weights(preset)
    if installed is None:
        raise WeightsNotFoundError(install_steps(preset))
    actual = sha256_file(installed.path)
    return installed.sha256 == actual, installed.sha256, actual


# ------------------------------------------------------------------------------- import


def import_checkpoint(
    sine_file: str | os.PathLike,
    *,
    dinov2_file: str | os.PathLike | None = None,
    preset: str | Preset = "sine-vitl",
    allow_download: bool = True,
    log: Callable[[str], None] | None = None,
) -> InstalledWeights:
    """Check a SINE checkpoint and install it into the cache as safetensors.

    Parameters
    ----------
    sine_file : path
        The authors' ``pytorch_model.bin`` (torch file, read with ``weights_only=True``) or a
        safetensors file.
    dinov2_file : path, optional
        DINOv2 weights (Meta ``.pth``, timm or HF safetensors) used when the SINE file has no encoder.
        Without it such a file gets the encoder from the Hugging Face cache or hub.
    preset : str or Preset
        Preset the weights belong to.
    allow_download : bool
        Allow fetching DINOv2 from the hub.
    log : callable, optional
        Receives progress messages.

    Returns
    -------
    InstalledWeights

    Raises
    ------
    WeightsError
        Subclasses name the problem (unsafe, corrupt, key mismatch, hash, preset, not found); the cache
        is left as it was.
    """
    preset = get_preset(preset)
    say = log or (lambda message: None)
    if preset.weights.kind == "bundled":
        raise WeightsError(f"preset {preset.name!r} ships inside napari-sine; nothing to import")
    sine_file = Path(sine_file)
    say(f"reading {sine_file}")
    state, metadata = read_state_dict(sine_file)
    owner = metadata.get(META_PRESET)
    if owner and owner != preset.name:
        raise PresetMismatchError(
            f"{sine_file} holds weights of preset {owner!r}, not {preset.name!r}: use --preset {owner}"
        )
    source_sha = sha256_file(sine_file)
    if preset.weights.sha256 and source_sha != preset.weights.sha256:
        raise HashMismatchError(
            f"{sine_file} has sha256 {source_sha}, but {preset.weights.sha256} is published for "
            f"preset {preset.name!r}: the download is damaged or a different file; download it again"
        )
    notes: list[str] = []
    state = strip_prefixes(state)
    for key in DROPPED_KEYS:
        if state.pop(key, None) is not None:
            notes.append(f"dropped {key} (training only)")
    expected = expected_shapes(preset)
    check_is_sine(state, expected, str(sine_file), ignore_prefix=ENCODER_PREFIX)  # before encoder details
    encoder: dict[str, Any] = {"origin": "sine file"}
    if any(k.startswith(ENCODER_PREFIX) for k in state):
        if dinov2_file is not None:
            notes.append("the SINE file contains the encoder: --dinov2 was not used")
    elif any(k.startswith(ENCODER_PREFIX) for k in expected):
        mapped, encoder = encoder_from_dinov2(
            preset, expected, dinov2_file, allow_download=allow_download, say=say, notes=notes
        )
        state.update(mapped)
    check_state_dict(state, expected, str(sine_file))
    tensors = finalise_state_dict(state, expected, notes)
    folder = weights_dir(create=True)
    dest = folder / f"{preset.name}.safetensors"
    say(f"writing {dest}")
    meta = {"format": "pt", META_PRESET: preset.name, "source_sha256": source_sha}
    source = {
        "path": str(sine_file.resolve()),
        "sha256": source_sha,
        "published_sha256": preset.weights.sha256,
        "url": preset.weights.url,
    }
    record = write_installed(
        dest,
        lambda path: save_safetensors(tensors, path, meta),
        preset=preset.name,
        source=source,
        encoder=encoder,
        notes=notes,
    )
    return InstalledWeights(preset.name, dest, record["sha256"], record["size_bytes"], record)


# ------------------------------------------------------------------------------- loading

_LICENCE_SHOWN: set[str] = set()


def _show_licence_once(preset: Preset, folder: Path) -> None:
    """Print the preset's licence notice the first time it is loaded (marker file in the cache)."""
    if not preset.licence.show_on_first_load or preset.name in _LICENCE_SHOWN:
        return
    _LICENCE_SHOWN.add(preset.name)
    marker = folder / f".licence-shown-{preset.name}"
    if marker.exists():
        return
    print(f"napari-sine — licence of preset {preset.name!r} ({preset.licence.name}):", file=sys.stderr)
    print(preset.licence.text, file=sys.stderr)
    try:
        marker.touch()
    except OSError:  # read-only cache: shown once per process instead
        pass


def load_preset_state_dict(preset: str | Preset, *, verify: bool = True) -> dict[str, Tensor]:
    """Read an installed preset's safetensors file, checking its hash and preset name.

    Raises
    ------
    WeightsNotFoundError, HashMismatchError, PresetMismatchError, CorruptCheckpointError
    """
    preset = get_preset(preset)
    installed = installed_weights(preset)
    if installed is None:
        raise WeightsNotFoundError(install_steps(preset))
    if verify:
        if installed.sha256 is None:
            raise HashMismatchError(
                f"{installed.path} has no import record ({record_path(installed.path).name} "
                "is missing or damaged), so it cannot be verified: import the weights again"
            )
        actual = sha256_file(installed.path)
        if actual != installed.sha256:
            raise HashMismatchError(
                f"{installed.path} has sha256 {actual}, but {installed.sha256} was recorded: the file "
                f"changed or is damaged. Import it again (napari-sine weights import FILE --preset "
                f"{preset.name})"
            )
    tensors, metadata = read_safetensors(installed.path)
    owner = metadata.get(META_PRESET)
    if owner != preset.name:
        raise PresetMismatchError(
            f"{installed.path} holds weights of preset {owner!r}, not {preset.name!r}: import the "
            f"right file with napari-sine weights import FILE --preset {preset.name}"
        )
    return tensors


def _instantiate(preset: Preset, state: dict[str, Tensor], device: Any) -> nn.Module:
    """Build without random initialisation (a meta-device skeleton + assign), else a plain build."""
    model = build_model_skeleton(preset.model)
    model.load_state_dict(state, strict=True, assign=True)
    tensors = [*model.parameters(), *model.buffers()]
    tensors += [v for m in model.modules() for v in vars(m).values() if isinstance(v, Tensor)]
    if any(t.is_meta for t in tensors):  # something was created outside the state dict
        model = preset.build()
        model.load_state_dict(state, strict=True)
    model.eval()
    return model.to(device) if device is not None else model


def from_pretrained(
    name_or_path: str | os.PathLike | Preset, device: str | torch.device | None = None, *, verify: bool = True
) -> nn.Module:
    """Load a pretrained model from a preset name or a napari-sine safetensors file.

    Parameters
    ----------
    name_or_path : str, path or Preset
        A registered preset (its installed weights are used) or a ``.safetensors`` file written by
        napari-sine (its metadata names the preset). Other checkpoints must be imported first.
    device : str or torch.device, optional
        Where to put the model (default: CPU).
    verify : bool
        Re-check the sha256 recorded at import.

    Returns
    -------
    nn.Module
        The model (a :class:`sine_model.SINE` for the official preset) in eval mode.
    """
    from sine_model.hub.presets import PRESETS

    if isinstance(name_or_path, Preset) or (isinstance(name_or_path, str) and name_or_path in PRESETS):
        preset = get_preset(name_or_path)
        state = load_preset_state_dict(preset, verify=verify)
        installed = installed_weights(preset)
        folder = weights_dir() if installed.bundled else installed.path.parent
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{name_or_path!s} is neither a registered preset ({sorted(PRESETS)}) nor a file"
            )
        if not is_safetensors(path):
            raise WeightsError(
                f"{path} is not a safetensors file; models load only from safetensors. Import the "
                f"checkpoint first: napari-sine weights import {path} [--dinov2 FILE]"
            )
        state, metadata = read_safetensors(path)
        owner = metadata.get(META_PRESET)
        if owner is None and META_TRAINED_MODEL in metadata:
            return load_training_export(path, state, metadata, device)
        if owner is None:
            raise PresetMismatchError(
                f"{path} does not say which preset it belongs to (no {META_PRESET!r} metadata); "
                f"import it: napari-sine weights import {path} --preset NAME"
            )
        preset = get_preset(owner)
        folder = weights_dir()
    expected = expected_shapes(preset)
    check_state_dict(state, expected, str(name_or_path))
    model = _instantiate(preset, finalise_state_dict(state, expected, []), device)
    model.preset = preset  # the engine's defaults: input side, instance source
    _show_licence_once(preset, folder)
    return model


def default_preset() -> str:
    """The model used when none is named: the official preset when its weights are installed, else
    the embedded one (shipped inside the package, works offline)."""
    from sine_model.hub.presets import EMBEDDED_PRESET, OFFICIAL_PRESET, PRESETS

    try:
        if installed_weights(OFFICIAL_PRESET) is not None:
            return OFFICIAL_PRESET
    except OSError:  # an unreadable cache folder counts as nothing installed
        pass
    return EMBEDDED_PRESET if EMBEDDED_PRESET in PRESETS else OFFICIAL_PRESET

"""Which models and devices the widget offers: read from ``sine_model``'s registries, never invented.

Every registered preset is listed. Presets whose weights are installed can be chosen; the others are
listed with the steps that install them (``napari-sine weights import …``). The default follows
:func:`sine_model.hub.pretrained.default_preset`: the official ``sine-vitl`` when its weights are installed,
else an *embedded* preset (weights shipped inside the package), else any installed preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sine_model import OFFICIAL_PRESET, Preset, install_steps, installed_weights, list_presets

__all__ = ["ModelChoice", "model_choice", "model_choices", "default_model", "available_devices"]


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model list.

    Parameters
    ----------
    name : str
        Preset name.
    description : str
        One line from the preset.
    installed : bool
        Its weights are on this machine (bundled in the package or imported into the cache).
    embedded : bool
        Its weights ship inside the package (no download, works offline).
    official : bool
        The authors' weights.
    licence : str
        Short licence name of the weights.
    hint : str
        Install steps for a missing model; empty when installed.
    """

    name: str
    description: str
    installed: bool
    embedded: bool
    official: bool
    licence: str
    hint: str

    @property
    def label(self) -> str:
        """Text shown in the model list."""
        tags = [t for t, on in (("embedded", self.embedded), ("official", self.official)) if on]
        tag = f" ({', '.join(tags)})" if tags else ""
        return f"{self.name}{tag}" + ("" if self.installed else " — not installed")


def model_choice(preset: Preset) -> ModelChoice:
    """The list entry of one preset (checks whether its weights are installed)."""
    try:
        installed = installed_weights(preset) is not None
    except OSError:  # unreadable cache folder: treat as not installed
        installed = False
    return ModelChoice(
        name=preset.name,
        description=preset.description,
        installed=installed,
        embedded=preset.weights.kind == "bundled",
        official=preset.official,
        licence=preset.licence.name,
        hint="" if installed else install_steps(preset),
    )


def model_choices() -> list[ModelChoice]:
    """All registered presets, installed ones first (embedded, then official, then by name)."""
    choices = [model_choice(p) for p in list_presets()]
    return sorted(choices, key=lambda c: (not c.installed, not c.embedded, not c.official, c.name))


def default_model(choices: list[ModelChoice]) -> ModelChoice | None:
    """The preset selected when the user has not chosen one (``None`` when nothing is installed)."""
    installed = [c for c in choices if c.installed]
    for wanted in (lambda c: c.name == OFFICIAL_PRESET, lambda c: c.embedded, lambda c: True):
        for choice in installed:
            if wanted(choice):
                return choice
    return None


def available_devices() -> list[str]:
    """Devices that work here: ``auto`` first, then CUDA devices, MPS, and CPU."""
    devices = ["auto"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices

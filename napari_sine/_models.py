"""Which models and devices the widget offers: read from ``sine_model``'s registries, never invented.

Every registered preset is listed. Presets whose weights are installed can be chosen; the others are
listed with the steps that install them (``napari-sine weights import …``). The default follows
:func:`sine_model.hub.pretrained.default_preset`: the official ``sine-vitl`` when its weights are installed,
else an *embedded* preset (weights shipped inside the package), else any installed preset.

Reading the registry imports the model code and torch (seconds), so this module imports them only when
asked: :func:`registry_loaded` tells whether that is free already, :func:`read_registry` does it (the
widget calls it in a worker thread when it is not).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sine_model import FittingRecipe, Preset

__all__ = ["ModelChoice", "model_choice", "model_choices", "default_model", "available_devices",
           "registry_loaded", "read_registry"]

#: Modules that reading the registry and the devices imports (the presets import the model code).
_REGISTRY_MODULES = ("torch", "sine_model.hub.presets", "sine_model.hub.pretrained")


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
    recipe : FittingRecipe or None
        The fitting stages a run does by default with this model (None: none).
    """

    name: str
    description: str
    installed: bool
    embedded: bool
    official: bool
    licence: str
    hint: str
    recipe: FittingRecipe | None = None

    @property
    def label(self) -> str:
        """Text shown in the model list."""
        tags = [t for t, on in (("embedded", self.embedded), ("official", self.official)) if on]
        tag = f" ({', '.join(tags)})" if tags else ""
        return f"{self.name}{tag}" + ("" if self.installed else " — not installed")


def model_choice(preset: Preset) -> ModelChoice:
    """The list entry of one preset (checks whether its weights are installed)."""
    from sine_model import install_steps, installed_weights

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
        recipe=preset.recipe,
    )


def model_choices() -> list[ModelChoice]:
    """All registered presets, installed ones first (embedded, then official, then by name)."""
    from sine_model import list_presets

    choices = [model_choice(p) for p in list_presets()]
    return sorted(choices, key=lambda c: (not c.installed, not c.embedded, not c.official, c.name))


def default_model(choices: list[ModelChoice]) -> ModelChoice | None:
    """The preset selected when the user has not chosen one (``None`` when nothing is installed)."""
    from sine_model import OFFICIAL_PRESET

    installed = [c for c in choices if c.installed]
    for wanted in (lambda c: c.name == OFFICIAL_PRESET, lambda c: c.embedded, lambda c: True):
        for choice in installed:
            if wanted(choice):
                return choice
    return None


def available_devices() -> list[str]:
    """Devices that work here: ``auto`` first, then CUDA devices, MPS, and CPU."""
    import torch

    devices = ["auto"]
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        devices += ["cuda"] if count == 1 else [f"cuda:{i}" for i in range(count)]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    devices.append("cpu")
    return devices


def registry_loaded() -> bool:
    """Whether :func:`read_registry` is cheap: the model code and torch are imported already."""
    return all(name in sys.modules for name in _REGISTRY_MODULES)


def read_registry() -> tuple[list[ModelChoice], list[str]]:
    """The model list (:func:`model_choices`) and the devices (:func:`available_devices`); slow the first
    time in a process (it imports torch), so the widget runs it in a worker thread then."""
    return model_choices(), available_devices()

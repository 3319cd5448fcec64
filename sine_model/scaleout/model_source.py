"""Where a model's weights come from, by name or path plus sha256: what a worker needs to load the same model.

Workers never receive the weights themselves: each loads them from its own file (a preset installed on
every machine, or a path on a shared file system) and checks the sha256 recorded by the client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sine_model.errors import WeightsError
from sine_model.hub.checkpoint_io import sha256_file
from sine_model.hub.presets import PRESETS
from sine_model.hub.pretrained import from_pretrained, installed_weights

__all__ = ["ModelSource"]


@dataclass(frozen=True)
class ModelSource:
    """A preset name or a weights file, and the sha256 of the weights it must have.

    Parameters
    ----------
    name : str
        Preset name, or the absolute path of a napari-sine safetensors file.
    sha256 : str
        sha256 of the weights file.
    """

    name: str
    sha256: str

    @classmethod
    def resolve(cls, name_or_path: str | os.PathLike[str]) -> ModelSource:
        """Find the weights ``name_or_path`` names and hash them.

        Raises
        ------
        WeightsError
            When the preset is not installed or the file does not exist.
        """
        name = str(name_or_path)
        if name in PRESETS:
            installed = installed_weights(name)
            if installed is None:
                raise WeightsError(f"preset {name!r} has no installed weights: import them first "
                                   "(napari-sine weights import)")
            return cls(name, sha256_file(installed.path))
        path = Path(name)
        if not path.is_file():
            raise WeightsError(f"{name} is neither a registered preset ({sorted(PRESETS)}) nor a file")
        return cls(str(path.resolve()), sha256_file(path))

    @classmethod
    def of_model(cls, model: Any) -> ModelSource:
        """The source of a model that from_pretrained loaded from a preset (its installed weights)."""
        preset = getattr(model, "preset", None)
        if preset is None:
            raise WeightsError("this model carries no preset, so workers cannot load it by name: pass the "
                               "weights file it was loaded from (model=PATH)")
        return cls.resolve(preset.name)

    def load(self, device: Any = None) -> Any:
        """Load the model here, after checking that the weights file still has :attr:`sha256`.

        Raises
        ------
        WeightsError
            When this machine's file has another sha256.
        """
        found = ModelSource.resolve(self.name)
        if found.sha256 != self.sha256:
            raise WeightsError(f"the weights of {self.name} on this machine have sha256 {found.sha256}, the "
                               f"client's {self.sha256}: install the same weights on every worker")
        return from_pretrained(self.name, device=device)

    def as_dict(self) -> dict[str, str]:
        """Plain values, for a run manifest."""
        return {"name": self.name, "sha256": self.sha256}

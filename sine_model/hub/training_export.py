"""Models written by ``napari-sine train``: their safetensors carry the architecture, not a preset.

:meth:`Trainer.export <sine_model.training.loop.Trainer.export>` records the
:class:`~sine_model.modeling.config.ModelConfig` as JSON under :data:`META_TRAINED_MODEL` in the file's
metadata; :func:`sine_model.hub.pretrained.from_pretrained` builds that architecture and loads the weights
strictly (:func:`load_training_export`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sine_model.errors import KeyMismatchError, PresetMismatchError
from sine_model.hub.presets import EMBEDDED_PRESET, OFFICIAL_PRESET, PRESETS
from sine_model.modeling.config import ModelConfig, build_model

__all__ = ["META_TRAINED_MODEL", "training_config", "load_training_export"]

META_TRAINED_MODEL = "napari_sine_model"  # architecture record of `napari-sine train` exports


def training_config(path: Path, metadata: Mapping[str, str]) -> ModelConfig:
    """The :class:`~sine_model.modeling.config.ModelConfig` recorded in a training export."""
    try:
        fields = json.loads(metadata[META_TRAINED_MODEL])
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        fields.pop("init", None)  # where the training started from: not part of the architecture
        return ModelConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise PresetMismatchError(
            f"{path} has a damaged {META_TRAINED_MODEL!r} record ({exc}): export the model again"
        ) from None


def load_training_export(path: Path, state: dict[str, Tensor], metadata: Mapping[str, str],
                          device: Any) -> nn.Module:
    """Build the architecture a ``napari-sine train`` export records and load its weights strictly.

    The model's ``preset`` (the engine's input side and instance source) is the embedded preset for the
    embedded encoder kinds, which are trained on crops of that size, and the official preset otherwise.
    """
    config = training_config(path, metadata)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KeyMismatchError(f"{path} does not fit the architecture recorded in it: {exc}") from None
    model.eval()
    like = EMBEDDED_PRESET if config.embedded and EMBEDDED_PRESET in PRESETS else OFFICIAL_PRESET
    model.preset = PRESETS[like]
    return model.to(device) if device is not None else model

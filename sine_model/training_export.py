"""Models written by ``napari-sine train``: their safetensors carry the architecture, not a preset.

:meth:`Trainer.export <sine_model.training.loop.Trainer.export>` records the
:class:`~sine_model.training.config.ModelConfig` as JSON under :data:`META_TRAINED_MODEL` in the file's
metadata; :func:`sine_model.weights.from_pretrained` builds that architecture and loads the weights
strictly (:func:`load_training_export`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .weights_errors import KeyMismatchError, PresetMismatchError

__all__ = ["META_TRAINED_MODEL", "training_config", "load_training_export"]

META_TRAINED_MODEL = "napari_sine_model"  # architecture record of `napari-sine train` exports


def training_config(path: Path, metadata: Mapping[str, str]) -> Any:
    """The :class:`~sine_model.training.config.ModelConfig` recorded in a training export."""
    from .training.config import ModelConfig

    try:
        fields = json.loads(metadata[META_TRAINED_MODEL])
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        return ModelConfig(**{**fields, "init": None})
    except (TypeError, ValueError) as exc:
        raise PresetMismatchError(
            f"{path} has a damaged {META_TRAINED_MODEL!r} record ({exc}): export the model again"
        ) from None


def load_training_export(path: Path, state: dict[str, Tensor], metadata: Mapping[str, str],
                          device: Any) -> nn.Module:
    """Build the architecture a ``napari-sine train`` export records and load its weights strictly.

    The model's ``input_pad`` and ``instance_source`` (the Propagator's defaults) are the embedded
    preset's for the embedded encoder kinds, which are trained on crops of that size, and the official
    preset's otherwise.
    """
    from .embedded import EMBEDDED_KINDS
    from .presets import EMBEDDED_PRESET, OFFICIAL_PRESET, PRESETS
    from .training.loop import build_model

    config = training_config(path, metadata)
    model = build_model(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise KeyMismatchError(f"{path} does not fit the architecture recorded in it: {exc}") from None
    model.eval()
    embedded = config.kind in EMBEDDED_KINDS and EMBEDDED_PRESET in PRESETS
    like = EMBEDDED_PRESET if embedded else OFFICIAL_PRESET
    model.input_pad = PRESETS[like].input.pad_size
    model.instance_source = PRESETS[like].instance_source
    return model.to(device) if device is not None else model

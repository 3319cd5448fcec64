"""sine_model — a napari-free PyTorch implementation of SINE in-context segmentation.

The public API is importable from here; everything is loaded on first use, so ``import sine_model`` is
cheap (torch loads when a model, the engine or the fitting stages are first touched)::

    from sine_model import Propagator, ReferencePreparation, from_pretrained

    model = from_pretrained("sine-embedded")            # or "sine-vitl" after `napari-sine weights import`
    propagator = Propagator(model)
    ReferencePreparation(propagator, [(image, labels)]).run()
    for result in propagator.propagate(stack, stack_axis=0):
        result.labels["instance"]

Layers, each importing only from the ones below it (``tests/test_layering.py`` enforces it):

0. ``errors``, ``modes``, ``metrics``, ``labelmaps``, ``triton_guard``, ``sample_data`` — base
1. ``preprocess/``, ``io/`` — images and files in and out
2. ``modeling/`` — the nn modules, :class:`ModelConfig`, :func:`build_model`
3. ``postprocess/`` — model outputs to label maps
4. ``hub/`` (presets, weights) and ``engine/`` (the :class:`Propagator`)
5. ``training/``; ``bootstrap/`` — review state, "label this next" ranking, dataset export
6. ``fitting/`` — what is fitted on the user's references at run time; ``scaleout/`` — resumable and
   distributed runs of a prepared propagator
7. ``cli/`` — the ``napari-sine`` command
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sine_model import triton_guard

#: The napari-sine release (pyproject.toml reads it from here; PEP 440, alpha until the first release).
__version__ = "0.1.0a1"

triton_guard.install()  # before anything can import torch._dynamo: see sine_model/triton_guard.py

#: Public name → module that defines it (loaded on first access).
_API: dict[str, str] = {
    # model
    "SINE": "sine_model.modeling.sine",
    "ModelConfig": "sine_model.modeling.config",
    "build_model": "sine_model.modeling.config",
    "build_sine": "sine_model.modeling.config",
    "EncoderConfig": "sine_model.modeling.encoder",
    "ENCODER_CONFIGS": "sine_model.modeling.encoder",
    "ReferenceTokens": "sine_model.modeling.context",
    # presets and weights
    "Preset": "sine_model.hub.presets",
    "WeightSource": "sine_model.hub.presets",
    "LicenceNotice": "sine_model.hub.presets",
    "InputSpec": "sine_model.hub.preset_specs",
    "FittingRecipe": "sine_model.hub.preset_specs",
    "PRESETS": "sine_model.hub.presets",
    "OFFICIAL_PRESET": "sine_model.hub.presets",
    "EMBEDDED_PRESET": "sine_model.hub.presets",
    "get_preset": "sine_model.hub.presets",
    "list_presets": "sine_model.hub.presets",
    "register_preset": "sine_model.hub.presets",
    "from_pretrained": "sine_model.hub.pretrained",
    "default_preset": "sine_model.hub.pretrained",
    "import_checkpoint": "sine_model.hub.pretrained",
    "installed_weights": "sine_model.hub.pretrained",
    "save_preset_weights": "sine_model.hub.pretrained",
    "verify_installed": "sine_model.hub.pretrained",
    "install_steps": "sine_model.hub.cache",
    # engine and results
    "Propagator": "sine_model.engine.propagator",
    "TargetResult": "sine_model.engine.stitching",
    "ObjectScore": "sine_model.engine.stitching",
    "select_device": "sine_model.engine.device",
    # fitting on the references
    "ReferencePreparation": "sine_model.fitting.preparation",
    # files
    "read_image": "sine_model.io.readers",
    "open_image": "sine_model.io.readers",
    "ResultWriter": "sine_model.io.result_writer",
    "FileTargets": "sine_model.io.file_targets",
    # runs at scale (resumable, distributed)
    "propagate_distributed": "sine_model.scaleout.runner",
    "RunSummary": "sine_model.scaleout.runner",
    "load_sample": "sine_model.sample_data",
    # dataset bootstrapping: review state, "label this next", export
    "ReviewState": "sine_model.bootstrap.review",
    "read_review": "sine_model.bootstrap.review",
    "write_review": "sine_model.bootstrap.review",
    "REVIEW_STATUSES": "sine_model.bootstrap.review",
    "TargetUncertainty": "sine_model.bootstrap.ranking",
    "target_uncertainty": "sine_model.bootstrap.ranking",
    "result_uncertainty": "sine_model.bootstrap.ranking",
    "rank_targets": "sine_model.bootstrap.ranking",
    "read_results": "sine_model.bootstrap.results",
    "ExportSample": "sine_model.bootstrap.dataset",
    "EXPORT_FORMATS": "sine_model.bootstrap.export",
    "export_dataset": "sine_model.bootstrap.export",
    "samples_from_review": "sine_model.bootstrap.export",
    # modes and options
    "MODES": "sine_model.modes",
    "INSTANCE_SOURCES": "sine_model.modes",
    "DEFAULT_THRESHOLDS": "sine_model.modes",
    "parse_classes": "sine_model.modes",
    "parse_modes": "sine_model.modes",
    # errors
    "SineError": "sine_model.errors",
    "InputError": "sine_model.errors",
    "PropagationError": "sine_model.errors",
    "InputFileError": "sine_model.errors",
    "ConfigError": "sine_model.errors",
    "CliError": "sine_model.errors",
    "WeightsError": "sine_model.errors",
    "WeightsNotFoundError": "sine_model.errors",
}

__all__ = [
    "CliError",
    "ConfigError",
    "DEFAULT_THRESHOLDS",
    "EMBEDDED_PRESET",
    "ENCODER_CONFIGS",
    "EXPORT_FORMATS",
    "EncoderConfig",
    "ExportSample",
    "FileTargets",
    "FittingRecipe",
    "INSTANCE_SOURCES",
    "InputError",
    "InputFileError",
    "InputSpec",
    "LicenceNotice",
    "MODES",
    "ModelConfig",
    "OFFICIAL_PRESET",
    "ObjectScore",
    "PRESETS",
    "Preset",
    "PropagationError",
    "Propagator",
    "REVIEW_STATUSES",
    "ReferencePreparation",
    "ReferenceTokens",
    "ResultWriter",
    "ReviewState",
    "RunSummary",
    "SINE",
    "SineError",
    "TargetResult",
    "TargetUncertainty",
    "WeightSource",
    "WeightsError",
    "WeightsNotFoundError",
    "build_model",
    "build_sine",
    "default_preset",
    "export_dataset",
    "from_pretrained",
    "get_preset",
    "import_checkpoint",
    "install_steps",
    "installed_weights",
    "list_presets",
    "load_sample",
    "open_image",
    "parse_classes",
    "parse_modes",
    "propagate_distributed",
    "rank_targets",
    "read_image",
    "read_results",
    "read_review",
    "register_preset",
    "result_uncertainty",
    "samples_from_review",
    "save_preset_weights",
    "select_device",
    "target_uncertainty",
    "verify_installed",
    "write_review",
]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'sine_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))


if TYPE_CHECKING:  # static analysers see the real names
    from sine_model.engine.device import select_device
    from sine_model.engine.propagator import Propagator
    from sine_model.engine.stitching import ObjectScore, TargetResult
    from sine_model.errors import (
        CliError,
        ConfigError,
        InputError,
        InputFileError,
        PropagationError,
        SineError,
        WeightsError,
        WeightsNotFoundError,
    )
    from sine_model.fitting.preparation import ReferencePreparation
    from sine_model.hub.cache import install_steps
    from sine_model.hub.presets import (
        EMBEDDED_PRESET,
        OFFICIAL_PRESET,
        PRESETS,
        FittingRecipe,
        InputSpec,
        LicenceNotice,
        Preset,
        WeightSource,
        get_preset,
        list_presets,
        register_preset,
    )
    from sine_model.hub.pretrained import (
        default_preset,
        from_pretrained,
        import_checkpoint,
        installed_weights,
        save_preset_weights,
        verify_installed,
    )
    from sine_model.io.file_targets import FileTargets
    from sine_model.io.readers import open_image, read_image
    from sine_model.io.result_writer import ResultWriter
    from sine_model.modeling.config import ModelConfig, build_model, build_sine
    from sine_model.modeling.context import ReferenceTokens
    from sine_model.modeling.encoder import ENCODER_CONFIGS, EncoderConfig
    from sine_model.modeling.sine import SINE
    from sine_model.modes import DEFAULT_THRESHOLDS, INSTANCE_SOURCES, MODES, parse_classes, parse_modes
    from sine_model.sample_data import load_sample
    from sine_model.scaleout.runner import RunSummary, propagate_distributed

"""What a preset says beyond its weights: how inputs are prepared and how the references are fitted.

:class:`InputSpec` (padding, resizing, normalisation, the object sizes the model sees well) and
:class:`FittingRecipe` (the fitting stages run before propagating, with their budgets in steps) are
fields of :class:`sine_model.hub.presets.Preset`, data like the rest of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sine_model.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD, RESIZE_RULES

__all__ = ["InputSpec", "FittingRecipe"]


@dataclass(frozen=True)
class InputSpec:
    """How images must be prepared for a preset (see :mod:`sine_model.preprocess.transforms`).

    Parameters
    ----------
    pad_size : int
        Side ``P`` of the zero-padded square input, a multiple of ``patch_size``.
    resize_rule : str
        Name in :data:`sine_model.preprocess.transforms.RESIZE_RULES`.
    mean, std : tuple of float
        Per-channel normalisation of RGB values in [0, 1].
    patch_size : int
        Encoder patch side.
    object_diameter_px : tuple of float, optional
        ``(low, high)`` median object diameters, in model-input pixels, that the model segments well.
        With no scale given, references whose objects' median lies outside are resized into it
        (:mod:`sine_model.engine.object_scale`); None: native pixels.
    """

    pad_size: int = 896
    resize_rule: str = "fss"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    patch_size: int = 14
    object_diameter_px: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        band = self.object_diameter_px
        if band is not None and not 0 < band[0] <= band[1]:
            raise ValueError(f"object_diameter_px must be (low, high) with 0 < low <= high, got "
                             f"{self.object_diameter_px}")
        if self.pad_size <= 0 or self.pad_size % self.patch_size:
            raise ValueError(f"pad_size {self.pad_size} must be a multiple of {self.patch_size}")
        if self.resize_rule not in RESIZE_RULES:
            raise ValueError(
                f"unknown resize rule {self.resize_rule!r}: choose one of {sorted(RESIZE_RULES)}"
            )


@dataclass(frozen=True)
class FittingRecipe:
    """Which fitting stages run on the references before propagating, and their budgets in steps.

    What ``napari-sine propagate``, ``demo``, the widget's Run and
    :class:`~sine_model.fitting.preparation.ReferencePreparation` do unless told otherwise. Budgets are
    optimiser steps (seeded), so the same inputs give the same proposals on any machine.

    Parameters
    ----------
    calibrate : bool
        Choose the scale, the projection and the instance split rules on reference halves.
    adapt_steps : int
        Test-time adaptation steps per adapted copy (0: no adaptation).
    refine_steps : int
        Training steps of the full-resolution refiner (0: no refiner).
    refiner_maps : bool
        The refiner reads the model's class maps besides the image features.
    refiner_forest : bool
        The refiner averages its MLP with a random forest on the same features.
    evidence : str
        Where the choice was measured (a docs section), shown with the recipe.
    """

    calibrate: bool = False
    adapt_steps: int = 0
    refine_steps: int = 0
    refiner_maps: bool = True
    refiner_forest: bool = False
    evidence: str = ""

    def __post_init__(self) -> None:
        if self.adapt_steps < 0 or self.refine_steps < 0:
            raise ValueError(f"recipe step budgets must be >= 0, got adapt_steps={self.adapt_steps}, "
                             f"refine_steps={self.refine_steps}")

    def describe(self) -> str:
        """One line: the stages that run, e.g. ``calibrate + refine 400 steps`` (``none``: no fitting)."""
        parts = ["calibrate"] if self.calibrate else []
        parts += [f"adapt {self.adapt_steps} steps"] if self.adapt_steps else []
        if self.refine_steps:
            kind = "MLP + forest" if self.refiner_forest else "MLP"
            reads = "image features and the model's maps" if self.refiner_maps else "image features"
            parts.append(f"refine {self.refine_steps} steps ({kind} on {reads})")
        return " + ".join(parts) or "none"

"""The working scale chosen from the reference objects' size, when the user gives none.

A model segments objects well only in a range of sizes, in model-input pixels: the embedded model
finds none of 144 blobs 8 px across at their native size, and all of them once enlarged 5 times
(docs/quality.md, "Automatic scale"). A preset records that range as data
(:attr:`~sine_model.hub.preset_specs.InputSpec.object_diameter_px`); :func:`choose_object_scale` measures the
median equivalent diameter of the reference objects and resizes them into the range: scale 1 when the
median is inside it (the bundled sample's nuclei, 34 px), otherwise the factor that brings the median to
the nearer end. The factor is capped (:func:`~sine_model.engine.resources.automatic_scale_cap`: a share
of the largest scale the engine accepts, and what the largest reference's tiles leave of the free
memory); a capped choice says so in its line. Only the reference labels are read, so the same
references give the same scale on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ScaleChoice", "choose_object_scale", "median_object_diameter"]

#: Significant digits of an automatic scale (a readable factor; the same on every machine).
_DIGITS = 2


@dataclass(frozen=True)
class ScaleChoice:
    """The working scale and why it was chosen.

    Attributes
    ----------
    scale : float
        The resize factor applied before tiling.
    automatic : bool
        Chosen from the reference objects (False: given by the user, or by calibration).
    median_diameter : float or None
        Median equivalent diameter of the reference objects in original pixels (None: not measured).
    band : tuple of float or None
        The preset's range of object diameters (model-input pixels) the model segments well.
    capped : bool
        The factor the objects asked for was above the cap and was lowered to it.
    """

    scale: float
    automatic: bool
    median_diameter: float | None = None
    band: tuple[float, float] | None = None
    capped: bool = False

    def describe(self) -> str:
        """One line for logs and provenance, e.g. ``scale 4.1 (automatic: ...)``."""
        if not self.automatic:
            return f"scale {self.scale:g} (given)"
        if self.median_diameter is None or self.band is None:
            why = "the model records no object size" if self.band is None else "the references have no object"
            return f"scale {self.scale:g} (automatic: {why}, native pixels)"
        low, high = self.band
        size = f"reference objects' median diameter {self.median_diameter:.1f} px"
        if self.scale == 1 and not self.capped:
            return f"scale 1 (automatic: {size}, within the {low:g}-{high:g} px the model sees well)"
        resized = self.median_diameter * self.scale
        line = (f"scale {self.scale:g} (automatic: {size}, resized to {resized:.0f} px to fit the "
                f"{low:g}-{high:g} px the model sees well")
        if self.capped:
            line += ("; capped by the resource guard, so objects stay smaller than the model prefers: give "
                     "a scale (CLI: --scale) or label larger objects")
        return line + ")"

    def as_dict(self) -> dict:
        """Plain values, for provenance records."""
        return {"scale": self.scale, "automatic": self.automatic, "median_diameter": self.median_diameter,
                "band": None if self.band is None else list(self.band), "capped": self.capped}


def median_object_diameter(label_images: Sequence[np.ndarray]) -> float | None:
    """Median equivalent diameter (``2 √(area / π)``, pixels) of the objects of all ``label_images``.

    Every nonzero value of an image is one object; ids are never used as indices (they may be huge).
    None when there is no object.
    """
    areas = [np.unique(labels[labels != 0], return_counts=True)[1] for labels in label_images]
    areas = np.concatenate(areas) if areas else np.zeros(0)
    if not areas.size:
        return None
    return float(np.median(2.0 * np.sqrt(areas / math.pi)))


def _rounded(value: float) -> float:
    return float(f"{value:.{_DIGITS}g}")


def choose_object_scale(label_images: Sequence[np.ndarray], band: tuple[float, float] | None,
                        cap: float) -> ScaleChoice:
    """The scale that brings the reference objects' median diameter into ``band``.

    Parameters
    ----------
    label_images : sequence of array
        The reference label images.
    band : tuple of float or None
        ``(low, high)`` object diameters (model-input pixels) the model segments well; None: scale 1.
    cap : float
        The largest factor allowed (:func:`~sine_model.engine.resources.automatic_scale_cap`).

    Returns
    -------
    ScaleChoice
        Scale 1 when there is no band or no object, or the median is within the band; otherwise the
        factor (two significant digits) that puts the median at the nearer end, capped at ``cap``.
    """
    if band is None:
        return ScaleChoice(1.0, automatic=True)
    low, high = band
    diameter = median_object_diameter(label_images)
    if diameter is None:
        return ScaleChoice(1.0, automatic=True, band=band)
    wanted = low / diameter if diameter < low else high / diameter if diameter > high else 1.0
    scale = _rounded(wanted)
    capped = scale > cap
    if capped:
        scale = max(1.0, math.floor(cap * 10) / 10)  # never above the cap, never below native pixels
    return ScaleChoice(scale, automatic=True, median_diameter=diameter, band=(float(low), float(high)),
                       capped=capped)

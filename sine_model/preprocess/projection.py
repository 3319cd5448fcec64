"""Reference-fitted grey projection: the colour direction that best separates objects from background.

A model that has seen mostly fluorescence (bright objects on a dark background) reads stained histology
(dark purple nuclei on pink) poorly, even though the reference says exactly which colours are objects.
:class:`ReferenceProjection` learns that from the reference: Fisher's linear discriminant of the RGB
values of object and background pixels gives one direction, the images are projected on it and
stretched so that the reference's 1st and 99th percentiles map to 0 and 1 — objects bright, background
dark, whatever the stain. Grey images get at most a polarity flip and a contrast stretch. The same
projection (fitted once on the references) is applied to references and targets.

It is one of the settings :func:`sine_model.fitting.calibration.calibrate` tries; it is off unless chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ReferenceProjection", "fit_reference_projection"]

RIDGE = 1e-4  # keeps the pooled covariance invertible (grey images have three equal channels)


@dataclass(frozen=True)
class ReferenceProjection:
    """``clip((rgb · weights − low) / (high − low), 0, 1)``, as a grey image replicated to RGB.

    Attributes
    ----------
    weights : tuple of 3 float
        The projection direction (object mean minus background mean, whitened by the pooled covariance).
    low, high : float
        Projected values mapped to 0 and 1 (the references' 1st and 99th percentiles).
    """

    weights: tuple[float, float, float]
    low: float
    high: float

    def grey(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 projection of an ``(H, W, 3)`` float RGB image in [0, 1]."""
        values = np.asarray(rgb, dtype=np.float32) @ np.asarray(self.weights, dtype=np.float32)
        scaled = (values - self.low) / max(self.high - self.low, 1e-12)
        return np.round(np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` float32 RGB in [0, 1]: the projection in all three channels (uint8 levels, as the
        training crops of adaptation see it)."""
        grey = self.grey(rgb).astype(np.float32) / 255.0
        return np.repeat(grey[..., None], 3, axis=-1)


def fit_reference_projection(rgbs: Sequence[np.ndarray],
                             label_images: Sequence[np.ndarray]) -> ReferenceProjection:
    """Fit the projection on reference images (``(H, W, 3)`` float in [0, 1]) and their instance labels.

    Raises
    ------
    ValueError
        When the references have no object pixels or no background pixels.
    """
    pixels = np.concatenate([np.asarray(rgb, np.float64).reshape(-1, 3) for rgb in rgbs])
    inside = np.concatenate([np.asarray(labels).ravel() != 0 for labels in label_images])
    if inside.all() or not inside.any():
        raise ValueError("a reference projection needs both object and background pixels in the references")
    objects, background = pixels[inside], pixels[~inside]
    pooled = RIDGE * np.eye(3)
    for part in (objects, background):
        if len(part) > 1:
            pooled += np.cov(part.T)
    weights = np.linalg.solve(pooled, objects.mean(0) - background.mean(0))
    weights /= max(float(np.abs(weights).sum()), 1e-12)  # scale-free; the stretch below sets the range
    projected = pixels @ weights
    low, high = np.percentile(projected, (1.0, 99.0))
    if high <= low:
        high = low + 1e-6
    return ReferenceProjection(tuple(float(w) for w in weights), float(low), float(high))

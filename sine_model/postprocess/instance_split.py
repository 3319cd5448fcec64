"""Split a foreground mask into instances, with the rule that best rebuilds the reference labels.

A pixel-level answer (SINE's semantic map, a pixel classifier's foreground) merges touching objects.
The usual remedy is a watershed of the distance transform seeded at its local maxima; how far apart
the seeds must be depends on the objects' size, and whether splitting helps at all depends on their
shape (round nuclei: yes; long mitochondria or membranes: it cuts them). :func:`choose_instance_step`
therefore decides on the reference: every candidate rule (connected components, or a watershed with
seed spacings of 0.5, 0.8 and 1.2 of the median object radius) is applied to the reference's own true
foreground, and the one whose instances best match the reference labels (mean instance F1 at IoU 0.5
over the reference images) is kept; ties keep the simplest rule. Nothing is tuned on targets.

Used by the propagation engine for instances made from the semantic answer
(:mod:`sine_model.postprocess.components`) and by the classical baselines of ``bench/evaluate.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian
from skimage.segmentation import watershed

from sine_model.metrics import match_instances

__all__ = ["INSTANCE_METHODS", "SEED_SPACINGS", "InstanceStep", "candidate_steps", "choose_instance_step",
           "remove_small", "relabel_sequential"]

#: ``"cc"``: connected components; ``"watershed"``: distance-transform watershed from its local maxima.
INSTANCE_METHODS: tuple[str, ...] = ("cc", "watershed")
#: Watershed seed spacings tried on the reference, as fractions of the median object radius.
SEED_SPACINGS: tuple[float, ...] = (0.5, 0.8, 1.2)


@dataclass(frozen=True)
class InstanceStep:
    """How a foreground mask becomes instances.

    Attributes
    ----------
    method : {"cc", "watershed"}
        Connected components (4-connected), or watershed of the distance transform from its local
        maxima, within each component.
    min_distance : int
        Minimum spacing of watershed seeds (pixels).
    min_size : int
        Objects smaller than this (pixels) are dropped.
    """

    method: str = "cc"
    min_distance: int = 3
    min_size: int = 0

    def __post_init__(self) -> None:
        if self.method not in INSTANCE_METHODS:
            raise ValueError(f"unknown instance method {self.method!r}: choose one of {INSTANCE_METHODS}")

    def describe(self) -> str:
        """``components`` or ``watershed, seeds N px apart`` (for messages and provenance)."""
        return "components" if self.method == "cc" else f"watershed, seeds {self.min_distance} px apart"

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """Instance labels (uint32, 1..n in raster order of first pixel) of a boolean foreground mask."""
        mask = np.asarray(mask, dtype=bool)
        components, n = ndi.label(mask)
        components = remove_small(components, self.min_size)  # specks need no seeds
        mask = components > 0
        if self.method == "watershed" and mask.any():
            distance = ndi.distance_transform_edt(mask)
            distance = gaussian(distance, sigma=1.0, preserve_range=True)
            peaks = peak_local_max(distance, min_distance=max(1, self.min_distance), labels=components,
                                   exclude_border=False)
            markers = np.zeros(mask.shape, np.int64)
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
            seeded = np.zeros(n + 1, bool)
            seeded[components[tuple(peaks.T)]] = True
            unseeded = ~seeded[components] & mask  # components without a peak keep their own label
            markers[unseeded] = components[unseeded] + len(peaks)
            components = watershed(-distance, markers, mask=mask)
        return relabel_sequential(remove_small(components, self.min_size))


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """``labels`` with objects of fewer than ``min_size`` pixels set to 0 (a copy when any is removed)."""
    if min_size <= 1 or not labels.any():
        return labels
    counts = _dense_counts(labels)
    if counts is not None:  # small non-negative ids (components): a lookup table, no sort
        small = counts < min_size
        small[0] = False
        if not small.any():
            return labels
        labels = labels.copy()
        labels[small[labels]] = 0
        return labels
    # np.unique, not np.bincount: ids are names, and a valid id of 2**31-1 must not size an array
    values, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    small = (sizes < min_size) & (values != 0)
    if not small.any():
        return labels
    labels = labels.copy()
    labels[small[inverse.reshape(labels.shape)]] = 0
    return labels


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """uint32 labels renumbered 1..n in order of value, 0 kept as background."""
    counts = _dense_counts(labels)
    if counts is not None:  # the same numbering through a lookup table (no sort)
        values = np.flatnonzero(counts)
        lookup = np.zeros(counts.size, np.uint32)
        lookup[values] = np.arange(values.size, dtype=np.uint32) + (values.size > 0 and values[0] != 0)
        return lookup[labels]
    values, inverse = np.unique(labels, return_inverse=True)
    out = inverse.reshape(labels.shape).astype(np.uint32)
    if values.size and values[0] != 0:
        out += 1
    return out


def _dense_counts(labels: np.ndarray) -> np.ndarray | None:
    """Pixels per id (``np.bincount``) when ids are non-negative integers below the pixel count, else None.

    Component labels (1..n) qualify; then a count table costs one pass instead of ``np.unique``'s sort.
    """
    if labels.size == 0 or labels.dtype.kind not in "iu":
        return None
    if labels.dtype.kind == "i" and labels.min() < 0:
        return None
    if int(labels.max()) >= labels.size:
        return None
    return np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=1)


def _median_area(label_images: Sequence[np.ndarray]) -> float:
    # per-object pixel counts by np.unique: a bincount would allocate one slot per possible id
    areas = [np.unique(labels[labels != 0], return_counts=True)[1]
             for labels in (np.asarray(x) for x in label_images)]
    areas = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    areas = areas[areas > 0]
    return float(np.median(areas)) if areas.size else 0.0


def candidate_steps(labels: np.ndarray | Sequence[np.ndarray],
                    min_size: int | None = None) -> list[InstanceStep]:
    """The rules :func:`choose_instance_step` compares, sized by the reference objects.

    Parameters
    ----------
    labels : np.ndarray or sequence of np.ndarray
        One or more reference instance label images (0 = background).
    min_size : int, optional
        Objects smaller than this are dropped by every candidate; default ``max(4, 0.15 × median
        object area)``.

    Returns
    -------
    list of InstanceStep
        Connected components first, then a watershed per seed spacing (:data:`SEED_SPACINGS` × median
        radius, at least 2 px); only connected components when there are no objects.
    """
    images = [np.asarray(labels)] if isinstance(labels, np.ndarray) else [np.asarray(x) for x in labels]
    median = _median_area(images)
    if median == 0:
        return [InstanceStep(min_size=max(0, int(min_size or 0)))]
    if min_size is None:
        min_size = max(4, int(0.15 * median))
    radius = float(np.sqrt(median / np.pi))
    return [InstanceStep("cc", 1, min_size)] + [
        InstanceStep("watershed", max(2, round(f * radius)), min_size) for f in SEED_SPACINGS
    ]


def choose_instance_step(labels: np.ndarray | Sequence[np.ndarray],
                         min_size: int | None = None) -> InstanceStep:
    """The rule that best rebuilds reference instance labels from their own foreground.

    Parameters
    ----------
    labels : np.ndarray or sequence of np.ndarray
        One or more reference instance label images (0 = background).
    min_size : int, optional
        As for :func:`candidate_steps`.

    Returns
    -------
    InstanceStep
        The candidate of :func:`candidate_steps` with the highest mean instance F1 on the references;
        ties keep the simplest (connected components first).
    """
    images = [np.asarray(labels)] if isinstance(labels, np.ndarray) else [np.asarray(x) for x in labels]
    candidates = candidate_steps(images, min_size)
    if len(candidates) == 1:
        return candidates[0]
    scores = [np.mean([match_instances(image, step.apply(image > 0)).f1 for image in images])
              for step in candidates]
    return candidates[int(np.argmax(scores))]

"""Instances from a border-aware pixel answer: the refiner's output and the forest + border baseline's.

A pixel classifier with an object-border class (the objects' inner rim, :func:`inner_rim`, as ilastik
users label it for touching objects) separates touching objects where the border pixels lie between
them: the border-free object pixels seed a watershed (:func:`seeded_instances`) that shares the border
pixels out. :class:`RefinedMaps` holds the refiner's answer for one target and makes its instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, watershed

from sine_model.postprocess.components import semantic_components
from sine_model.postprocess.instance_split import relabel_sequential, remove_small

__all__ = ["RefinedMaps", "inner_rim", "seeded_instances"]


def inner_rim(labels: np.ndarray, fraction: float = 1 / 8) -> np.ndarray:
    """Object pixels within ``fraction`` of the median object radius (at least 1 px) of another label."""
    labels = np.asarray(labels)
    areas = np.unique(labels[labels != 0], return_counts=True)[1]  # not bincount: ids may be 2**31-1
    if areas.size == 0:
        return np.zeros(np.shape(labels), bool)
    radius = float(np.sqrt(np.median(areas) / np.pi))
    rim = find_boundaries(labels, mode="inner")
    width = max(1, round(radius * fraction))
    if width > 1:
        rim = ndi.binary_dilation(rim, iterations=width - 1) & (labels > 0)
    return rim


def seeded_instances(mask: np.ndarray, seeds: np.ndarray, height: np.ndarray, min_size: int) -> np.ndarray:
    """Watershed of ``mask`` on ``-height`` from the components of ``seeds`` (unseeded parts kept whole)."""
    markers, n = ndi.label(seeds & mask)
    markers = remove_small(markers, max(2, min_size // 4))
    components = ndi.label(mask)[0]
    seeded = np.zeros(components.max() + 1, bool)
    seeded[components[markers > 0]] = True
    unseeded = ~seeded[components] & mask
    markers[unseeded] = components[unseeded] + n
    return relabel_sequential(remove_small(watershed(-height, markers, mask=mask), min_size))


@dataclass
class RefinedMaps:
    """The refiner's answer for one target.

    Attributes
    ----------
    probs : np.ndarray
        ``(C, H, W)`` probability of each class (its border share included), in the class order given.
    label_map : np.ndarray
        ``(H, W)`` class ids (0 = background): the most likely class where background is not the most
        likely answer.
    seeds : np.ndarray
        ``(H, W)`` bool: object pixels whose most likely answer is not the border.
    heights : np.ndarray, optional
        ``(C, H, W)`` the watershed's height per class: the class probability without the border share,
        which dips on the border between touching objects (default: ``probs``).
    min_areas : mapping, optional
        Class id -> smallest instance learned from the references (pixels); instances also respect the
        caller's ``min_area``, whichever is larger.
    """

    probs: np.ndarray
    label_map: np.ndarray
    seeds: np.ndarray
    heights: np.ndarray | None = None
    min_areas: Mapping[int, int] | None = None

    def instances(self, class_ids: Sequence[int], min_area: Mapping[int, int],
                  min_score: float = float("-inf")) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
        """Instances per class (seeded watershed on the class probability), ids by descending score.

        Rows are (id, mean class probability inside, class); pieces under the class's ``min_area`` (or
        the refiner's own floor, :attr:`min_areas`, if larger) or scoring under ``min_score`` are dropped.
        """
        scores = {int(cls): self.probs[channel] for channel, cls in enumerate(class_ids)}
        heights = scores if self.heights is None else \
            {int(cls): self.heights[channel] for channel, cls in enumerate(class_ids)}
        own = self.min_areas or {}
        floors = {cls: max(int(min_area.get(cls, 1)), int(own.get(cls, 1))) for cls in scores}
        steps = {cls: _SeededSplit(self.seeds, heights[cls], floors[cls]) for cls in scores}
        return semantic_components(self.label_map, floors, scores, min_score, steps)


@dataclass(frozen=True)
class _SeededSplit:
    """A split rule for :func:`~sine_model.postprocess.components.semantic_components`:
    :func:`seeded_instances`."""

    seeds: np.ndarray
    height: np.ndarray
    min_size: int

    def apply(self, mask: np.ndarray) -> np.ndarray:
        return seeded_instances(mask, self.seeds, self.height, self.min_size)


def split_oversized(instances: np.ndarray, median_area: float, area_factor: float = 2.0,
                    h_fraction: float = 0.25, spacing: float = 0.5) -> np.ndarray:
    """Instances over ``area_factor`` × ``median_area`` split at the h-maxima of their distance transform."""
    from skimage.morphology import h_maxima

    out = np.array(instances, copy=True)
    if median_area <= 0 or not out.any():
        return out
    radius = float(np.sqrt(median_area / np.pi))
    h = max(1.0, h_fraction * radius)
    areas = np.bincount(out.ravel())
    next_id = int(out.max()) + 1
    for value, box in enumerate(ndi.find_objects(out), start=1):
        if box is None or areas[value] <= area_factor * median_area:
            continue
        box = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        mask = out[box] == value
        distance = ndi.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        peaks = h_maxima(distance, h) & mask
        markers, n = ndi.label(peaks)
        if n < 2:
            continue
        if spacing > 0:  # plateaus closer than spacing × radius are one object's
            close = ndi.binary_dilation(peaks, iterations=max(1, round(spacing * radius / 2)))
            markers, n = ndi.label(close & mask)
            if n < 2:
                continue
        pieces = watershed(-distance, markers, mask=mask)
        view = out[box]
        for k in range(2, n + 1):
            view[pieces == k] = next_id
            next_id += 1
    return out


def choose_split(label_images, candidates=(0.25, 0.4), area_factor: float = 2.0):
    """The h fraction (or None) whose split best rebuilds the references from their merged foreground."""
    from sine_model.metrics import match_instances

    images = [np.asarray(x) for x in label_images]
    areas = np.concatenate([np.unique(x[x != 0], return_counts=True)[1] for x in images])
    if areas.size == 0:
        return None
    median = float(np.median(areas))
    merged = [ndi.label(x > 0)[0] for x in images]
    best, best_f1 = None, np.mean([match_instances(x, m).f1 for x, m in zip(images, merged, strict=True)])
    for h in candidates:
        f1 = np.mean([match_instances(x, split_oversized(m, median, area_factor, h)).f1
                      for x, m in zip(images, merged, strict=True)])
        if f1 > best_f1 + 1e-9:
            best, best_f1 = h, f1
    return best

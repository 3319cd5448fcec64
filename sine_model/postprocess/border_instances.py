"""Instances from a border-aware pixel answer: the refiner's output and the forest + border baseline's.

A pixel classifier with an object-border class (the objects' inner rim, :func:`inner_rim`, as ilastik
users label it for touching objects) separates touching objects where the border pixels lie between
them: the border-free object pixels seed a watershed (:func:`seeded_instances`) that shares the border
pixels out. :class:`RefinedMaps` holds the refiner's answer for one target and makes its instances.

Where no border is found between touching objects (no intensity dip between touching nuclei), their seeds
merge and the watershed gives one instance for the cluster. :func:`split_oversized` therefore cuts
instances much larger than the reference objects at the peaks of their distance transform (the clusters'
necks), and :func:`instance_floor` keeps objects as small as the reference's own small ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import h_maxima
from skimage.segmentation import find_boundaries, watershed

from sine_model.postprocess.components import semantic_components
from sine_model.postprocess.instance_split import relabel_sequential, remove_small

__all__ = ["MIN_INSTANCE_FRACTION", "MIN_INSTANCE_PIXELS", "SMALL_OBJECT_FACTOR", "SMALL_OBJECT_PERCENTILE",
           "SPLIT_AREA_FACTOR", "SPLIT_H_FRACTION", "SPLIT_SPACING", "RefinedMaps", "inner_rim",
           "instance_floor", "seeded_instances", "split_oversized"]

# The small-object and split constants were chosen with bench/instance_rules.py on the cached pixel answers
# of the first reference of every group (14 pairs: refine 0.589 -> 0.623) and checked on the second ones
# (0.615 -> 0.636; docs/quality.md, "Instance rules on cached maps").
#: Smallest instance kept, as a fraction of the median reference object area (at least
#: :data:`MIN_INSTANCE_PIXELS`): the forest + border's floor and that of the reference-chosen split rules.
MIN_INSTANCE_FRACTION = 0.15
MIN_INSTANCE_PIXELS = 4
#: ... unless the reference itself has smaller objects: the floor is at most this fraction of the
#: :data:`SMALL_OBJECT_PERCENTILE` th percentile of the reference areas (objects of 27-85 px in a reference
#: of median 900 px are objects; 0.15 x median dropped them).
SMALL_OBJECT_FACTOR = 0.5
SMALL_OBJECT_PERCENTILE = 10.0
#: Instances over this multiple of the median reference area are candidates for a split (a cluster).
SPLIT_AREA_FACTOR = 2.0
#: A split needs distance-transform peaks this fraction of the median object radius above the neck between
#: them (h-maxima): 0.25 cut the large irregular DSB nuclei and ISBI cells, 0.5 found fewer clusters.
SPLIT_H_FRACTION = 0.4
#: Peaks closer than this fraction of the median radius are one object's.
SPLIT_SPACING = 0.5


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


def instance_floor(areas: np.ndarray | Sequence[int]) -> int:
    """Smallest instance kept for reference objects of these pixel ``areas``.

    :data:`MIN_INSTANCE_FRACTION` of their median, but no more than :data:`SMALL_OBJECT_FACTOR` times their
    :data:`SMALL_OBJECT_PERCENTILE` th percentile, and at least :data:`MIN_INSTANCE_PIXELS`.
    """
    areas = np.asarray(areas, np.float64)
    if areas.size == 0:
        return MIN_INSTANCE_PIXELS
    floor = min(MIN_INSTANCE_FRACTION * float(np.median(areas)),
                SMALL_OBJECT_FACTOR * float(np.percentile(areas, SMALL_OBJECT_PERCENTILE)))
    return max(MIN_INSTANCE_PIXELS, int(floor))


def split_oversized(instances: np.ndarray, median_area: float, area_factor: float = SPLIT_AREA_FACTOR,
                    h_fraction: float = SPLIT_H_FRACTION, spacing: float = SPLIT_SPACING) -> np.ndarray:
    """Instances over ``area_factor`` × ``median_area`` cut at the peaks of their distance transform.

    Parameters
    ----------
    instances : np.ndarray
        ``(H, W)`` instance labels (non-negative integers, 0 = background).
    median_area : float
        The reference objects' median area (pixels); its disc radius ``r`` scales the rule.
    area_factor : float
        Only instances larger than this many median areas are split.
    h_fraction : float
        Peaks (h-maxima) of the distance transform must rise ``h_fraction × r`` above the neck that joins
        them; an instance with two or more is cut by a watershed of the distance transform.
    spacing : float
        Peaks closer than ``spacing × r`` count as one.

    Returns
    -------
    np.ndarray
        A copy with each split instance's first piece keeping its id and the others new ids after the
        largest one.
    """
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
        peaks = h_maxima(distance, h).astype(bool) & mask
        if ndi.label(peaks)[1] < 2:
            continue
        if spacing > 0:  # plateaus within spacing × r of each other are one object's
            peaks = ndi.binary_dilation(peaks, iterations=max(1, round(spacing * radius / 2))) & mask
        markers, n = ndi.label(peaks)
        if n < 2:
            continue
        pieces = watershed(-distance, markers, mask=mask)
        view = out[box]
        for k in range(2, n + 1):
            view[pieces == k] = next_id
            next_id += 1
    return out


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
        Class id -> smallest instance learned from the references (pixels, :func:`instance_floor`); it
        replaces the caller's ``min_area`` for its classes.
    median_areas : mapping, optional
        Class id -> the reference objects' median area (pixels): instances of that class much larger than
        it are split by :func:`split_oversized` (classes without one are not).
    """

    probs: np.ndarray
    label_map: np.ndarray
    seeds: np.ndarray
    heights: np.ndarray | None = None
    min_areas: Mapping[int, int] | None = None
    median_areas: Mapping[int, float] | None = None

    def instances(self, class_ids: Sequence[int], min_area: Mapping[int, int],
                  min_score: float = float("-inf")) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
        """Instances per class (seeded watershed on the class probability), ids by descending score.

        Rows are (id, mean class probability inside, class); pieces under the class's ``min_area`` (or
        the refiner's own floor, :attr:`min_areas`, where it has one) or scoring under ``min_score`` are
        dropped. Oversized pieces are split first (:attr:`median_areas`).
        """
        scores = {int(cls): self.probs[channel] for channel, cls in enumerate(class_ids)}
        heights = scores if self.heights is None else \
            {int(cls): self.heights[channel] for channel, cls in enumerate(class_ids)}
        own = self.min_areas or {}
        # the refiner's floor is learned from the same references, small objects included: it wins
        floors = {cls: int(own[cls]) if cls in own else int(min_area.get(cls, 1)) for cls in scores}
        medians = self.median_areas or {}
        steps = {cls: _SeededSplit(self.seeds, heights[cls], floors[cls], float(medians.get(cls, 0.0)))
                 for cls in scores}
        return semantic_components(self.label_map, floors, scores, min_score, steps)


@dataclass(frozen=True)
class _SeededSplit:
    """A split rule for :func:`~sine_model.postprocess.components.semantic_components`:
    :func:`seeded_instances`, then :func:`split_oversized`."""

    seeds: np.ndarray
    height: np.ndarray
    min_size: int
    median_area: float = 0.0  # 0: no split of oversized instances

    def apply(self, mask: np.ndarray) -> np.ndarray:
        found = seeded_instances(mask, self.seeds, self.height, self.min_size)
        return split_oversized(found, self.median_area) if self.median_area > 0 else found

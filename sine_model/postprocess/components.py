"""Instances from the semantic answer: connected components of each class.

SINE's own instance answer comes from its instance queries
(:func:`sine_model.postprocess.decode.instance_inference`,
the official behaviour). A model whose instance branch is weak but whose semantic answer is good — the
embedded model, trained for under an hour on a CPU (measured in ``docs/quality.md``) — gives far better
instances as the connected components of its semantic map, the way pixel classifiers (ilastik, the
random-forest baseline of ``bench/evaluate.py``) make instances. Presets choose the source
(``Preset.instance_source``); every run records it.

Each class's foreground is split with the rule that best rebuilds the reference labels of that class
(:func:`instance_steps_by_class`, :mod:`sine_model.postprocess.instance_split`): 4-connected components, or a
distance-transform watershed whose seed spacing follows the reference objects' size, so touching
round objects come apart while long ones are not cut. Pieces smaller than a fraction of the reference
objects' median area are dropped as noise.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage as ndi

from sine_model.labelmaps import smallest_label_dtype
from sine_model.modes import INSTANCE_SOURCES
from sine_model.postprocess.instance_split import InstanceStep, choose_instance_step

__all__ = ["INSTANCE_SOURCES", "MIN_AREA_FRACTION", "instance_steps_by_class", "labels_of_class",
           "min_areas_by_class", "min_component_area", "semantic_components"]

#: Components smaller than this fraction of the median reference object area are dropped.
MIN_AREA_FRACTION: float = 0.1


def min_component_area(reference_areas: np.ndarray | list[int], fraction: float = MIN_AREA_FRACTION) -> int:
    """Smallest component kept: ``fraction`` of the median reference object area, at least 1 pixel.

    Parameters
    ----------
    reference_areas : array-like of int
        Pixel areas of the reference objects (at the targets' pixel size).
    fraction : float, optional
        Fraction of the median area.
    """
    areas = np.asarray(reference_areas, dtype=np.float64)
    if areas.size == 0:
        return 1
    return max(1, int(round(fraction * float(np.median(areas)))))


def min_areas_by_class(label_images: list[np.ndarray], class_of: Mapping[int, int],
                       fraction: float = MIN_AREA_FRACTION) -> dict[int, int]:
    """:func:`min_component_area` per class, from reference label images and their label -> class map."""
    areas: dict[int, list[int]] = {}
    for labels in label_images:
        values, counts = np.unique(labels[labels != 0], return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist(), strict=True):
            areas.setdefault(class_of[int(value)], []).append(count)
    return {cls: min_component_area(a, fraction) for cls, a in areas.items()}


def labels_of_class(labels: np.ndarray, class_of: Mapping[int, int], cls: int) -> np.ndarray:
    """``labels`` with only the objects of class ``cls`` kept (label value -> class map ``class_of``)."""
    labels = np.asarray(labels)
    return np.where(np.isin(labels, [v for v, c in class_of.items() if c == cls]), labels, 0)


def instance_steps_by_class(label_images: list[np.ndarray], class_of: Mapping[int, int],
                            fraction: float = MIN_AREA_FRACTION) -> dict[int, InstanceStep]:
    """Per class, the :class:`~sine_model.postprocess.instance_split.InstanceStep` chosen on the
    reference labels.

    Parameters
    ----------
    label_images : list of np.ndarray
        Reference instance label images.
    class_of : mapping
        Label value -> class id.
    fraction : float, optional
        Objects under this fraction of the class's median reference area are dropped (the area floor of
        :func:`min_areas_by_class`).
    """
    floors = min_areas_by_class(label_images, class_of, fraction)
    steps = {}
    for cls, floor in floors.items():
        parts = (labels_of_class(labels, class_of, cls) for labels in label_images)
        per_class = [part for part in parts if part.any()]
        steps[cls] = choose_instance_step(per_class, min_size=floor)
    return steps


def semantic_components(
    label_map: np.ndarray,
    min_area: int | Mapping[int, int] = 1,
    class_scores: Mapping[int, np.ndarray] | None = None,
    min_score: float = float("-inf"),
    steps: Mapping[int, InstanceStep] | None = None,
) -> tuple[np.ndarray, list[tuple[int, float, int]]]:
    """Split a semantic class map into instances: the 4-connected components (or ``steps``) of each class.

    Parameters
    ----------
    label_map : np.ndarray
        ``(H, W)`` class map, 0 = background.
    min_area : int or mapping, optional
        Smallest component kept, in pixels; a mapping gives it per class (missing classes: 1).
    class_scores : mapping, optional
        Class id -> ``(H, W)`` score map (e.g. the semantic probability); an instance's score is the
        mean inside it. Without it every score is 1.
    min_score : float, optional
        Instances scoring below this are dropped (the instance score threshold).
    steps : mapping, optional
        Class id -> :class:`~sine_model.postprocess.instance_split.InstanceStep` that splits the class's
        foreground
        (e.g. from :func:`instance_steps_by_class`), or any rule with that ``apply(mask)`` method; classes
        without one use 4-connected components.

    Returns
    -------
    instances : np.ndarray
        ``(H, W)`` instance map, ids 1..n in descending score (ties: class, then raster order).
    rows : list of (id, score, class)
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2:
        raise ValueError(f"label_map must be a 2-D class map, got shape {label_map.shape}")
    found: list[tuple[float, int, int, np.ndarray]] = []  # (score, class, order, flat indices)
    for cls in np.unique(label_map):
        if cls == 0:
            continue
        cls = int(cls)
        floor = min_area.get(cls, 1) if isinstance(min_area, Mapping) else int(min_area)
        step = steps.get(cls) if steps is not None else None
        if step is None:
            components, count = ndi.label(label_map == cls)
        else:
            components = step.apply(label_map == cls)
            count = int(components.max())
        if count == 0:
            continue
        flat = components.ravel()
        order = np.argsort(flat, kind="stable")
        bounds = np.searchsorted(flat[order], np.arange(1, count + 2))
        scores = None if class_scores is None else np.asarray(class_scores[cls]).ravel()
        for n in range(count):
            pixels = order[bounds[n]:bounds[n + 1]]
            if pixels.size < floor:
                continue
            score = 1.0 if scores is None else float(scores[pixels].mean())
            if score < min_score:
                continue
            found.append((score, cls, len(found), pixels))
    found.sort(key=lambda f: (-f[0], f[1], f[2]))
    instances = np.zeros(label_map.size, dtype=smallest_label_dtype(len(found)))
    rows = []
    for new_id, (score, cls, _, pixels) in enumerate(found, start=1):
        instances[pixels] = new_id
        rows.append((new_id, score, cls))
    return instances.reshape(label_map.shape), rows

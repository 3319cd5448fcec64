"""Reference objects carried into a registered target, for ID answers made by matching.

When a target shows a reference's scene (registered by :func:`~sine_model.postprocess.id_matching.register`),
the reference objects say more than their centroids:

- **Unchanged objects.** Where the target's pixels around a reference object are the reference's own (local
  correlation ≥ :data:`UNCHANGED_CORRELATION` over the object's box widened by half a median diameter, the
  whole object inside the target and clear of the reference's border), the object is the one the user
  drew: its ID answer is the user's mask, shifted. This is the reference plane of a stack propagated with
  the rest of it, or two overlapping tiles of one acquisition; noisy frames of a time-lapse stay under the
  bar and are matched as usual.
- **Splitting merged objects.** An instance object of the target that holds the cores (the object less its
  :data:`CORE_DEPTH`-pixel rim) of two or more registered reference objects is cut between them (each pixel
  to the nearest core inside the object), so that touching objects the instance answer merged can each take
  their own id.

Both only read images and labels, never the model.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries, watershed

__all__ = ["CORE_DEPTH", "UNCHANGED_CORRELATION", "shifted_labels", "split_by_cores", "unchanged_objects"]

#: Local correlation of target and reference around an object above which the object is unchanged.
UNCHANGED_CORRELATION = 0.99
#: Rim (pixels) taken off a reference object to make its core (objects thinner than that keep their middle).
CORE_DEPTH = 1
#: Share of a core that must lie inside an instance object for the core to count there.
_CORE_INSIDE = 0.5


def _sequential(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, index image): ``values[index] == labels``, ``values[0] == 0``, indices 1.. for objects."""
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(np.shape(labels))
    if values.size == 0 or values[0] != 0:
        values, inverse = np.concatenate([[0], values]).astype(values.dtype), inverse + 1
    return values, inverse


def shifted_labels(labels: np.ndarray, shift: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Reference ``labels`` in the coordinates of a target of ``shape`` (0 where the reference has none).

    ``shift`` takes target coordinates to reference coordinates (``register``'s convention).
    """
    out = np.zeros(shape, dtype=np.asarray(labels).dtype)
    dy, dx = shift
    y0, y1 = max(0, -dy), min(shape[0], labels.shape[0] - dy)
    x0, x1 = max(0, -dx), min(shape[1], labels.shape[1] - dx)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = labels[y0 + dy : y1 + dy, x0 + dx : x1 + dx]
    return out


def unchanged_objects(reference: np.ndarray, labels: np.ndarray, target: np.ndarray, shift: tuple[int, int],
                      diameter: float) -> list[tuple[int, float, tuple[slice, slice], np.ndarray]]:
    """The reference objects the target shows unchanged (see the module docstring).

    Parameters
    ----------
    reference, target : array
        Grey images (float).
    labels : array of int
        The reference's objects.
    shift : (int, int)
        Target -> reference translation.
    diameter : float
        Median object diameter (pixels): the context around each object is half of it.

    Returns
    -------
    list of (id, correlation, target box, mask in the box)
    """
    values, inverse = _sequential(np.asarray(labels))
    margin = max(2, round(diameter / 2))
    dy, dx = shift
    found = []
    for k, box in enumerate(ndi.find_objects(inverse), start=1):  # (index k's box is entry k - 1)
        if box is None:
            continue
        ys, xs = box
        if _cut_by_reference(box, inverse.shape, target.shape, shift):
            continue  # the target sees past the reference's border there: the mask may be part of it
        ty0, ty1, tx0, tx1 = ys.start - dy, ys.stop - dy, xs.start - dx, xs.stop - dx
        if ty0 < 0 or tx0 < 0 or ty1 > target.shape[0] or tx1 > target.shape[1]:
            continue  # the object is not all inside the target: it may be cut there
        cy0 = max(ys.start - margin, 0, dy)
        cy1 = min(ys.stop + margin, reference.shape[0], target.shape[0] + dy)
        cx0 = max(xs.start - margin, 0, dx)
        cx1 = min(xs.stop + margin, reference.shape[1], target.shape[1] + dx)
        a = reference[cy0:cy1, cx0:cx1].ravel()
        b = target[cy0 - dy : cy1 - dy, cx0 - dx : cx1 - dx].ravel()
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            continue
        correlation = float(np.corrcoef(a, b)[0, 1])
        if correlation >= UNCHANGED_CORRELATION:
            found.append((int(values[k]), correlation, (slice(ty0, ty1), slice(tx0, tx1)), inverse[box] == k))
    return found


def _cut_by_reference(box: tuple[slice, slice], ref_shape: tuple[int, ...], target_shape: tuple[int, ...],
                      shift: tuple[int, int]) -> bool:
    """Whether an object touching the reference's border continues where the target still has pixels."""
    for span, ref_size, target_size, offset in zip(box, ref_shape[:2], target_shape[:2], shift, strict=True):
        if span.start == 0 and offset < 0:  # the target has pixels before the reference's first row/column
            return True
        if span.stop == ref_size and ref_size - offset < target_size:  # ... or after its last
            return True
    return False


def _cores(labels: np.ndarray) -> np.ndarray:
    """``labels`` less a :data:`CORE_DEPTH`-pixel rim per object (an object thinner than that keeps its
    deepest pixels)."""
    values, inverse = _sequential(labels)
    depth = ndi.distance_transform_edt(~(find_boundaries(inverse, mode="inner") | (inverse == 0)))
    deepest = np.asarray(ndi.maximum(depth, inverse, np.arange(len(values))), dtype=float)
    keep = depth >= np.minimum(CORE_DEPTH, deepest)[inverse]
    return np.where(keep & (inverse > 0), labels, 0)


def split_by_cores(instances: np.ndarray, reference_labels: np.ndarray) -> np.ndarray:
    """``instances`` with every object that holds two or more reference cores cut between them.

    Parameters
    ----------
    instances : array of int
        The target's objects.
    reference_labels : array of int
        Registered reference objects in target coordinates (:func:`shifted_labels`).

    Returns
    -------
    array of int64
        New labels: objects holding fewer than two cores keep their pixels (renumbered), each piece of a
        cut object is its own object.
    """
    instances = np.asarray(instances)
    cores = _cores(np.asarray(reference_labels))
    core_values, core_area = np.unique(cores, return_counts=True)
    area_of = dict(zip(core_values.tolist(), core_area.tolist(), strict=True))
    values, inverse = _sequential(instances)
    out = inverse.astype(np.int64)
    next_id = len(values)
    for k, box in enumerate(ndi.find_objects(inverse), start=1):
        if box is None:
            continue
        inside = inverse[box] == k
        held, count = np.unique(cores[box][inside], return_counts=True)
        markers_of = [int(v) for v, c in zip(held.tolist(), count.tolist(), strict=True)
                      if v != 0 and c >= _CORE_INSIDE * area_of[v]]
        if len(markers_of) < 2:
            continue
        markers = np.zeros(inside.shape, np.int32)
        for n, value in enumerate(markers_of, start=1):
            markers[inside & (cores[box] == value)] = n
        # each pixel goes to the nearest core (geodesic, inside the object)
        pieces = watershed(ndi.distance_transform_edt(markers == 0), markers, mask=inside)
        region = out[box]
        for n in range(2, len(markers_of) + 1):
            region[pieces == n] = next_id
            next_id += 1
    return out

"""ID answers made by matching the instance answer's objects to the reference objects.

For a model whose ID head is weak (the embedded model's raw ID masks reach IoU 0.35 at best on its own
reference), the ID answer can be derived from its instance answer instead: each object found in the
target takes the id of the reference object it matches. A preset chooses this as data
(:attr:`~sine_model.hub.presets.Preset.id_source` ``"matching"``); the official model keeps its own ID
outputs.

How objects are matched:

1. **Registration.** The target is aligned to each reference by phase correlation of their grey images
   (a translation). Its confidence is the correlation of the two images where they overlap after the
   shift: a target that does not show the reference's scene (no overlap, or correlation under
   :data:`MIN_REGISTRATION`) gets no ID answer from that reference, since positions mean nothing there.
2. **Similarity** of a target object ``t`` and a reference object ``r`` (both with centroid, area and mean
   grey): ``exp(-½ (d² + a² + g²))`` with ``d`` the distance of the registered centroids in units of
   :data:`POSITION_TOLERANCE` median reference diameters, ``a`` the log area ratio over
   :data:`AREA_TOLERANCE` (0 when either object touches its image border: it may be cut) and ``g`` the
   mean grey difference over the spread of the reference objects' means; times the registration's confidence.
3. **Assignment.** Pairs within :data:`GATE_DIAMETERS` diameters are candidates; the Hungarian algorithm
   (:func:`scipy.optimize.linear_sum_assignment`, on each connected group of candidates) maximises the
   summed log similarity; assigned pairs under the ID score threshold (the similarity floor) are dropped.

Before matching, the registered reference objects are carried into the target
(:mod:`~sine_model.postprocess.id_transfer`): objects the target shows unchanged keep the user's mask, and
instance objects holding several reference objects' cores are cut between them.

Nothing here reads the model: only the reference images and labels and the target and its instance
labels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from sine_model.postprocess.id_transfer import shifted_labels, split_by_cores, unchanged_objects

__all__ = ["ID_SOURCES", "MIN_REGISTRATION", "ReferenceObjects", "describe_references", "match_ids",
           "register"]

#: How the ID answer is made: the model's ID queries (official), or matching the instance answer's objects
#: to the reference objects (this module).
ID_SOURCES: tuple[str, ...] = ("queries", "matching")
#: Registration confidence (correlation of the overlapping images) under which positions are not trusted.
MIN_REGISTRATION = 0.5
#: Centroid distance, in median reference diameters, at which the position term is 1 (similarity e^-½).
POSITION_TOLERANCE = 0.5
#: Log area ratio at which the area term is 1 (a factor of about 1.65).
AREA_TOLERANCE = 0.5
#: Candidates are pairs whose registered centroids are within this many median diameters.
GATE_DIAMETERS = 2.0
_MIN_OVERLAP = 0.1  # fraction of the target that must overlap the reference after the shift


@dataclass
class ReferenceObjects:
    """The reference objects as the matching sees them.

    Attributes
    ----------
    ids : array of int
        Label value (object id) of each object of each reference (an id in two references appears twice).
    refs : array of int
        Which reference each row comes from.
    centroids : array of float, (n, 2)
        Row, column of each object's centroid.
    areas, means : array of float
        Pixel count and mean grey of each object.
    border : array of bool
        Whether each object touches its image's border (possibly cut: its area is not compared).
    greys : list of array
        Each reference's grey image (float32), for registration.
    diameter : float
        Median equivalent diameter of the objects (pixels).
    labels : list of array
        Each reference's label image (objects carried into registered targets).
    spectra : list of dict
        Per reference, its registration spectra by padded shape (:func:`register`'s ``cache``: targets of
        one size reuse them; filled as targets come).
    """

    ids: np.ndarray
    refs: np.ndarray
    centroids: np.ndarray
    areas: np.ndarray
    means: np.ndarray
    border: np.ndarray
    greys: list[np.ndarray]
    diameter: float
    labels: list[np.ndarray]
    spectra: list[dict] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.spectra = [{} for _ in self.greys]  # (a copy made by dataclasses.replace starts empty)


def grey_of(rgb: np.ndarray) -> np.ndarray:
    """Mean over channels of an ``(H, W, 3)`` (or ``(H, W)``) image, float32."""
    image = np.asarray(rgb, dtype=np.float32)
    return image.mean(axis=-1) if image.ndim == 3 else image


def _object_table(grey: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Values, centroids, areas, mean greys and border contact of the objects of ``labels``.

    Ids are never used as indices (they may be huge). An object touching the image border may be cut
    by it: its area is not compared.
    """
    values, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    index = np.arange(len(values))
    keep = values != 0
    areas = np.bincount(inverse.ravel(), minlength=len(values)).astype(np.float64)
    centroids = np.asarray(ndi.center_of_mass(np.ones_like(grey), inverse, index), dtype=np.float64)
    means = np.asarray(ndi.mean(grey, inverse, index), dtype=np.float64)
    border = np.zeros(len(values), dtype=bool)
    border[np.concatenate([inverse[0], inverse[-1], inverse[:, 0], inverse[:, -1]])] = True
    return values[keep], centroids[keep].reshape(-1, 2), areas[keep], means[keep], border[keep]


def describe_references(rgbs: Sequence[np.ndarray], label_images: Sequence[np.ndarray]) -> ReferenceObjects:
    """The :class:`ReferenceObjects` of reference images (``(H, W, 3)`` float) and their label images."""
    greys = [grey_of(rgb) for rgb in rgbs]
    tables = [_object_table(grey, np.asarray(labels))
              for grey, labels in zip(greys, label_images, strict=True)]
    ids = np.concatenate([t[0] for t in tables]).astype(np.int64)
    refs = np.concatenate([np.full(len(t[0]), k) for k, t in enumerate(tables)])
    areas = np.concatenate([t[2] for t in tables])
    diameter = float(np.median(2 * np.sqrt(areas / math.pi))) if areas.size else 1.0
    return ReferenceObjects(ids=ids, refs=refs, centroids=np.concatenate([t[1] for t in tables]), areas=areas,
                            means=np.concatenate([t[3] for t in tables]),
                            border=np.concatenate([t[4] for t in tables]), greys=greys, diameter=diameter,
                            labels=[np.asarray(labels) for labels in label_images])


#: Spectra kept per reference (the most recent padded shapes; one per target size).
SPECTRA_KEPT = 4


def register(reference: np.ndarray, target: np.ndarray,
             cache: dict | None = None) -> tuple[tuple[int, int], float]:
    """Translation taking target coordinates to reference coordinates, and its confidence.

    Phase correlation of the mean-subtracted greys, zero-padded to the sum of their sizes (no
    wrap-around); the confidence is the Pearson correlation of the overlap after the shift (0 when the
    overlap is under a tenth of the target, or flat). ``cache`` (a dict kept with ``reference``) keeps
    the reference's spectrum for each padded shape, so targets of one size transform it once.
    """
    tgt = target - target.mean()
    shape = (reference.shape[0] + tgt.shape[0], reference.shape[1] + tgt.shape[1])
    spectrum = None if cache is None else cache.get(shape)
    if spectrum is None:
        spectrum = np.fft.rfft2(reference - reference.mean(), shape)
        if cache is not None:  # (threads answering targets at once may both fill it: the same values)
            for oldest in list(cache)[: max(0, len(cache) + 1 - SPECTRA_KEPT)]:
                cache.pop(oldest, None)
            cache[shape] = spectrum
    cross = spectrum * np.conj(np.fft.rfft2(tgt, shape))
    cross /= np.maximum(np.abs(cross), 1e-12)
    peak = np.unravel_index(int(np.argmax(np.fft.irfft2(cross, shape))), shape)
    dy, dx = (int(p) if p <= s // 2 else int(p) - s for p, s in zip(peak, shape, strict=True))
    y0, y1 = max(0, dy), min(reference.shape[0], tgt.shape[0] + dy)  # the overlap in reference coordinates
    x0, x1 = max(0, dx), min(reference.shape[1], tgt.shape[1] + dx)
    if y1 <= y0 or x1 <= x0:  # (a negative stop would index from the end)
        return (dy, dx), 0.0
    a, b = reference[y0:y1, x0:x1], target[y0 - dy : y1 - dy, x0 - dx : x1 - dx]
    if a.size < _MIN_OVERLAP * target.size or np.ptp(a) == 0 or np.ptp(b) == 0:
        return (dy, dx), 0.0
    return (dy, dx), float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _similarities(objects: ReferenceObjects, rows: np.ndarray, centroids: np.ndarray, areas: np.ndarray,
                  means: np.ndarray, border: np.ndarray,
                  confidence: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate (target object, reference row) pairs within the gate, and their similarities."""
    tree = cKDTree(objects.centroids[rows]) if len(rows) else None
    pairs_t, pairs_r = [], []
    if tree is not None:
        for t, near in enumerate(tree.query_ball_point(centroids, GATE_DIAMETERS * objects.diameter)):
            pairs_t += [t] * len(near)
            pairs_r += [int(rows[k]) for k in near]
    t_idx, r_idx = np.asarray(pairs_t, dtype=np.int64), np.asarray(pairs_r, dtype=np.int64)
    if not t_idx.size:
        return t_idx, r_idx, np.zeros(0)
    spread = max(float(objects.means.std()), 1e-3 * max(1.0, float(np.abs(objects.means).max())))
    distance = np.linalg.norm(centroids[t_idx] - objects.centroids[r_idx], axis=1) / objects.diameter
    area = np.log(np.maximum(areas[t_idx], 1) / np.maximum(objects.areas[r_idx], 1))
    area[border[t_idx] | objects.border[r_idx]] = 0.0  # a cut object's area says nothing
    grey = (means[t_idx] - objects.means[r_idx]) / spread
    cost = (distance / POSITION_TOLERANCE) ** 2 + (area / AREA_TOLERANCE) ** 2 + grey**2
    return t_idx, r_idx, np.exp(-0.5 * cost) * confidence[r_idx]


def match_ids(objects: ReferenceObjects, target_rgb: np.ndarray, instance_labels: np.ndarray,
              floor: float, *, foreground: np.ndarray | None = None,
              transfer: bool = True) -> tuple[np.ndarray, list[tuple[int, float, str]]]:
    """The ID answer of a target: its instance objects relabelled with the ids they match.

    Parameters
    ----------
    objects : ReferenceObjects
        The references (:func:`describe_references`).
    target_rgb : array
        The target, ``(H, W, 3)`` float (or grey).
    instance_labels : array of int
        The target's instance answer.
    floor : float
        Similarity under which an assigned pair is dropped (the ID score threshold).
    foreground : array of bool, optional
        The target's semantic answer: its pieces outside every instance object (dropped there by size
        or score) may also take an id.
    transfer : bool
        Carry the registered reference objects into the target first (unchanged objects keep the user's
        mask; merged objects are cut between reference cores: :mod:`~sine_model.postprocess.id_transfer`).
        ``False`` matches the instance objects as they are.

    Returns
    -------
    id_map : array of int64
        Reference ids at the target's size (0: no object).
    found : list of (int, float, str)
        ``(id, score, how)`` of every id given, ascending by id: ``how`` is ``"matched"`` (score = the
        similarity) or ``"unchanged"`` (score = the local correlation).
    """
    grey = grey_of(target_rgb)
    labels = np.asarray(instance_labels)
    id_map = np.zeros(labels.shape, dtype=np.int64)
    if not objects.ids.size:
        return id_map, []
    trusted = []
    for k, reference in enumerate(objects.greys):
        shift, trust = register(reference, grey, objects.spectra[k])
        if trust >= MIN_REGISTRATION and (objects.refs == k).any():
            trusted.append((k, shift, trust))
    if not trusted:  # positions mean nothing in another scene
        return id_map, []
    found: list[tuple[int, float, str]] = []
    if transfer:
        labels = _transfer(objects, grey, labels, foreground, trusted, id_map, found)
    taken = np.array([value for value, _, _ in found], dtype=np.int64)
    values, centroids, areas, means, border = _object_table(grey, labels)
    if not values.size:
        return id_map, sorted(found)
    # positions in each reference's frame; one block of candidates per trusted reference
    confidence = np.zeros(len(objects.ids))
    blocks = []
    for k, shift, trust in trusted:
        rows = np.flatnonzero((objects.refs == k) & ~np.isin(objects.ids, taken))
        confidence[rows] = trust
        blocks.append(_similarities(objects, rows, centroids + np.asarray(shift, float), areas, means,
                                    border, confidence))
    t_idx, r_idx, sim = (np.concatenate(parts) for parts in zip(*blocks, strict=True))
    if not t_idx.size:
        return id_map, sorted(found)
    # one column per id: an id seen in several references keeps its best similarity per target object
    id_values, id_col = np.unique(objects.ids[r_idx], return_inverse=True)
    best: dict[tuple[int, int], float] = {}
    for t, c, s in zip(t_idx.tolist(), id_col.tolist(), sim.tolist(), strict=True):
        best[(t, c)] = max(s, best.get((t, c), 0.0))
    pairs = np.array(list(best), dtype=np.int64).reshape(-1, 2)
    weights = np.array(list(best.values()))
    for t, c, s in _assign(pairs, weights, len(values), len(id_values)):
        if s > floor:
            id_map[labels == values[t]] = id_values[c]
            found.append((int(id_values[c]), float(s), "matched"))
    return id_map, sorted(found)


def _transfer(objects: ReferenceObjects, grey: np.ndarray, labels: np.ndarray, foreground: np.ndarray | None,
              trusted: list[tuple[int, tuple[int, int], float]], id_map: np.ndarray,
              found: list[tuple[int, float, str]]) -> np.ndarray:
    """Write the unchanged reference objects into ``id_map`` (and ``found``); return the target objects
    left to match, merged ones cut between the cores of the best-registered reference's other objects."""
    taken: set[int] = set()
    for k, shift, _ in sorted(trusted, key=lambda t: -t[2]):
        for value, correlation, box, mask in unchanged_objects(objects.greys[k], objects.labels[k], grey,
                                                               shift, objects.diameter):
            if value in taken:
                continue
            window = id_map[box]
            window[mask & (window == 0)] = value
            taken.add(value)
            found.append((value, correlation, "unchanged"))
    candidates = np.array(labels, dtype=np.int64)
    if foreground is not None:  # semantic pieces the instance answer left out
        extra, _ = ndi.label(np.asarray(foreground, bool) & (candidates == 0))
        offset = int(candidates.max()) if candidates.size else 0
        candidates = np.where(extra > 0, extra + offset, candidates)
    candidates[id_map > 0] = 0  # what is left of an object merged with an unchanged one is matched alone
    k, shift, _ = max(trusted, key=lambda t: t[2])
    cores = shifted_labels(objects.labels[k], shift, candidates.shape)
    if taken:
        cores[np.isin(cores, list(taken))] = 0
    return split_by_cores(candidates, cores)


def _assign(pairs: np.ndarray, weights: np.ndarray, n_targets: int,
            n_ids: int) -> list[tuple[int, int, float]]:
    """Hungarian assignment maximising Σ log similarity, separately on each connected group of pairs."""
    if not len(pairs):
        return []
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], n_targets + pairs[:, 1])),
                       shape=(n_targets + n_ids,) * 2)
    _, group = connected_components(graph, directed=False)
    out = []
    for g in np.unique(group[pairs[:, 0]]):
        members = np.flatnonzero(group[pairs[:, 0]] == g)
        rows, row_of = np.unique(pairs[members, 0], return_inverse=True)
        cols, col_of = np.unique(pairs[members, 1], return_inverse=True)
        cost = np.full((len(rows), len(cols)), 1e6)  # not a candidate: never chosen over a candidate
        cost[row_of, col_of] = -np.log(np.maximum(weights[members], 1e-300))
        for i, j in zip(*linear_sum_assignment(cost), strict=True):
            if cost[i, j] < 1e6:
                out.append((int(rows[i]), int(cols[j]), float(np.exp(-cost[i, j]))))
    return out

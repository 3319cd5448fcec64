"""Segmentation quality metrics for label images: semantic IoU, instance F1 and the ID score.

All functions take integer label images of the same shape (0 = background) and work on any number of
dimensions. Object overlaps are counted sparsely: the pixels where both images are nonzero are reduced to
their distinct ``(true label, predicted label)`` pairs with one ``np.unique`` call, so the cost grows with
the number of pixels, not with the product of the object counts, and thousands of objects are cheap.

Conventions
-----------
* Instance matching pairs a true and a predicted object when their IoU is at least ``threshold``
  (default 0.5), one-to-one. For ``threshold > 0.5`` an object can overlap at most one other object that
  much, so the matching is unique and read off directly. For lower thresholds (or exact ties at 0.5,
  e.g. an object split exactly in two halves) :func:`scipy.optimize.linear_sum_assignment` finds the
  matching with the most pairs and, among those, the largest summed IoU.
* Empty cases: with no true and no predicted objects, precision, recall and F1 are 1 (nothing to find,
  nothing wrongly found); IoU of two empty foregrounds is 1 as well.
* The ID score applies where label values name the same physical object in the reference and the target
  (crop pairs of one image, linked time-lapse frames): a reference id counts as re-found when the target
  prediction's region with that id has IoU ≥ ``threshold`` with the true target region of that id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "Overlaps",
    "InstanceScore",
    "IdScore",
    "overlaps",
    "foreground_iou",
    "class_iou",
    "match_instances",
    "id_score",
]


@dataclass(frozen=True)
class Overlaps:
    """Sparse overlap table of two label images.

    Attributes
    ----------
    true_ids, pred_ids : np.ndarray
        Nonzero labels present in each image (sorted).
    true_areas, pred_areas : np.ndarray
        Pixel counts of those labels.
    pairs_true, pairs_pred : np.ndarray
        Indices into ``true_ids`` / ``pred_ids`` of every overlapping pair.
    intersections : np.ndarray
        Overlap pixel count of each pair.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_areas: np.ndarray
    pred_areas: np.ndarray
    pairs_true: np.ndarray
    pairs_pred: np.ndarray
    intersections: np.ndarray

    @property
    def ious(self) -> np.ndarray:
        """IoU of every overlapping pair (same order as ``intersections``)."""
        union = self.true_areas[self.pairs_true] + self.pred_areas[self.pairs_pred] - self.intersections
        return self.intersections / np.maximum(union, 1)


@dataclass(frozen=True)
class InstanceScore:
    """Result of :func:`match_instances`.

    Attributes
    ----------
    tp, fp, fn : int
        Matched pairs, unmatched predictions, unmatched true objects.
    precision, recall, f1 : float
        ``tp / (tp + fp)``, ``tp / (tp + fn)`` and their harmonic mean.
    mean_matched_iou : float
        Mean IoU of the matched pairs (0 when none).
    matches : np.ndarray
        ``(tp, 2)`` array of matched ``(true label, predicted label)`` values.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    matches: np.ndarray


@dataclass(frozen=True)
class IdScore:
    """Result of :func:`id_score`.

    Attributes
    ----------
    n_ids : int
        Reference ids present in the true target labels (those that can be re-found).
    n_found : int
        Of those, ids whose predicted region has IoU ≥ threshold with the true region.
    score : float
        ``n_found / n_ids`` (NaN when ``n_ids`` is 0).
    n_spurious : int
        Predicted ids that are not in the true target labels.
    """

    n_ids: int
    n_found: int
    score: float
    n_spurious: int


def _as_labels(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        return array.astype(np.int64)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must be an integer label image, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return array


def _check_pair(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _as_labels(true, "true"), _as_labels(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"label images differ in shape: true {true.shape}, pred {pred.shape}")
    return true.ravel(), pred.ravel()


def _ids_and_areas(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted nonzero ids, their areas, and each pixel's index into ids (-1 for background)."""
    ids, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if ids.size and ids[0] == 0:
        return ids[1:], counts[1:], inverse - 1
    return ids, counts, inverse


def overlaps(true: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Count the overlaps of all object pairs of two label images (sparse).

    Parameters
    ----------
    true, pred : np.ndarray
        Integer label images of one shape (0 = background).

    Returns
    -------
    Overlaps
        Ids, areas and the overlapping pairs with their intersection sizes.
    """
    true, pred = _check_pair(true, pred)
    t_ids, t_areas, t_idx = _ids_and_areas(true)
    p_ids, p_areas, p_idx = _ids_and_areas(pred)
    both = (t_idx >= 0) & (p_idx >= 0)
    keys = t_idx[both].astype(np.int64) * max(len(p_ids), 1) + p_idx[both]
    pair_keys, inter = np.unique(keys, return_counts=True)
    n_pred = max(len(p_ids), 1)
    return Overlaps(t_ids, p_ids, t_areas, p_areas, pair_keys // n_pred, pair_keys % n_pred, inter)


def foreground_iou(true: np.ndarray, pred: np.ndarray) -> float:
    """IoU of the foregrounds (nonzero pixels) of two label images; 1.0 when both are empty."""
    true, pred = _check_pair(true, pred)
    t, p = true > 0, pred > 0
    union = int(np.count_nonzero(t | p))
    return 1.0 if union == 0 else int(np.count_nonzero(t & p)) / union


def class_iou(true: np.ndarray, pred: np.ndarray, classes: Iterable[int] | None = None) -> dict[int, float]:
    """Per-class IoU of two semantic (class-id) images.

    Parameters
    ----------
    true, pred : np.ndarray
        Integer class images of one shape (0 = background).
    classes : iterable of int, optional
        Classes to report; default every nonzero class present in either image. A requested class absent
        from both gets NaN.

    Returns
    -------
    dict
        Class id → IoU.
    """
    true, pred = _check_pair(true, pred)
    if classes is None:
        classes = sorted(({int(c) for c in np.unique(true)} | {int(c) for c in np.unique(pred)}) - {0})
    result: dict[int, float] = {}
    for c in classes:
        t, p = true == c, pred == c
        union = int(np.count_nonzero(t | p))
        result[int(c)] = float("nan") if union == 0 else int(np.count_nonzero(t & p)) / union
    return result


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 1.0 if fn == 0 else 0.0
    recall = tp / (tp + fn) if tp + fn else 1.0 if fp == 0 else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1


def _optimal_pairs(rows: np.ndarray, cols: np.ndarray, ious: np.ndarray) -> np.ndarray:
    """Indices (into rows/cols) of a maximum-cardinality, then maximum-IoU, one-to-one matching."""
    r_ids, r = np.unique(rows, return_inverse=True)
    c_ids, c = np.unique(cols, return_inverse=True)
    eps = 1.0 / (min(len(r_ids), len(c_ids)) + 1)  # one more pair always outweighs any IoU gain
    weight = np.zeros((len(r_ids), len(c_ids)))
    weight[r, c] = 1.0 + eps * ious
    sel_r, sel_c = linear_sum_assignment(weight, maximize=True)
    keep = weight[sel_r, sel_c] > 0
    lookup = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(r, c, strict=True))}
    return np.array([lookup[(int(a), int(b))] for a, b in zip(sel_r[keep], sel_c[keep], strict=True)],
                    dtype=np.int64)


def match_instances(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> InstanceScore:
    """One-to-one matching of true and predicted objects at IoU ≥ ``threshold``.

    Parameters
    ----------
    true, pred : np.ndarray
        Instance label images of one shape (0 = background, each nonzero value one object).
    threshold : float
        Minimum IoU of a match (in (0, 1]).

    Returns
    -------
    InstanceScore
        Counts, precision, recall, F1 and the matched label pairs (see the module notes for the matching
        rule and the empty-image conventions).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    ov = overlaps(true, pred)
    ious = ov.ious
    cand = np.flatnonzero(ious >= threshold)
    rows, cols = ov.pairs_true[cand], ov.pairs_pred[cand]
    unique = len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols)
    chosen = cand if unique else cand[_optimal_pairs(rows, cols, ious[cand])]
    tp = len(chosen)
    fp, fn = len(ov.pred_ids) - tp, len(ov.true_ids) - tp
    precision, recall, f1 = _f1(tp, fp, fn)
    matches = np.stack([ov.true_ids[ov.pairs_true[chosen]], ov.pred_ids[ov.pairs_pred[chosen]]], axis=1)
    mean_iou = float(ious[chosen].mean()) if tp else 0.0
    return InstanceScore(tp, fp, fn, precision, recall, f1, mean_iou, matches.reshape(-1, 2))


def id_score(
    true: np.ndarray,
    pred: np.ndarray,
    reference_ids: Iterable[int] | Mapping[int, object] | np.ndarray | None = None,
    threshold: float = 0.5,
) -> IdScore:
    """Fraction of reference ids re-found in the target with IoU ≥ ``threshold``.

    Parameters
    ----------
    true : np.ndarray
        True target labels whose values are the reference ids (same object ↔ same value).
    pred : np.ndarray
        Predicted ID map of the target (values are reference ids).
    reference_ids : iterable of int, mapping or label image, optional
        Ids given in the reference (a label image is reduced to its nonzero values). Default: every id of
        ``true``. Only ids also present in ``true`` can be re-found and count in the denominator.
    threshold : float
        Minimum IoU between the predicted and the true region of an id.

    Returns
    -------
    IdScore
        Counts and the score (NaN when no reference id is present in the target).
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    ov = overlaps(true, pred)
    if reference_ids is None:
        wanted = ov.true_ids
    else:
        if isinstance(reference_ids, np.ndarray):
            values = np.unique(reference_ids)
        else:
            values = np.fromiter((int(v) for v in reference_ids), dtype=np.int64)
        wanted = np.intersect1d(ov.true_ids, values[values != 0])
    same = ov.true_ids[ov.pairs_true] == ov.pred_ids[ov.pairs_pred]
    hit = same & (ov.ious >= threshold)
    found = np.intersect1d(ov.true_ids[ov.pairs_true[hit]], wanted)
    n_ids = len(wanted)
    spurious = np.setdiff1d(ov.pred_ids, ov.true_ids)
    return IdScore(n_ids, len(found), len(found) / n_ids if n_ids else float("nan"), len(spurious))

"""Which target to label next: a per-target uncertainty score from what one propagation pass already gives.

No extra model call: the score combines signals of one target's
:class:`~sine_model.engine.stitching.TargetResult`
(or the files ``napari-sine propagate`` wrote), each in [0, 1], higher = more likely wrong:

* ``mode_disagreement`` — 1 − mean pairwise foreground IoU of the ID, instance and semantic answers;
* ``object_disagreement`` — 1 − instance F1 (IoU 0.5) between the ID answer's and the instance answer's
  objects (two routes to the same objects that should agree);
* ``low_score`` — 1 − mean instance score (scores clipped to [0, 1]);
* ``score_spread`` — twice the standard deviation of the instance scores (clipped to [0, 1]);
* ``tile_cut`` — fraction of instance objects that span more than one tile core (stitched, so more
  often split or merged), when the tiles are known;
* ``refiner_change`` — 1 − foreground IoU between the model's own map and the refined answer, when a
  refiner ran and the model map was kept (``keep_maps=True``).

The score is the mean of the signals available; a target with no object at all scores 1 (nothing to
accept: look at it). :func:`rank_targets` orders targets by score, highest first, ties by index: the same
inputs
always give the same order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sine_model.metrics import foreground_iou, match_instances

__all__ = ["SIGNALS", "TargetUncertainty", "target_uncertainty", "result_uncertainty", "rank_targets"]

#: The signals, in the order they are reported.
SIGNALS: tuple[str, ...] = (
    "mode_disagreement",
    "object_disagreement",
    "low_score",
    "score_spread",
    "tile_cut",
    "refiner_change",
)


@dataclass(frozen=True)
class TargetUncertainty:
    """One target's uncertainty score and the signals it is the mean of (``None``: not available)."""

    index: int
    score: float
    signals: dict[str, float | None] = field(default_factory=dict)
    objects: int = 0

    def describe(self) -> str:
        """The available signals as ``name=value`` text, largest first."""
        known = sorted(((v, k) for k, v in self.signals.items() if v is not None), reverse=True)
        return ", ".join(f"{k}={v:.2f}" for v, k in known)


def _pair_iou(a: np.ndarray, b: np.ndarray) -> float:
    if not (a.any() or b.any()):
        return 1.0  # both empty: they agree
    return foreground_iou(a, b)


def _mode_disagreement(labels: Mapping[str, np.ndarray]) -> float | None:
    masks = [np.asarray(labels[m]) != 0 for m in ("id", "instance", "semantic") if m in labels]
    if len(masks) < 2:
        return None
    ious = [_pair_iou(masks[i], masks[j]) for i in range(len(masks)) for j in range(i + 1, len(masks))]
    return float(1.0 - np.mean(ious))


def _object_disagreement(labels: Mapping[str, np.ndarray]) -> float | None:
    if "id" not in labels or "instance" not in labels:
        return None
    id_map, instance_map = np.asarray(labels["id"]), np.asarray(labels["instance"])
    if not (id_map.any() or instance_map.any()):
        return 0.0
    return float(1.0 - match_instances(id_map, instance_map).f1)


def _tile_cut(instances: np.ndarray, tiles: Sequence[Any]) -> float | None:
    """Fraction of objects lying in more than one tile core (cores partition the image)."""
    if len(tiles) < 2:
        return None if not tiles else 0.0
    core_of = np.zeros(instances.shape, dtype=np.int32)
    for n, tile in enumerate(tiles):
        core_of[tile.cy0 : tile.cy1, tile.cx0 : tile.cx1] = n
    inside = instances != 0
    values, cores = instances[inside], core_of[inside]
    pairs = np.unique(np.stack([values.astype(np.int64), cores.astype(np.int64)]), axis=1)
    ids, spans = np.unique(pairs[0], return_counts=True)
    return float(np.mean(spans > 1)) if len(ids) else 0.0


def target_uncertainty(
    index: int,
    labels: Mapping[str, np.ndarray],
    scores: Iterable[Any],
    *,
    tiles: Sequence[Any] | None = None,
    model_map: np.ndarray | None = None,
    threshold: float = 0.5,
) -> TargetUncertainty:
    """The uncertainty of one target from its label maps and object scores.

    Parameters
    ----------
    index : int
        Target index.
    labels : mapping
        Mode → label map ``(H, W)`` (any subset of ``id``, ``instance``, ``semantic``).
    scores : iterable
        Per-object rows with ``mode`` and ``score`` attributes
        (:class:`~sine_model.engine.stitching.ObjectScore`, or rows read from ``scores.csv``).
    tiles : sequence of Tile, optional
        The tiles the target was processed in (:func:`~sine_model.engine.tiling.plan_tiles`).
    model_map : ndarray, optional
        The model's per-class map ``(C, H, W)`` before refinement (``TargetResult.semantic_maps``);
        compared with the final answer only when they can differ, i.e. when a refiner ran.
    threshold : float
        Semantic threshold applied to ``model_map``.

    Returns
    -------
    TargetUncertainty
    """
    instance_scores = np.clip([float(s.score) for s in scores if s.mode == "instance"], 0.0, 1.0)
    objects_map = labels.get("instance", labels.get("id", labels.get("semantic")))
    objects_map = None if objects_map is None else np.asarray(objects_map)
    signals: dict[str, float | None] = dict.fromkeys(SIGNALS)
    signals["mode_disagreement"] = _mode_disagreement(labels)
    signals["object_disagreement"] = _object_disagreement(labels)
    if instance_scores.size:
        signals["low_score"] = float(1.0 - instance_scores.mean())
        signals["score_spread"] = float(min(1.0, 2.0 * instance_scores.std()))
    if tiles is not None and "instance" in labels:
        signals["tile_cut"] = _tile_cut(np.asarray(labels["instance"]), tiles)
    final = labels.get("semantic", labels.get("instance"))
    if model_map is not None and final is not None:
        model_fg = np.asarray(model_map).max(axis=0) > threshold
        signals["refiner_change"] = 1.0 - _pair_iou(model_fg, np.asarray(final) != 0)
    n_objects = 0 if objects_map is None else len(np.unique(objects_map[objects_map != 0]))
    known = [v for v in signals.values() if v is not None]
    score = 1.0 if n_objects == 0 or not known else float(np.mean(known))
    return TargetUncertainty(int(index), score, signals, n_objects)


def result_uncertainty(
    result: Any, tiles: Sequence[Any] | None = None, refined: bool = False, threshold: float = 0.5
) -> TargetUncertainty:
    """:func:`target_uncertainty` of a :class:`~sine_model.engine.stitching.TargetResult`.

    ``refined`` says a refiner decided the answer, so the result's kept model map (if any) is compared
    with it.
    """
    model_map = getattr(result, "semantic_maps", None) if refined else None
    return target_uncertainty(
        result.index, result.labels, result.scores, tiles=tiles, model_map=model_map, threshold=threshold
    )


def rank_targets(
    uncertainties: Iterable[TargetUncertainty], exclude: Iterable[int] = ()
) -> list[TargetUncertainty]:
    """Targets to review next, most uncertain first (ties: lower index first), without ``exclude``."""
    skip = {int(i) for i in exclude}
    return sorted((u for u in uncertainties if u.index not in skip), key=lambda u: (-u.score, u.index))

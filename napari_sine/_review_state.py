"""Review state in the viewer: which targets are accepted / corrected / skipped, which to look at next.

The state of one target layer's planes is a :class:`sine_model.ReviewState` kept in the metadata of its
proposal layer (``metadata["sine"]["review"]``; the instance layer's when there is one), so it is saved
with the layers and dropped when a new run rewrites them. The ranking ("label this next") scores each
target from its proposal layers with :func:`sine_model.target_uncertainty`; the export builds
:class:`sine_model.ExportSample` rows from the accepted / corrected planes of the Labels layer the
proposals were accepted into. Qt-free; the logic is ``sine_model``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from napari.layers import Labels

from ._inputs import InputError
from ._layers import SINE_KEY, is_proposal, plane_index

__all__ = [
    "REVIEW_KEY",
    "ReviewTarget",
    "RankedTarget",
    "proposals_by_target",
    "review_targets",
    "review_of",
    "mark",
    "RankingInput",
    "ranking_inputs",
    "rank_inputs",
    "rank_viewer",
    "export_samples",
]

REVIEW_KEY = "review"
_HOLDER_ORDER = ("instance", "semantic", "id")


@dataclass(frozen=True)
class ReviewTarget:
    """One target: a 2D target layer (``plane`` None) or one plane of a stack."""

    layer: str
    plane: int | None
    stack_axis: int | None

    @property
    def name(self) -> str:
        """``layer`` or ``layer[plane]``."""
        return self.layer if self.plane is None else f"{self.layer}[{self.plane}]"


@dataclass(frozen=True)
class RankedTarget:
    """A target with its uncertainty (a :class:`sine_model.TargetUncertainty`) and review state."""

    target: ReviewTarget
    uncertainty: Any
    status: str


def proposals_by_target(viewer: Any) -> dict[str, dict[str, Labels]]:
    """Target layer name → mode → its proposal layer, for every proposal layer in the viewer."""
    found: dict[str, dict[str, Labels]] = {}
    for layer in viewer.layers:
        if is_proposal(layer):
            record = layer.metadata[SINE_KEY]
            found.setdefault(record["target"]["layer"], {})[record["mode"]] = layer
    return found


def _holder(layers: dict[str, Labels]) -> Labels:
    return next(layers[m] for m in (*_HOLDER_ORDER, *layers) if m in layers)


def _stack_axis(layers: dict[str, Labels]) -> int | None:
    return _holder(layers).metadata[SINE_KEY]["target"].get("stack_axis")


def review_targets(target_layer: str, layers: dict[str, Labels]) -> list[ReviewTarget]:
    """The targets of one target layer's proposals, in plane order."""
    axis = _stack_axis(layers)
    if axis is None:
        return [ReviewTarget(target_layer, None, None)]
    count = _holder(layers).data.shape[axis]
    return [ReviewTarget(target_layer, plane, axis) for plane in range(count)]


def review_of(target_layer: str, layers: dict[str, Labels]) -> Any:
    """The layer's :class:`sine_model.ReviewState` (all proposed when none is stored yet)."""
    from sine_model import ReviewState

    stored = _holder(layers).metadata[SINE_KEY].get(REVIEW_KEY)
    names = [t.name for t in review_targets(target_layer, layers)]
    if stored is not None:
        state = ReviewState.from_dict(stored, f"the review stored in '{_holder(layers).name}'")
        if [t.name for t in state.targets] == names:
            return state
    return ReviewState(names, {"target_layer": target_layer})


def mark(
    viewer: Any, proposal: Labels, plane: int | None, status: str, labels_layer: str | None = None
) -> list[str]:
    """Record ``status`` for ``plane`` of ``proposal``'s target (every plane when None); names marked."""
    record = proposal.metadata[SINE_KEY]
    target_layer = record["target"]["layer"]
    layers = proposals_by_target(viewer).get(target_layer, {record["mode"]: proposal})
    state = review_of(target_layer, layers)
    targets = review_targets(target_layer, layers)
    chosen = [t for t in targets if plane is None or t.plane is None or t.plane == plane]
    for target in chosen:
        state.set(targets.index(target), status)
    if labels_layer is not None:
        state.run["labels_layer"] = labels_layer
    _holder(layers).metadata[SINE_KEY][REVIEW_KEY] = state.to_dict()
    return [t.name for t in chosen]


def _target_inputs(layers: dict[str, Labels], target: ReviewTarget) -> tuple[dict[str, np.ndarray], list]:
    labels, scores = {}, []
    for mode, layer in layers.items():
        labels[mode] = np.asarray(layer.data[plane_index(layer.ndim, target.stack_axis, target.plane)])
        features = layer.features
        if "score" in features:
            wanted = -1 if target.plane is None else target.plane
            rows = features[features["plane"] == wanted] if "plane" in features else features
            scores += [SimpleNamespace(mode=mode, score=float(s)) for s in rows["score"]]
    return labels, scores


@dataclass(frozen=True)
class RankingInput:
    """What the ranking needs of one target, read from its layers (on napari's main thread)."""

    target: ReviewTarget
    status: str
    labels: dict[str, np.ndarray]
    scores: list[Any]


def ranking_inputs(viewer: Any, include_reviewed: bool = False) -> list[RankingInput]:
    """The targets to rank (unreviewed only by default), with views of their label maps and scores.

    Cheap: it reads the layers' metadata and features and takes views of their planes; the scoring
    (:func:`rank_inputs`) is the part worth a worker thread.
    """
    inputs = []
    for target_layer, layers in proposals_by_target(viewer).items():
        state = review_of(target_layer, layers)
        for position, target in enumerate(review_targets(target_layer, layers)):
            status = state[position].status
            if status != "proposed" and not include_reviewed:
                continue
            inputs.append(RankingInput(target, status, *_target_inputs(layers, target)))
    return inputs


def rank_inputs(inputs: Sequence[RankingInput]) -> list[RankedTarget]:
    """Score every target of ``inputs`` and sort them, most uncertain first (any thread)."""
    from sine_model import rank_targets, target_uncertainty

    scored = [target_uncertainty(number, item.labels, item.scores) for number, item in enumerate(inputs)]
    return [
        RankedTarget(inputs[u.index].target, u, inputs[u.index].status) for u in rank_targets(scored)
    ]


def rank_viewer(viewer: Any, include_reviewed: bool = False) -> list[RankedTarget]:
    """Every target of the viewer's proposal layers, most uncertain first (unreviewed only by default)."""
    return rank_inputs(ranking_inputs(viewer, include_reviewed))


def export_samples(viewer: Any, references: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> list[Any]:
    """References plus the accepted / corrected planes of every target, from their accepted labels."""
    from sine_model import ExportSample

    samples = [
        ExportSample(f"ref_{n}_{_safe(name)}", image, np.asarray(labels), name, "reference", "reference")
        for n, (name, image, labels) in enumerate(references)
    ]
    for target_layer, layers in proposals_by_target(viewer).items():
        state = review_of(target_layer, layers)
        chosen = state.indices("accepted", "corrected")
        if not chosen:
            continue
        labels_name = state.run.get("labels_layer")
        if labels_name not in viewer.layers or target_layer not in viewer.layers:
            raise InputError(
                f"the reviewed targets of '{target_layer}' need their image layer and the Labels "
                f"layer they were accepted into ('{labels_name}'): keep both in the viewer"
            )
        image_layer, labels_layer = viewer.layers[target_layer], viewer.layers[labels_name]
        targets = review_targets(target_layer, layers)
        for index in chosen:
            target = targets[index]
            where = (
                plane_index(image_layer.ndim, target.stack_axis, target.plane)
                if target.plane is not None
                else (slice(None),) * image_layer.ndim
            )
            image = np.asarray(image_layer.data[where])
            labels = np.asarray(
                labels_layer.data[plane_index(labels_layer.ndim, target.stack_axis, target.plane)]
            )
            samples.append(
                ExportSample(_safe(target.name), image, labels, target_layer, "target", state[index].status)
            )
    return samples


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("._") or "target"

"""Choose inference settings on the references: two-fold cross-validation between reference halves.

How large objects should appear to the model (the ``scale``), whether it sees the images or their
reference projection (:mod:`sine_model.preprocess.projection`: objects bright, for stains the model
rarely saw), and how its semantic answer is split into instances (connected components, or a
distance-transform watershed with some seed spacing) decide much of the instance F1, and the best
values depend on the images: the embedded model was trained on objects of radius about 3–16 pixels,
mostly in fluorescence, and a watershed that separates touching round nuclei cuts irregular predicted
blobs. :func:`calibrate` measures instead of guessing. Each reference is cut in two halves along its
longer side; each half in turn is the reference and the other the target, and for every candidate
(projection, scale) the model's semantic answer on the held-out half is split by every candidate rule
(:func:`~sine_model.postprocess.instance_split.candidate_steps`, sized by the reference objects of each
class) and scored against the held-out labels (instance F1 at IoU 0.5). The setting with the best mean F1
(mean over classes, each with its best rule) wins, ties going to the milder one; the default (no projection,
the scale closest to 1) is only replaced by a setting at least :data:`MIN_GAIN` better. The
propagator keeps the winner, and its references are set again on the whole images.

Only the references' own labels are used; nothing is tuned on targets. The cost is one model pass per
candidate setting and fold over half of each reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sine_model.engine.inputs import PropagationError, check_reference_pairs
from sine_model.fitting.folds import reference_folds
from sine_model.metrics import foreground_iou, match_instances
from sine_model.postprocess.components import labels_of_class, min_areas_by_class
from sine_model.postprocess.instance_split import InstanceStep, candidate_steps

__all__ = ["CALIBRATION_SCALES", "MIN_GAIN", "Calibration", "calibrate"]

#: Candidate resize factors (about half an octave apart).
CALIBRATION_SCALES: tuple[float, ...] = (0.5, 0.7, 1.0, 1.4, 2.0)
#: How much held-out F1 a setting must gain over the default (the images as they are, the scale closest
#: to 1) to replace it: two folds of half a reference are a noisy estimate, and a model that finds
#: nothing anywhere should not be moved to an arbitrary scale.
MIN_GAIN: float = 0.05


@dataclass
class Calibration:
    """What :func:`calibrate` chose and measured.

    Attributes
    ----------
    scale : float
        The chosen resize factor.
    steps : dict
        Class id -> the chosen :class:`~sine_model.postprocess.instance_split.InstanceStep`.
    f1 : float
        Mean held-out instance F1 of the choice (mean over classes).
    folds : int
        Number of (reference half, held-out half) folds.
    table : list of dict
        One row per (projection, scale, class, rule): ``projection``, ``scale``, ``cls``, ``rule``,
        ``f1`` (mean over folds) and ``semantic_iou`` (of the class's region, mean over folds).
    project_inputs : bool
        Whether the reference projection was chosen.
    """

    scale: float
    steps: dict[int, InstanceStep]
    f1: float
    folds: int
    table: list[dict[str, Any]] = field(default_factory=list)
    project_inputs: bool = False


def _rounded(scale: float) -> float:
    return float(f"{scale:.3g}")


def calibrate(
    propagator: Any,
    pairs: Sequence[tuple[Any, Any]],
    classes: Mapping[int, int] | None = None,
    scales: Sequence[float] = CALIBRATION_SCALES,
    projections: Sequence[bool] = (False, True),
    min_gain: float = MIN_GAIN,
) -> Calibration:
    """Choose the scale, input projection and per-class split rules on the references, then set them.

    Parameters
    ----------
    propagator : Propagator
        The engine; on return it has the chosen scale and rules and ``pairs`` as its references.
    pairs : sequence of (image, labels)
        The reference pairs (as for :meth:`Propagator.set_references`).
    classes : mapping, optional
        Label value -> class id (default: all class 1).
    scales : sequence of float
        Candidate resize factors (> 0), of the scale chosen from the reference objects' size when the
        propagator's scale is automatic (:mod:`sine_model.engine.object_scale`), else of native pixels.
    projections : sequence of bool
        Whether to try the images as they are (False) and/or the reference projection (True,
        :mod:`sine_model.preprocess.projection`, fitted on each fold's reference half).
    min_gain : float
        Held-out F1 another setting must gain over the first one tried (no projection if tried, the
        scale closest to 1) to be chosen; the split rules are chosen at the winning setting.

    Returns
    -------
    Calibration

    Raises
    ------
    PropagationError
        No reference has objects in both halves (nothing to cross-validate on), or bad scales.
    """
    checked = check_reference_pairs(pairs, propagator.channel_axis)
    scales = sorted({float(s) for s in scales}, key=lambda s: (abs(math.log(s)) if s > 0 else -1, s))
    if not scales or scales[0] <= 0:
        raise PropagationError(f"calibration scales must be positive, got {scales}")
    folds = reference_folds([(image, labels) for image, labels, _, _ in checked], propagator.channel_axis)
    if not folds:
        raise PropagationError("calibration needs a reference with labelled objects in both halves of the "
                               "image: label objects across the whole reference, or skip calibration")
    label_images = [labels for _, labels, _, _ in checked]
    class_of = propagator._class_map(classes, label_images)
    floors = min_areas_by_class(label_images, class_of)
    candidates = {c: candidate_steps([labels_of_class(lab, class_of, c) for lab in label_images],
                                     min_size=floors[c])
                  for c in sorted(set(class_of.values()))}
    table: list[dict[str, Any]] = []
    best: tuple[tuple[bool, float], float, dict[int, InstanceStep]] | None = None
    automatic = getattr(getattr(propagator, "scale_choice", None), "automatic", False)
    if automatic:  # candidates around the scale the objects' size asks for
        propagator._fit_scale_to_objects(label_images, class_of)
    base = propagator.scale if automatic else 1.0
    settings = [(p, _rounded(base * s)) for p in dict.fromkeys(bool(p) for p in projections) for s in scales]
    default = settings[0]  # later settings are less mild: ties (and gains under min_gain) keep earlier ones
    for project, scale in settings:
        propagator.set_project_inputs(project)
        propagator.set_scale(scale)
        scores = {c: np.zeros(len(steps)) for c, steps in candidates.items()}
        ious = dict.fromkeys(candidates, 0.0)
        for reference, (held_image, held_labels) in folds:
            propagator.set_references([reference], classes)
            semantic = next(propagator.propagate([held_image], modes=("semantic",))).labels["semantic"]
            for c, steps in candidates.items():
                truth = labels_of_class(held_labels, class_of, c)
                region = semantic == c
                ious[c] += foreground_iou(truth, region) / len(folds)
                for k, step in enumerate(steps):
                    scores[c][k] += match_instances(truth, step.apply(region)).f1 / len(folds)
        for c, steps in candidates.items():
            table += [dict(projection=project, scale=scale, cls=c, rule=step.describe(),
                           f1=float(scores[c][k]), semantic_iou=float(ious[c]))
                      for k, step in enumerate(steps)]
        total = float(np.mean([scores[c].max() for c in candidates]))
        if best is None or total > best[1] + (min_gain if best[0] == default else 0.0):
            rules = {c: candidates[c][int(np.argmax(scores[c]))] for c in candidates}
            best = ((project, scale), total, rules)
    assert best is not None
    (project, scale), f1, steps = best
    propagator.set_project_inputs(project)
    propagator.set_scale(scale)
    propagator.set_instance_steps(steps)
    propagator.set_references(pairs, classes)
    return Calibration(scale, steps, f1, len(folds), table, project)

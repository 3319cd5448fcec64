"""The comparisons of the parity tests: a label map against the one saved before a speed change.

* ID: every id present before or after covers the same pixels, IoU ≥ :data:`MIN_IOU`;
* instance: the same number of objects, each matched one-to-one to a saved object with IoU ≥ :data:`MIN_IOU`;
* semantic: at most :data:`MAX_SEMANTIC_CHANGE` of the pixels differ.

Each returns a list of problems (empty: within tolerance); :func:`load_saved` reads a fixture.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sine_model.metrics import match_instances

#: Where the parity fixtures are (written by bench/parity_fixture.py).
FIXTURES = Path(__file__).resolve().parents[1] / "data"
MODES = ("id", "instance", "semantic")


def load_saved(path: Path) -> dict[str, np.ndarray]:
    """The label maps saved in a parity fixture, by key (plain arrays only: allow_pickle stays off)."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}

MIN_IOU = 0.99
MAX_SEMANTIC_CHANGE = 0.001


def id_differences(saved: np.ndarray, current: np.ndarray, min_iou: float = MIN_IOU) -> list[str]:
    """Ids whose region changed (IoU below ``min_iou``, or present in only one map)."""
    problems = []
    for value in sorted((set(np.unique(saved).tolist()) | set(np.unique(current).tolist())) - {0}):
        a, b = saved == value, current == value
        iou = (a & b).sum() / max((a | b).sum(), 1)
        if iou < min_iou:
            problems.append(f"id {value}: IoU {iou:.4f}")
    return problems


def instance_differences(saved: np.ndarray, current: np.ndarray, min_iou: float = MIN_IOU) -> list[str]:
    """Objects without a one-to-one partner of IoU ≥ ``min_iou`` in the other map."""
    score = match_instances(saved, current, threshold=min_iou)
    if score.fp or score.fn:
        return [f"{score.fn} saved objects unmatched, {score.fp} new objects unmatched "
                f"({score.tp} matched at IoU >= {min_iou})"]
    return []


def semantic_differences(saved: np.ndarray, current: np.ndarray,
                         max_change: float = MAX_SEMANTIC_CHANGE) -> list[str]:
    """A line if more than ``max_change`` of the pixels changed class."""
    changed = float((saved != current).mean())
    return [f"{changed:.4%} of the pixels changed class"] if changed > max_change else []


CHECKS = {"id": id_differences, "instance": instance_differences, "semantic": semantic_differences,
          "instance_queries": instance_differences}

"""Parity: the embedded model's proposals on the bundled sample match those saved before the speed work.

``tests/data/embedded_parity.npz`` was written by ``bench/parity_fixture.py`` from the engine as it was
before issue 22 (commit recorded in the file). Tiling, batching, post-processing and stitching changes
must keep every mode's label maps within these tolerances:

* ID: every reference id present before or after covers the same pixels, IoU ≥ 0.99;
* instance (from the class map, and from the instance queries): the same number of objects, each one
  matched one-to-one to an object of the saved map with IoU ≥ 0.99;
* semantic: at most 0.1 % of the pixels differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sine_model.metrics import match_instances

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "embedded_parity.npz"
MODES = ("id", "instance", "semantic")
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


@pytest.fixture(scope="module")
def saved():
    with np.load(FIXTURE) as data:  # plain arrays only (allow_pickle stays off)
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def current():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    try:
        from parity_fixture import sample_proposals
    finally:
        sys.path.pop(0)
    return sample_proposals()


@pytest.mark.parametrize("key", list(CHECKS))
def test_proposals_match_the_saved_ones(saved, current, key):
    assert current[key].shape == saved[key].shape
    problems = [f"target {t}: {line}" for t in range(len(saved[key]))
                for line in CHECKS[key](saved[key][t], current[key][t])]
    assert not problems, f"{key} proposals differ from {FIXTURE.name}:\n" + "\n".join(problems)


def test_the_checks_catch_changes(saved):
    """Each comparison fails on a map changed the way a speed bug would change it."""
    ids = saved["id"][0].copy()
    victim = int(np.unique(ids)[1])
    ys, xs = np.nonzero(ids == victim)
    ids[ys[: len(ys) // 10], xs[: len(xs) // 10]] = 0  # a tenth of one object lost
    assert id_differences(saved["id"][0], ids)
    instances = saved["instance"][0].copy()
    first, second = np.unique(instances)[1:3]
    instances[instances == second] = first  # two objects merged
    assert instance_differences(saved["instance"][0], instances)
    semantic = saved["semantic"][0].copy()
    semantic[:, :4] = 1 - np.clip(semantic[:, :4], 0, 1)  # a 4-pixel strip flipped
    assert semantic_differences(saved["semantic"][0], semantic)
    for key, check in CHECKS.items():
        assert not check(saved[key][0], saved[key][0])

"""Parity: the embedded model's proposals on the bundled sample match those saved before the speed work.

``tests/data/embedded_parity.npz`` was written by ``bench/parity_fixture.py`` from the engine as it was
before issue 22 (commit recorded in the file). Tiling, batching, post-processing and stitching changes
must keep every mode's label maps within these tolerances:

* ID: every reference id present before or after covers the same pixels, IoU ≥ 0.99;
* instance (from the class map, and from the instance queries): the same number of objects, each one
  matched one-to-one to an object of the saved map with IoU ≥ 0.99;
* semantic: at most 0.1 % of the pixels differ.

(The comparisons are in ``parity_checks.py``, shared with ``test_recipe_parity.py``.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from parity_checks import (
    CHECKS,
    FIXTURES,
    id_differences,
    instance_differences,
    load_saved,
    semantic_differences,
)

FIXTURE = FIXTURES / "embedded_parity.npz"


@pytest.fixture(scope="module")
def saved():
    return load_saved(FIXTURE)


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

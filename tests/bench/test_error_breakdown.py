"""bench/error_breakdown.py: every proposal lands in exactly one kind, by the documented rules."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from error_breakdown import classify_proposals  # noqa: E402


def test_each_kind_of_proposal_is_counted_once():
    truth = np.zeros((80, 80), np.int32)
    truth[0:10, 0:10], truth[0:10, 10:20] = 1, 2
    truth[20:30, 0:10], truth[20:30, 20:30] = 3, 4
    truth[40:50, 0:10], truth[40:50, 10:20] = 5, 6
    proposals = np.zeros_like(truth)
    proposals[0:10, 0:10] = 1  # object 1 exactly: matched
    proposals[20:30, 0:4] = 2  # 40 % of object 3: a part (IoU 0.4, not small)
    proposals[40:52, 0:20] = 3  # objects 5 and 6 and a strip of background: a merge (IoU 100/240 each)
    proposals[60:63, 60:63] = 4  # 9 pixels: small, wherever it lies
    proposals[60:70, 30:40] = 5  # on background: spurious
    counts = classify_proposals(truth, proposals, small_area=20)
    assert dict(counts) == {"tp": 1, "part": 1, "merge": 1, "small": 1, "spurious": 1, "fn": 5}
    # a proposal with IoU 0.5 with one of two objects it covers is a match, not a merge
    proposals[40:52, 0:20] = 0
    proposals[40:50, 0:20] = 3
    counts = classify_proposals(truth, proposals, small_area=20)
    assert counts["tp"] == 2 and counts["merge"] == 0 and counts["fn"] == 4
    assert classify_proposals(truth, np.zeros_like(truth), 20)["fn"] == 6

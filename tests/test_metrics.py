"""Segmentation metrics: hand-computable IoU / F1 / ID cases, empty images, many objects."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sine_model.metrics import class_iou, foreground_iou, id_score, match_instances, overlaps


def test_overlaps_counts_pairs_sparsely():
    true = np.array([[1, 1, 0, 2], [1, 1, 0, 2]])
    pred = np.array([[5, 0, 0, 7], [5, 5, 7, 7]])
    ov = overlaps(true, pred)
    assert ov.true_ids.tolist() == [1, 2] and ov.pred_ids.tolist() == [5, 7]
    assert ov.true_areas.tolist() == [4, 2] and ov.pred_areas.tolist() == [3, 3]
    pairs = {(int(ov.true_ids[t]), int(ov.pred_ids[p])): int(n)
             for t, p, n in zip(ov.pairs_true, ov.pairs_pred, ov.intersections, strict=True)}
    assert pairs == {(1, 5): 3, (2, 7): 2}
    np.testing.assert_allclose(sorted(ov.ious), [2 / 3, 3 / 4])


def test_foreground_iou_hand_case_and_empty():
    true = np.zeros((4, 4), int)
    pred = np.zeros((4, 4), int)
    assert foreground_iou(true, pred) == 1.0
    true[:2, :2] = 1  # 4 px
    assert foreground_iou(true, pred) == 0.0
    pred[1:3, :2] = 3  # 4 px, 2 shared
    assert foreground_iou(true, pred) == pytest.approx(2 / 6)


def test_class_iou_per_class():
    true = np.array([[1, 1, 2, 2, 0, 0]])
    pred = np.array([[1, 0, 2, 2, 2, 0]])
    result = class_iou(true, pred)
    assert result[1] == pytest.approx(1 / 2) and result[2] == pytest.approx(2 / 3)
    assert np.isnan(class_iou(true, pred, classes=[3])[3])


def test_match_instances_hand_case():
    true = np.zeros((10, 10), int)
    pred = np.zeros((10, 10), int)
    true[0:2, 0:2] = 1
    pred[0:2, 0:2] = 9  # exact: IoU 1
    true[5:7, 5:7] = 2
    pred[6:8, 5:7] = 4  # 2 of 4 shared: IoU 2/6, no match
    score = match_instances(true, pred)
    assert (score.tp, score.fp, score.fn) == (1, 1, 1)
    assert score.precision == 0.5 and score.recall == 0.5 and score.f1 == 0.5
    assert score.matches.tolist() == [[1, 9]] and score.mean_matched_iou == 1.0


def test_exact_half_split_matches_once():
    true = np.zeros((2, 4), int)
    true[:, :] = 1  # 8 px
    pred = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])  # two halves, IoU 0.5 each
    score = match_instances(true, pred)
    assert (score.tp, score.fp, score.fn) == (1, 1, 0)


def test_low_threshold_uses_optimal_matching():
    true = np.zeros(20, int)
    true[0:10], true[10:20] = 1, 2
    pred = np.zeros(20, int)
    pred[3:13], pred[0:3] = 1, 2  # IoU(1,1)=7/13, IoU(1,2)=0.3, IoU(2,1)=3/17
    greedy_best = match_instances(true, pred, threshold=0.5)
    assert greedy_best.tp == 1
    optimal = match_instances(true, pred, threshold=0.15)  # greedy on max IoU would find only 1
    assert optimal.tp == 2 and sorted(optimal.matches.tolist()) == [[1, 2], [2, 1]]


@pytest.mark.parametrize(
    ("true_objects", "pred_objects", "expected"),
    [(False, False, (1.0, 1.0, 1.0)), (True, False, (0.0, 0.0, 0.0)), (False, True, (0.0, 0.0, 0.0))],
)
def test_empty_images(true_objects, pred_objects, expected):
    true = np.zeros((5, 5), np.uint16)
    pred = np.zeros((5, 5), np.uint32)
    if true_objects:
        true[1:3, 1:3] = 1
    if pred_objects:
        pred[1:3, 1:3] = 1
        pred[4, 4] = 2
    score = match_instances(true, pred)
    assert (score.precision, score.recall, score.f1) == expected
    assert score.matches.shape == (0, 2)


def _grid(n: int, side: int = 3, stride: int = 4) -> np.ndarray:
    labels = np.zeros((n * stride, n * stride), np.int32)
    for k in range(n * n):
        y, x = (k // n) * stride, (k % n) * stride
        labels[y : y + side, x : x + side] = k + 1
    return labels


def test_many_objects_fast_and_correct():
    true = _grid(100)  # 10 000 objects
    rng = np.random.default_rng(0)
    perm = np.concatenate([[0], rng.permutation(10000) + 1])
    start = time.process_time()  # CPU time: what the matching costs, whatever else the machine runs
    score = match_instances(true, perm[true])
    assert score.tp == 10000 and score.f1 == 1.0
    assert time.process_time() - start < 5  # 0.03 s measured: the bound catches an all-pairs matching
    shifted = np.roll(true, 1, axis=1)  # 3x3 squares moved by one column: IoU 6/12 = 0.5
    assert match_instances(true, shifted).tp == 10000
    diagonal = np.roll(shifted, 1, axis=0)  # IoU 4/14
    assert match_instances(true, diagonal).tp == 0


def test_id_score_hand_case():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2], true[0:2, 4:6], true[4:6, 0:2] = 1, 2, 3
    pred = np.zeros_like(true)
    pred[0:2, 0:2] = 1  # right place
    pred[4:6, 0:2] = 2  # id 2 on object 3: wrong; id 3 missing
    pred[5, 5] = 7  # an id the target does not have
    score = id_score(true, pred, reference_ids=[1, 2, 3, 4])  # 4 is not in the target
    assert (score.n_ids, score.n_found, score.n_spurious) == (3, 1, 1)
    assert score.score == pytest.approx(1 / 3)
    ref_image = np.array([[0, 1], [2, 0]])  # a reference label image works too: ids 1, 2
    assert id_score(true, pred, reference_ids=ref_image).n_ids == 2
    assert np.isnan(id_score(np.zeros((3, 3), int), pred[:3, :3]).score)


def test_input_checks():
    with pytest.raises(ValueError, match="shape"):
        match_instances(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(TypeError):
        foreground_iou(np.zeros((3, 3), float), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="threshold"):
        match_instances(np.zeros((3, 3), int), np.zeros((3, 3), int), threshold=0)

"""The per-target uncertainty score: each signal on hand-made label maps, and the ranking order."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sine_model.bootstrap.ranking import rank_targets, result_uncertainty, target_uncertainty
from sine_model.engine.tiling import plan_tiles


def blobs(shape=(40, 40), boxes=((2, 2, 10, 10), (20, 20, 30, 30))):
    labels = np.zeros(shape, dtype=np.uint16)
    for value, (y0, x0, y1, x1) in enumerate(boxes, start=1):
        labels[y0:y1, x0:x1] = value
    return labels


def rows(*scores, mode="instance"):
    return [SimpleNamespace(mode=mode, score=s) for s in scores]


def test_agreeing_confident_answers_score_low_and_disagreeing_ones_high():
    labels = blobs()
    agree = target_uncertainty(
        0, {"id": labels, "instance": labels, "semantic": (labels > 0).astype(np.uint8)}, rows(0.95, 0.95)
    )
    assert agree.signals["mode_disagreement"] == pytest.approx(0.0)
    assert agree.signals["object_disagreement"] == pytest.approx(0.0)
    assert agree.signals["low_score"] == pytest.approx(0.05)
    assert agree.signals["score_spread"] == pytest.approx(0.0)
    other = blobs(boxes=((2, 20, 10, 30),))  # the ID answer found something else
    disagree = target_uncertainty(
        1, {"id": other, "instance": labels, "semantic": labels > 0}, rows(0.9, 0.3)
    )
    assert disagree.signals["mode_disagreement"] > 0.5
    assert disagree.signals["object_disagreement"] == pytest.approx(1.0)
    assert disagree.signals["score_spread"] == pytest.approx(0.6)
    assert disagree.score > agree.score
    assert [u.index for u in rank_targets([agree, disagree])] == [1, 0]


def test_target_without_objects_is_looked_at_first():
    empty = np.zeros((20, 20), dtype=np.uint8)
    u = target_uncertainty(0, {"instance": empty, "semantic": empty}, [])
    assert u.score == 1.0 and u.objects == 0


def test_tile_cut_counts_objects_spanning_cores():
    labels = blobs(shape=(64, 64), boxes=((2, 2, 8, 8), (28, 28, 36, 36)))  # the second straddles x = 32
    tiles = plan_tiles(64, 64, 40, 16)
    assert len(tiles) == 4
    u = target_uncertainty(0, {"instance": labels}, rows(0.9, 0.9), tiles=tiles)
    assert u.signals["tile_cut"] == pytest.approx(0.5)
    single = target_uncertainty(0, {"instance": labels}, rows(0.9, 0.9), tiles=plan_tiles(64, 64, 64, 0))
    assert single.signals["tile_cut"] == 0.0


def test_refiner_change_compares_the_model_map_with_the_answer():
    labels = blobs()
    model_map = np.zeros((1, 40, 40), dtype=np.float32)
    model_map[0, 2:10, 2:10] = 0.9  # the model saw only the first object; the refiner found both
    result = SimpleNamespace(
        index=3,
        labels={"instance": labels, "semantic": labels > 0},
        scores=rows(0.8, 0.8),
        semantic_maps=model_map,
    )
    refined = result_uncertainty(result, refined=True)
    assert refined.index == 3 and refined.signals["refiner_change"] == pytest.approx(1 - 64 / 164)
    assert result_uncertainty(result).signals["refiner_change"] is None


def test_ranking_is_deterministic_and_excludes_reviewed():
    us = [target_uncertainty(i, {"instance": blobs()}, rows(s)) for i, s in enumerate((0.5, 0.9, 0.5, 0.1))]
    order = [u.index for u in rank_targets(us)]
    assert order == [3, 0, 2, 1]  # ties (0 and 2) by index
    assert [u.index for u in rank_targets(us, exclude=[3, 0])] == [2, 1]

"""Tiling, label-map painting, stitching, the feature cache and the time-lapse memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sine_model.engine.feature_cache import FeatureCache, content_key
from sine_model.engine.memory import TimelapseMemory
from sine_model.engine.stitching import TileOutput, stitch_id, stitch_instances, stitch_semantic
from sine_model.engine.tiling import Tile, axis_spans, plan_tiles
from sine_model.labelmaps import ScoreCanvas, smallest_label_dtype
from sine_model.postprocess.decode import Detections


def test_small_image_is_one_tile():
    assert plan_tiles(50, 60, 112, 28) == [Tile(0, 0, 50, 60, 0, 0, 50, 60)]


@pytest.mark.parametrize("length, tile, overlap", [(300, 112, 28), (1000, 896, 224), (113, 112, 0),
                                                   (5000, 896, 100)])
def test_axis_spans_cover_with_overlap_and_cores_partition(length, tile, overlap):
    spans = axis_spans(length, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for (_, e0, _, c1), (s1, _, c2, _) in zip(spans, spans[1:], strict=False):
        assert e0 - s1 >= overlap  # neighbours overlap at least as asked
        assert c1 == c2  # cores meet
    assert all(e - s <= tile for s, e, _, _ in spans)
    assert all(s <= c0 < c1 <= e for s, e, c0, c1 in spans)
    covered = np.zeros(length, int)
    for _, _, c0, c1 in spans:
        covered[c0:c1] += 1
    assert (covered == 1).all()


def test_bad_tiling_arguments():
    with pytest.raises(ValueError, match="overlap"):
        axis_spans(100, 10, 10)


def test_smallest_label_dtype():
    assert smallest_label_dtype(255) == np.uint8
    assert smallest_label_dtype(256) == np.uint16
    assert smallest_label_dtype(70000) == np.uint32
    with pytest.raises(ValueError, match="does not fit in uint32"):
        smallest_label_dtype(2**32)


def test_canvas_best_score_wins_in_any_order():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    for order in ([(a, 1, 0.9), (b, 2, 0.5)], [(b, 2, 0.5), (a, 1, 0.9)]):
        canvas = ScoreCanvas((4, 4))
        for mask, value, score in order:
            canvas.paint(mask, value, score)
        assert canvas.finish()[:, 0].tolist() == [1, 1, 2, 0]
        assert canvas.visible_fraction(b, 2) == 0.5


def _det(masks, scores, labels):
    masks = torch.as_tensor(np.asarray(masks, dtype=bool))
    return Detections(masks, torch.tensor(scores, dtype=torch.float32), torch.tensor(labels),
                      torch.arange(len(scores)))


def test_stitch_id_keeps_reference_values_and_drops_low_scores():
    tile = plan_tiles(6, 6, 10, 2)[0]
    m1 = np.zeros((6, 6), bool)
    m1[:3] = True
    m2 = np.zeros((6, 6), bool)
    m2[2:] = True
    out = TileOutput(tile, id=_det([m1, m2, m2], [0.9, 0.6, 0.2], [70000, 12, 5]))
    label_map, found = stitch_id((6, 6), [out], threshold=0.5)
    assert label_map.dtype == np.uint32
    assert label_map[0, 0] == 70000 and label_map[2, 0] == 70000 and label_map[5, 0] == 12
    assert found == [(12, pytest.approx(0.6)), (70000, pytest.approx(0.9))]


def test_stitch_instances_across_tiles_keeps_each_object_once():
    tiles = plan_tiles(10, 20, 12, 4)  # two tiles along x: [0, 12) and [8, 20); cores [0, 10) / [10, 20)
    assert [(t.x0, t.x1, t.cx0, t.cx1) for t in tiles] == [(0, 12, 0, 10), (8, 20, 10, 20)]
    left, right = tiles
    obj = np.zeros((10, 20), bool)
    obj[4:6, 7:11] = True  # whole in the left tile, cut by the right tile's edge (x = 8)
    other = np.zeros((10, 20), bool)
    other[0:2, 15:19] = True  # only in the right tile
    outs = [
        TileOutput(left, instance=_det([obj[left.slices]], [0.8], [3])),
        # the right tile sees a piece of `obj` (centre x = 9, in the left core) with a higher score
        TileOutput(right, instance=_det([obj[right.slices], other[right.slices]], [0.85, 0.7], [3, 3])),
    ]
    label_map, rows = stitch_instances((10, 20), outs, threshold=0.5)
    assert sorted(np.unique(label_map).tolist()) == [0, 1, 2]
    assert [(r[0], r[2]) for r in rows] == [(1, 3), (2, 3)]
    assert (label_map[obj] == 1).all()  # the whole object, not the piece
    assert (label_map[other] == 2).all()
    assert (label_map[~(obj | other)] == 0).all()


def test_stitch_instances_ids_are_fresh_and_ordered_by_score_and_hidden_ones_dropped():
    tile = plan_tiles(8, 8, 10, 2)[0]
    big = np.zeros((8, 8), bool)
    big[:6, :6] = True
    inside = np.zeros((8, 8), bool)
    inside[1:3, 1:3] = True  # fully covered by the better-scored big mask → dropped
    low = np.zeros((8, 8), bool)
    low[7:, 7:] = True
    out = TileOutput(tile, instance=_det([inside, big, low], [0.6, 0.9, 0.7], [1, 1, 2]))
    label_map, rows = stitch_instances((8, 8), [out], threshold=0.5)
    assert [(r[0], round(r[1], 2), r[2]) for r in rows] == [(1, 0.9, 1), (2, 0.7, 2)]
    assert label_map[0, 0] == 1 and label_map[7, 7] == 2 and label_map.dtype == np.uint8


def test_stitch_semantic_thresholds_the_unnormalised_map():
    tiles = plan_tiles(4, 8, 6, 2)
    outs = []
    for tile in tiles:
        h, w = tile.cy1 - tile.cy0, tile.cx1 - tile.cx0
        probs = np.zeros((2, h, w), np.float32)
        probs[0] = 1.5 if tile.x0 == 0 else 0.1  # left core class 4, right core below threshold
        outs.append(TileOutput(tile, semantic=probs))
    label_map, rows = stitch_semantic((4, 8), outs, [4, 9], threshold=0.7)
    left_core = tiles[0].cx1
    assert (label_map[:, :left_core] == 4).all() and (label_map[:, left_core:] == 0).all()
    assert rows == [(4, pytest.approx(1.5))]


def test_feature_cache_is_lru_and_bounded():
    cache = FeatureCache(max_bytes=3 * 400)
    tensors = {k: torch.full((100,), float(k)) for k in range(4)}  # 400 bytes each
    for k in range(3):
        cache.put(k, tensors[k])
    assert cache.get(0) is not None  # 0 becomes most recent
    cache.put(3, tensors[3])  # evicts 1, the least recently used
    assert cache.get(1) is None and cache.get(0) is not None and len(cache) == 3
    assert cache.nbytes == 1200
    cache.put(9, torch.zeros(1000))  # larger than the budget: not stored
    assert cache.get(9) is None
    assert FeatureCache(0).max_bytes == 0


def test_content_key_depends_on_bytes_shape_and_dtype():
    a = np.arange(6, dtype=np.float32)
    assert content_key(a) == content_key(a.copy())
    assert content_key(a) != content_key(a.reshape(2, 3))
    assert content_key(a) != content_key(a.astype(np.float64))
    b = a.copy()
    b[3] += 1
    assert content_key(a) != content_key(b)


def test_memory_keeps_best_recent_frames_per_object():
    memory = TimelapseMemory(slots=2, decay_frames=20)
    feat = torch.zeros(1, 2, 2)
    yes = torch.ones(4, 4, dtype=torch.bool)
    memory.add(0, feat, {1: yes, 2: yes}, {1: 0.9, 2: 0.1})
    memory.add(1, feat, {1: yes, 2: yes}, {1: 0.5, 2: 0.8})
    memory.add(2, feat, {1: yes, 2: yes}, {1: 0.95, 2: 0.05})
    # object 1: decayed at t=2 → frame0 0.9*0.9=0.81, frame1 0.5*0.95=0.475, frame2 0.95 → drop frame 1
    assert sorted(i for i, _ in memory.objects[1].entries) == [0, 2]
    # object 2: frame0 0.1*0.9, frame1 0.8*0.95, newcomer 0.05 is the lowest → not added
    assert sorted(i for i, _ in memory.objects[2].entries) == [0, 1]
    frames = {f.index: sorted(f.masks) for f in memory.references()}
    assert frames == {0: [1, 2], 1: [2], 2: [1]}
    empty = torch.zeros(4, 4, dtype=torch.bool)
    memory.add(3, feat, {1: empty}, {1: 1.0})  # nothing predicted → nothing remembered
    assert 3 not in {f.index for f in memory.references()}

"""Instances from border-aware pixel answers: clusters of touching objects split, small objects kept."""

import numpy as np
import pytest
import torch

from sine_model.metrics import match_instances
from sine_model.postprocess.border_instances import (
    MIN_INSTANCE_FRACTION,
    RefinedMaps,
    instance_floor,
    split_oversized,
)
from sine_model.postprocess.pixel_refiner import PixelRefiner


def _discs(shape, centres, radius):
    """Instance labels of discs (later ones win where they overlap)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    labels = np.zeros(shape, np.int32)
    for k, (y, x) in enumerate(centres, start=1):
        labels[(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = k
    return labels


def _maps(truth, **extra):
    """A pixel answer that found every object pixel but no border between touching ones (seeds merge)."""
    label_map = (truth > 0).astype(np.int64)
    probs = np.where(truth > 0, 0.9, 0.05)[None].astype(np.float32)
    return RefinedMaps(probs, label_map, truth > 0, heights=probs.copy(), **extra)


def test_a_cluster_of_touching_discs_is_split_by_the_new_rule_and_merged_by_the_old():
    radius = 12
    truth = _discs((60, 110), [(30, 20), (30, 42), (30, 64), (30, 86)], radius)  # 22 px apart: necks
    median = float(np.median(np.unique(truth[truth > 0], return_counts=True)[1]))
    old, _ = _maps(truth).instances([1], {1: 4}, min_score=0.5)
    assert old.max() == 1  # one seed component: one instance for the whole cluster
    new, rows = _maps(truth, median_areas={1: median}).instances([1], {1: 4}, min_score=0.5)
    assert len(rows) == 4 and new.max() == 4
    assert match_instances(truth, new).f1 == 1.0


def test_single_objects_are_not_split():
    # a large disc (four median areas) and a rod: one distance-transform peak each, nothing to cut
    yy, xx = np.mgrid[:80, :160]
    labels = np.zeros((80, 160), np.int32)
    labels[(yy - 40) ** 2 + (xx - 35) ** 2 <= 24 ** 2] = 1
    labels[(np.abs(yy - 40) <= 6) & (np.abs(xx - 115) <= 35)] = 2
    median = float(np.pi * 12 ** 2)
    assert (labels == 1).sum() > 2 * median and (labels == 2).sum() > 2 * median
    np.testing.assert_array_equal(split_oversized(labels, median), labels)
    np.testing.assert_array_equal(split_oversized(labels, 0.0), labels)  # no median: no split


def test_split_pieces_get_new_ids_and_other_instances_keep_theirs():
    truth = _discs((40, 120), [(20, 15), (20, 37)], 10)
    labels = (truth > 0).astype(np.int32) * 5
    labels[15:25, 95:105] = 2  # a small square elsewhere
    out = split_oversized(labels, float(np.pi * 10 ** 2))
    assert set(np.unique(out).tolist()) == {0, 2, 5, 6}
    np.testing.assert_array_equal(out == 2, labels == 2)
    assert match_instances(truth, np.where(labels == 5, out, 0)).f1 == 1.0


#: The bundled sample reference's object areas (pixels): six small nuclei (27-85 px) among ~900 px ones.
SAMPLE_AREAS = [27, 43, 65, 66, 70, 85, 378, 394, 463, 467, 583, 602, 641, 689, 802, 824, 839, 860, 860, 965,
                1119, 1130, 1279, 1297, 1573, 1594, 1611, 1691, 1792, 1988, 2016, 2029, 2035, 2073, 2170,
                2475, 2502, 2536]


@pytest.mark.parametrize("side", [7, 9])  # 49 and 81 px, like the reference's small objects
def test_a_reference_with_small_objects_keeps_them(side):
    floor = instance_floor(SAMPLE_AREAS)
    old_floor = int(MIN_INSTANCE_FRACTION * np.median(SAMPLE_AREAS))  # 136: dropped them
    assert floor < 43 and old_floor > 85
    truth = np.zeros((60, 60), np.int32)
    truth[5:35, 5:35] = 1
    truth[45:45 + side, 45:45 + side] = 2
    _, old_rows = _maps(truth, min_areas={1: old_floor}).instances([1], {1: 4}, min_score=0.5)
    _, rows = _maps(truth, min_areas={1: floor}).instances([1], {1: 90}, min_score=0.5)
    assert len(old_rows) == 1 and len(rows) == 2  # the refiner's floor replaces the caller's larger one


def test_the_floor_without_small_reference_objects_is_the_median_fraction():
    assert instance_floor([900] * 10) == int(MIN_INSTANCE_FRACTION * 900)
    assert instance_floor([]) == 4 and instance_floor([10, 12]) == 4


def test_the_refiner_learns_its_floor_and_median_from_the_reference_areas():
    refiner = PixelRefiner([1, 2], use_model_maps=False)
    refiner.set_reference_areas({1: SAMPLE_AREAS, 2: [400, 500, 600]})
    assert refiner.min_areas.tolist() == [instance_floor(SAMPLE_AREAS), 75]
    assert refiner.median_areas.tolist() == [float(np.median(SAMPLE_AREAS)), 500.0]
    maps = refiner.refine(np.zeros((8, 8, 3), np.float32), np.zeros((2, 8, 8), np.float32))
    assert maps.min_areas == {1: refiner.min_areas.tolist()[0], 2: 75}
    assert maps.median_areas == {1: float(np.median(SAMPLE_AREAS)), 2: 500.0}
    assert refiner.median_areas.dtype == torch.float64

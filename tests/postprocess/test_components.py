"""Instances from the semantic answer: components per class, the area floor, scores and ids."""

from __future__ import annotations

import numpy as np
import pytest

from sine_model.postprocess.components import min_areas_by_class, min_component_area, semantic_components


def _class_map():
    label_map = np.zeros((12, 12), np.uint8)
    label_map[0:3, 0:3] = 1  # 9 px, class 1
    label_map[0:3, 3:5] = 2  # touches the first, other class: another instance
    label_map[6:10, 6:10] = 1  # 16 px, class 1
    label_map[11, 0] = 1  # 1 px speck
    label_map[9, 0] = 1  # diagonal neighbour of nothing; 4-connectivity keeps specks apart
    label_map[10, 1] = 1
    return label_map


def test_components_are_per_class_and_4_connected():
    instances, rows = semantic_components(_class_map())
    assert instances.max() == len(rows) == 6
    assert sorted(cls for _, _, cls in rows) == [1, 1, 1, 1, 1, 2]
    # touching objects of different classes stay apart; every instance is one class region
    assert len(np.unique(instances[0:3, 0:3])) == 1 and instances[0, 0] != instances[0, 3]
    assert instances[9, 0] != instances[10, 1]  # diagonal pixels are not 4-connected
    assert instances.dtype == np.uint8 and set(np.unique(instances)) == set(range(7))


def test_area_floor_per_class_and_scores_order_the_ids():
    label_map = _class_map()
    scores = {1: np.full(label_map.shape, 0.5, np.float32), 2: np.full(label_map.shape, 0.9, np.float32)}
    scores[1][6:10, 6:10] = 0.8
    instances, rows = semantic_components(label_map, {1: 5}, scores)
    assert [(i, round(s, 3), c) for i, s, c in rows] == [(1, 0.9, 2), (2, 0.8, 1), (3, 0.5, 1)]
    assert (instances[6:10, 6:10] == 2).all() and (instances[0:3, 3:5] == 1).all()
    assert instances[11, 0] == 0 and instances[9, 0] == 0  # under 5 px
    kept, rows = semantic_components(label_map, {1: 5}, scores, min_score=0.6)  # the instance threshold
    assert [(i, c) for i, _, c in rows] == [(1, 2), (2, 1)] and kept.max() == 2
    assert semantic_components(np.zeros((4, 4), np.uint8))[0].max() == 0
    with pytest.raises(ValueError, match="2-D class map"):
        semantic_components(np.zeros((2, 4, 4), np.uint8))


def test_min_area_is_a_tenth_of_the_median_reference_object():
    assert min_component_area([100, 300, 1000]) == 30
    assert min_component_area([]) == 1 and min_component_area([4]) == 1
    labels = np.zeros((40, 40), np.int32)
    labels[0:10, 0:10] = 1  # 100 px
    labels[20:40, 20:40] = 2  # 400 px
    labels[0:20, 30:40] = 3  # 200 px
    assert min_areas_by_class([labels], {1: 1, 2: 1, 3: 7}) == {1: 25, 7: 20}

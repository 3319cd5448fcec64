"""Splitting a foreground into instances with the rule chosen on the reference labels."""

from __future__ import annotations

import numpy as np
import pytest

from sine_model.metrics import match_instances
from sine_model.postprocess.components import instance_steps_by_class, semantic_components
from sine_model.postprocess.instance_split import (
    InstanceStep,
    choose_instance_step,
    relabel_sequential,
    remove_small,
)


def touching_disks(shape=(60, 120), radius=10, centres=((30, 20), (30, 37), (30, 80), (30, 97))):
    """Disks whose neighbours overlap in pairs: two connected components, four objects."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for value, (cy, cx) in enumerate(centres, start=1):
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & (labels == 0)] = value
    return labels


def bars(shape=(60, 120)):
    """Long thin touching bars (mitochondria-like): splitting them would cut single objects."""
    labels = np.zeros(shape, np.uint16)
    labels[10:16, 5:110] = 1
    labels[16:22, 5:60] = 2  # touches bar 1 along its length
    labels[40:46, 10:115] = 3
    return labels


def test_reference_of_touching_disks_chooses_a_watershed_that_splits_them():
    labels = touching_disks()
    step = choose_instance_step(labels)
    areas = np.bincount(labels.ravel())[1:]
    assert step.method == "watershed" and step.min_size == int(0.15 * np.median(areas))
    split = step.apply(labels > 0)
    assert split.max() == 4 and match_instances(labels, split).f1 == 1.0
    assert InstanceStep("cc").apply(labels > 0).max() == 2


def test_reference_of_long_objects_keeps_connected_components():
    labels = bars()
    step = choose_instance_step(labels, min_size=5)
    assert step == InstanceStep("cc", 1, 5)
    assert step.apply(labels > 0).max() == 2  # the touching bars stay merged, none is cut


def test_several_references_vote_and_empty_references_give_plain_components():
    step = choose_instance_step([touching_disks(), touching_disks(centres=((20, 20), (20, 37)))])
    assert step.method == "watershed"
    assert choose_instance_step(np.zeros((5, 5), np.uint8)) == InstanceStep("cc", 3, 0)
    with pytest.raises(ValueError, match="unknown instance method"):
        InstanceStep("kmeans")


def test_small_pieces_are_dropped_and_ids_are_sequential():
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 5
    labels[8, 8] = 9
    kept = remove_small(labels, 4)
    assert set(np.unique(kept)) == {0, 5} and labels[8, 8] == 9  # a copy: the input is unchanged
    assert remove_small(labels, 1) is labels
    out = relabel_sequential(kept)
    assert out.dtype == np.uint32 and set(np.unique(out)) == {0, 1}


def _sorted_remove_small(labels, min_size):
    values, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    return np.where(((sizes < min_size) & (values != 0))[inverse.reshape(labels.shape)], 0, labels)


def _sorted_relabel(labels):
    values, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.uint32) + (1 if values.size and values[0] != 0 else 0)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16, np.uint32, np.uint64])
@pytest.mark.parametrize("ids", ["components", "sparse", "no background", "huge"])
def test_count_table_and_sort_give_the_same_labels(dtype, ids):
    """The bincount path (small non-negative ids) and the np.unique path agree on every kind of id."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 12, size=(40, 50)) ** 2  # ids 0..121 with sizes from 1 pixel up
    if ids == "components":
        labels = rng.integers(0, 30, size=(40, 50))
    elif ids == "no background":
        labels = labels + 3
    elif ids == "huge":  # above the pixel count: the sort path
        labels = labels + (np.iinfo(np.int32).max - 200)
    labels = labels.astype(dtype)
    for min_size in (2, 15, 40):
        np.testing.assert_array_equal(remove_small(labels, min_size), _sorted_remove_small(labels, min_size))
    relabelled = relabel_sequential(labels)
    assert relabelled.dtype == np.uint32
    np.testing.assert_array_equal(relabelled, _sorted_relabel(labels))


def test_semantic_components_split_each_class_by_its_own_step():
    disks, rods = touching_disks(), bars()
    class_map = np.zeros((60, 240), np.uint8)
    class_map[:, :120][disks > 0] = 1
    class_map[:, 120:][rods > 0] = 2
    reference = np.zeros((60, 240), np.int32)
    reference[:, :120] = disks
    reference[:, 120:] = np.where(rods > 0, rods + 10, 0)
    class_of = {1: 1, 2: 1, 3: 1, 4: 1, 11: 2, 12: 2, 13: 2}
    steps = instance_steps_by_class([reference], class_of)
    assert steps[1].method == "watershed" and steps[2].method == "cc"
    instances, rows = semantic_components(class_map, {1: 5, 2: 5}, steps=steps)
    assert sorted(c for _, _, c in rows) == [1, 1, 1, 1, 2, 2]  # 4 disks apart, 2 rod regions
    plain, plain_rows = semantic_components(class_map, {1: 5, 2: 5})
    assert sorted(c for _, _, c in plain_rows) == [1, 1, 2, 2]
    assert match_instances(disks, instances[:, :120]).f1 == 1.0

"""Reference objects carried into a registered target: unchanged objects, merged objects cut by cores."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sine_model.postprocess.id_matching import describe_references, match_ids
from sine_model.postprocess.id_transfer import shifted_labels, split_by_cores, unchanged_objects


def touching_discs(side: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of touching discs (radius 9, centres 16 px apart) plus two small ones (radius 2), textured,
    each object with its own brightness."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    labels = np.zeros((side, side), np.int32)
    value = 10
    for cy in (25, 60):
        for cx in (20, 36, 52, 68):
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= 81) & (labels == 0)] = value
            value += 1
    for cy, cx in ((95, 30), (95, 35)):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= 4] = value
        value += 1
    brightness = np.concatenate([[0], rng.uniform(110, 190, value)])  # objects differ, as real ones do
    image = ndi.gaussian_filter(rng.normal(40, 20, labels.shape), 1.5) + brightness[np.minimum(labels, value)]
    return image.astype(np.float32), labels


def test_shifted_labels_moves_labels_into_target_coordinates():
    labels = np.arange(1, 26).reshape(5, 5)
    moved = shifted_labels(labels, (2, 1), (4, 4))  # target (y, x) is reference (y + 2, x + 1)
    assert np.array_equal(moved[:3, :4], labels[2:5, 1:5]) and not moved[3:].any()
    assert not shifted_labels(labels, (10, 0), (4, 4)).any()


def test_merged_objects_are_cut_between_reference_cores():
    """Each row of four touching discs, given as one object, comes back as four pieces, each mostly one
    disc; an object holding one core is left whole."""
    _, labels = touching_discs()
    merged = np.zeros_like(labels)
    merged[(labels >= 10) & (labels <= 13)] = 1
    merged[(labels >= 14) & (labels <= 17)] = 2
    merged[labels >= 18] = 3  # the two small discs, kept apart from the rest
    pieces = split_by_cores(merged, labels)
    assert len(np.unique(pieces)) - 1 == 4 + 4 + 2
    for value in np.unique(labels)[1:]:
        disc = labels == value
        found, counts = np.unique(pieces[disc], return_counts=True)
        best = pieces == found[np.argmax(counts)]
        assert (disc & best).sum() / (disc | best).sum() > 0.9
    one_core = np.where(labels == 10, 5, 0)
    assert np.array_equal(split_by_cores(one_core, labels) > 0, labels == 10)


def test_unchanged_objects_fire_only_where_the_target_is_the_reference():
    image, labels = touching_discs()
    objects = describe_references([image], [labels])
    same = unchanged_objects(image, labels, image, (0, 0), objects.diameter)
    assert {v for v, *_ in same} == set(np.unique(labels)[1:].tolist())
    noisy = image + np.random.default_rng(1).normal(0, 40, image.shape).astype(np.float32)
    assert unchanged_objects(image, labels, noisy, (0, 0), objects.diameter) == []
    # objects the target cuts (the target is the left half) are not copied
    half = image[:, :44]
    kept = {v for v, *_ in unchanged_objects(image, labels, half, (0, 0), objects.diameter)}
    assert kept == {10, 14, 18, 19}
    # the reference as the target: objects cut by its border are copied too (the target sees no more)
    assert {v for v, *_ in unchanged_objects(image[:, :44], labels[:, :44], image[:, :44], (0, 0),
                                             objects.diameter)} == {10, 11, 14, 15, 18, 19}
    # but not where the target sees past the reference's border (reference: the left half; target: all)
    left = labels[:, :44]
    assert {v for v, *_ in unchanged_objects(image[:, :44], left, image, (0, 0), objects.diameter)} == \
        {10, 14, 18, 19}


def test_noisy_target_with_merged_instances_gets_each_id():
    """A re-acquisition (noise: no object unchanged) whose instance answer merged each row: after the
    split, every disc takes its own id with IoU > 0.85; without the transfer, at most one per row does."""
    image, labels = touching_discs()
    target = image + np.random.default_rng(2).normal(0, 40, image.shape).astype(np.float32)
    merged = ndi.label(labels > 0)[0]
    objects = describe_references([image], [labels])
    id_map, found = match_ids(objects, target, merged, floor=0.05)
    assert {how for *_, how in found} == {"matched"}
    for value in np.unique(labels)[1:]:
        truth, got = labels == value, id_map == value
        assert (truth & got).sum() / (truth | got).sum() > 0.85, value
    plain, _ = match_ids(objects, target, merged, floor=0.05, transfer=False)
    assert len(np.unique(plain)) - 1 <= 3


def test_semantic_pieces_outside_instances_can_take_an_id():
    """The instance answer dropped the two small discs; the semantic answer has them: they get their ids."""
    image, labels = touching_discs()
    target = image + np.random.default_rng(3).normal(0, 40, image.shape).astype(np.float32)
    instances = np.where(labels < 18, labels, 0)
    without, _ = match_ids(describe_references([image], [labels]), target, instances, floor=0.05)
    with_fg, _ = match_ids(describe_references([image], [labels]), target, instances, floor=0.05,
                           foreground=labels > 0)
    assert not np.isin([18, 19], without).any() and np.isin([18, 19], with_fg).all()

"""Training data: synthetic scenes, augmentations, pair sampling (CPU; folders: test_folder_groups.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.measure import regionprops
from training_helpers import blob_item, block_labels, check_episode

from sine_model.preprocess.transforms import IMAGENET_MEAN, IMAGENET_STD
from sine_model.training.augment import AugmentConfig, augment, intensity_jitter
from sine_model.training.pairs import PairConfig, PairItem, PairSampler
from sine_model.training.synthetic import (
    ClassStyle,
    SceneConfig,
    make_group,
    make_scene,
    random_class_styles,
    synthetic_groups,
)

SMALL = SceneConfig(shape=(96, 96), n_classes=3, objects_per_class=(3, 5), radius_range=(3.0, 8.0))


# --------------------------------------------------------------------------- synthetic scenes


def test_scene_labels_match_class_map():
    image, labels, class_of = make_scene(0, SMALL)
    assert image.shape == (96, 96) and image.dtype == np.float32 and labels.dtype == np.int32
    ids = set(np.unique(labels[labels > 0]).tolist())
    assert ids == set(class_of) and len(ids) >= 3
    assert set(class_of.values()) == {1, 2, 3}
    assert np.isfinite(image).all() and image.min() >= 0


def test_scene_options_second_channel_and_uint16():
    scene = make_scene(1, SceneConfig(shape=(64, 48), second_channel=True, dtype="uint16"))
    assert scene.image.shape == (64, 48, 2) and scene.image.dtype == np.uint16
    assert scene.labels.shape == (64, 48)


def test_scene_is_deterministic_given_seed():
    a, b, c = make_scene(5, SMALL), make_scene(5, SMALL), make_scene(6, SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.class_of == b.class_of
    assert not np.array_equal(a.labels, c.labels)


def test_classes_differ_in_brightness_and_size_on_average():
    config = SceneConfig(shape=(128, 128), n_classes=3, objects_per_class=(4, 6), photons=None)
    styles = random_class_styles(np.random.default_rng(3), 3, config.radius_range)
    means, areas = {1: [], 2: [], 3: []}, {1: [], 2: [], 3: []}
    for scene in make_group(4, config, n_images=3, styles=styles):
        for inst, cls in scene.class_of.items():
            mask = scene.labels == inst
            means[cls].append(scene.image[mask].mean())
            areas[cls].append(mask.sum())
    mean_int = sorted(np.mean(v) for v in means.values())
    mean_area = sorted(np.mean(v) for v in areas.values())
    assert min(np.diff(mean_int)) > 0.1, mean_int
    assert min(np.diff(np.log(mean_area))) > 0.2, mean_area
    assert len({s.kind for s in styles}) == 3


def test_shape_kinds_are_rendered():
    common = dict(radius=(7.0, 7.0), intensity=0.6, texture="smooth")
    styles = [ClassStyle(kind="round", aspect=(1.0, 1.0), **common),
              ClassStyle(kind="elongated", aspect=(3.5, 3.5), **common)]
    config = SceneConfig(shape=(128, 128), objects_per_class=(6, 6), touching=0.0)
    scene = make_scene(2, config, styles)
    ecc = {1: [], 2: []}
    for region in regionprops(scene.labels):
        if region.bbox[0] > 0 and region.bbox[1] > 0 and region.bbox[2] < 128 and region.bbox[3] < 128:
            ecc[scene.class_of[region.label]].append(region.eccentricity)
    assert np.mean(ecc[1]) < 0.5 < 0.85 < np.mean(ecc[2])


def test_touching_objects_occur():
    config = SceneConfig(shape=(96, 96), n_classes=2, objects_per_class=(8, 8), touching=1.0)
    labels = make_scene(0, config).labels
    left, right = labels[:, :-1], labels[:, 1:]
    up, down = labels[:-1], labels[1:]
    across = ((left != right) & (left > 0) & (right > 0)).any()
    along = ((up != down) & (up > 0) & (down > 0)).any()
    assert across or along


def test_synthetic_groups_share_styles_within_a_group():
    groups = synthetic_groups(0, SMALL, n_groups=2, images_per_group=2)
    assert len(groups) == 2 and all(len(g) == 2 for g in groups)
    assert all(g[0].class_of and g[1].class_of for g in groups)


def test_style_and_config_validation():
    with pytest.raises(ValueError, match="kind"):
        ClassStyle(kind="square", radius=(2, 3), aspect=(1, 1), intensity=0.5)
    with pytest.raises(ValueError, match="n_classes"):
        SceneConfig(n_classes=0)


# --------------------------------------------------------------------------- augmentations


@pytest.mark.parametrize("seed", range(6))
def test_augment_keeps_image_label_alignment(seed):
    labels = block_labels((64, 80), block=16, first_id=100).astype(np.uint16)
    image = np.stack([labels.astype(np.float32)] * 2, axis=-1)  # the image encodes its own ids
    config = AugmentConfig(out_size=(48, 56), scale_range=(0.6, 1.8), intensity_prob=0.0)
    out = augment(image, labels, np.random.default_rng(seed), config)
    assert out.image.shape == (48, 56, 2) and out.labels.shape == (48, 56)
    assert out.labels.dtype == np.uint16
    h, w = out.valid_hw
    # Pixels deep inside a block: the bilinear image equals the nearest label (its id is untouched).
    lab = out.labels[:h, :w].astype(np.int64)
    inner = ndimage.minimum_filter(lab, 5) == ndimage.maximum_filter(lab, 5)
    assert inner.sum() > 0.2 * h * w
    np.testing.assert_allclose(out.image[:h, :w, 0][inner], lab[inner], atol=1e-3)
    assert set(np.unique(lab)) <= set(np.unique(labels))
    assert (out.image[h:] == 0).all() and (out.labels[:, w:] == 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_augment_labels_sample_the_pixel_under_the_image_sample(seed):
    # Labels number every source pixel; the image holds its (row, col). After augmentation the label
    # of an output pixel must be the source pixel nearest to the position the image was sampled at.
    height, width = 50, 70
    rows, cols = np.indices((height, width))
    labels = (rows * width + cols + 1).astype(np.int32)
    image = np.stack([rows, cols], axis=-1).astype(np.float32)
    config = AugmentConfig(out_size=(40, 44), scale_range=(0.5, 2.0), intensity_prob=0.0)
    out = augment(image, labels, np.random.default_rng(seed), config)
    h, w = out.valid_hw
    src_row, src_col = np.divmod(out.labels[:h, :w].astype(np.int64) - 1, width)
    inside = (src_row >= 3) & (src_row < height - 3) & (src_col >= 3) & (src_col < width - 3)
    assert inside.sum() > 0.3 * h * w
    assert np.abs(out.image[:h, :w, 0] - src_row)[inside].max() <= 0.5 + 1e-3
    assert np.abs(out.image[:h, :w, 1] - src_col)[inside].max() <= 0.5 + 1e-3


def test_augment_geometry_is_a_dihedral_transform_without_scaling():
    labels = block_labels((30, 40), block=10)
    config = AugmentConfig(out_size=48, scale_range=(1.0, 1.0), intensity_prob=0.0)
    seen = set()
    for seed in range(40):
        out = augment(labels.astype(np.float32), labels, np.random.default_rng(seed), config)
        h, w = out.valid_hw
        got = out.labels[:h, :w]
        matches = [(k, f) for k in range(4) for f in (False, True)
                   if np.array_equal(got, np.rot90(labels[:, ::-1] if f else labels, k))]
        assert matches, "labels are not a rotation/flip of the input"
        np.testing.assert_array_equal(out.image[:h, :w], got)
        seen.add(matches[0])
    assert len(seen) >= 6


def test_augment_crop_cuts_objects_without_relabelling():
    labels = np.zeros((100, 100), np.int32)
    labels[10:90, 10:90] = 7
    config = AugmentConfig(out_size=30, scale_range=(1.0, 1.0), intensity_prob=0.0, rot90=False)
    out = augment(labels.astype(np.float32), labels, np.random.default_rng(0), config)
    assert out.valid_hw == (30, 30)
    assert set(np.unique(out.labels)) <= {0, 7} and (out.labels == 7).any()


def test_augment_lsj_fits_image_to_output():
    labels = block_labels((200, 100), block=20)
    config = AugmentConfig(out_size=50, scale_range=(1.0, 1.0), lsj=True, intensity_prob=0.0, rot90=False)
    out = augment(labels.astype(np.float32), labels, np.random.default_rng(0), config)
    assert out.valid_hw == (50, 25)


def test_augment_is_deterministic_and_intensity_stays_in_range():
    rng_image = np.random.default_rng(0).uniform(0, 1, (40, 40, 3)).astype(np.float32)
    labels = block_labels((40, 40), block=8)
    config = AugmentConfig(out_size=32, intensity_prob=1.0)
    a = augment(rng_image, labels, np.random.default_rng(9), config)
    b = augment(rng_image, labels, np.random.default_rng(9), config)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.min() >= 0 and a.image.max() <= 1
    jittered = intensity_jitter(rng_image, np.random.default_rng(1), config)
    assert not np.allclose(jittered, rng_image)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        intensity_jitter(rng_image * 300, np.random.default_rng(1), config)


# --------------------------------------------------------------------------- pair sampling

NO_SCALE = AugmentConfig(out_size=64, scale_range=(1.0, 1.0), intensity_prob=0.5)


def test_crop_pairs_share_ids_and_objects():
    item = blob_item([(12, 12), (12, 45), (45, 20), (48, 50)], [1, 1, 2, 2])
    sampler = PairSampler([[item, blob_item([(20, 20)], [1], seed=1)]],
                          PairConfig(pad=70, augment=NO_SCALE, crop_prob=1.0), seed=0)
    for _ in range(8):
        ep = sampler.sample()
        check_episode(ep, 70)
        assert ep.crop_pair and ep.source[1] == ep.source[2]
        assert ep.ids.tolist() == ep.ref_ids.tolist()  # whole image in view: same objects, same order
        torch.testing.assert_close(ep.masks.flatten(1).sum(1), ep.ref_masks.flatten(1).sum(1))


def test_cross_pairs_never_share_ids():
    a = blob_item([(12, 12), (40, 40)], [1, 1])
    b = blob_item([(15, 40), (40, 15), (50, 50)], [1, 1, 1], seed=2)
    sampler = PairSampler([[a, b]], PairConfig(pad=70, augment=NO_SCALE, crop_prob=0.0), seed=1)
    for _ in range(8):
        ep = sampler.sample()
        check_episode(ep, 70)
        assert not ep.crop_pair and ep.source[1] != ep.source[2]
        assert not set(ep.ids.tolist()) & set(ep.ref_ids.tolist())
        assert ep.ids.min() > ep.ref_ids.max()


def test_single_image_group_forces_crop_pairs():
    sampler = PairSampler([[blob_item([(30, 30)], [1])]], PairConfig(pad=70, augment=NO_SCALE, crop_prob=0.0))
    assert all(sampler.sample().crop_pair for _ in range(4))


def test_target_keeps_only_reference_classes():
    only_one = blob_item([(15, 15), (45, 45)], [1, 1])
    both = blob_item([(15, 15), (15, 48), (48, 15), (48, 48)], [1, 2, 2, 1], seed=3)
    sampler = PairSampler([[only_one, both]], PairConfig(pad=70, augment=NO_SCALE, crop_prob=0.0), seed=2)
    seen_filtered = False
    for _ in range(12):
        ep = sampler.sample()
        check_episode(ep, 70)
        if ep.source[1] == 0:  # reference has class 1 only: the class-2 objects of the target are dropped
            assert ep.labels.tolist() == [1, 1] and ep.ref_labels.tolist() == [1, 1]
            seen_filtered = True
        else:
            assert sorted(ep.ref_labels.tolist()) == [1, 1, 2, 2]
    assert seen_filtered


def test_masks_sorted_by_class_then_id():
    item = blob_item([(12, 12), (12, 45), (45, 20), (48, 50)], [2, 1, 2, 1])
    ep = PairSampler([[item]], PairConfig(pad=70, augment=NO_SCALE), seed=0).sample()
    assert ep.ref_labels.tolist() == [1, 1, 2, 2]
    assert ep.ref_ids.tolist() == [2, 4, 1, 3]


def test_sampler_on_synthetic_scenes_with_scale_jitter_is_deterministic():
    groups = synthetic_groups(0, SceneConfig(shape=(96, 96), n_classes=3, second_channel=True), 2, 2)
    config = PairConfig(pad=84, augment=AugmentConfig(out_size=(84, 70), scale_range=(0.7, 1.4)))
    sampler_a, sampler_b = PairSampler(groups, config, seed=4), PairSampler(groups, config, seed=4)
    for _ in range(6):
        a, b = sampler_a.sample(), sampler_b.sample()
        check_episode(a, 84)
        assert a.valid_hw[0] <= 84 and a.valid_hw[1] <= 70
        torch.testing.assert_close(a.target, b.target)
        torch.testing.assert_close(a.masks, b.masks)
        assert a.ids.tolist() == b.ids.tolist() and a.source == b.source
        torch.testing.assert_close(a.ref_image, b.ref_image)


def test_episode_image_is_normalised_from_the_source():
    item = blob_item([(30, 30)], [1])
    item.image = np.full((64, 64), 1.0, np.float32)  # constant image -> to_rgb_float gives 0 everywhere
    config = PairConfig(pad=70, augment=AugmentConfig(out_size=64, scale_range=(1, 1), intensity_prob=0))
    ep = PairSampler([[item]], config).sample()
    expected = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)])
    torch.testing.assert_close(ep.ref_image[0, :, 5, 5], expected)


def test_sampler_errors_are_clear():
    with pytest.raises(ValueError, match="at least one group"):
        PairSampler([])
    with pytest.raises(ValueError, match="empty"):
        PairSampler([[blob_item([(30, 30)], [1])], []])
    empty = PairItem(np.zeros((32, 32), np.float32), np.zeros((32, 32), np.int32))
    with pytest.raises(ValueError, match="no objects"):
        PairSampler([[empty]])
    lazy = PairSampler([[lambda: empty]], PairConfig(pad=70, augment=NO_SCALE))  # checked on first load
    with pytest.raises(ValueError, match="no objects"):
        lazy.sample()
    missing = blob_item([(30, 30)], [1])
    missing.class_of = {}
    with pytest.raises(ValueError, match="no class"):
        PairSampler([[missing]])
    with pytest.raises(ValueError, match="fit in pad"):
        PairConfig(pad=56, augment=AugmentConfig(out_size=64))
    hopeless = PairConfig(pad=70, augment=NO_SCALE, min_area=10_000, max_attempts=3)
    with pytest.raises(RuntimeError, match="3 draws"):
        PairSampler([[blob_item([(30, 30)], [1])]], hopeless).sample()


def sparse_rods(shape=(727, 1026), count=10, seed=0) -> PairItem:
    """The issue's bacteria: a few small rods (3×9 pixels) in a large frame."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    for k in range(1, count + 1):
        top, left = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 9)
        labels[top:top + 3, left:left + 9] = k
    image = (labels > 0) * 0.6 + rng.uniform(0, 0.2, shape)
    return PairItem(image.astype(np.float32), labels)


def test_small_sparse_objects_in_a_large_frame_give_pairs_centred_on_objects():
    item = sparse_rods()
    augment_config = AugmentConfig(out_size=224, scale_range=(0.8, 1.25))
    focused = PairSampler([[item]], PairConfig(pad=224, augment=augment_config, focus_prob=1.0), seed=0)
    for _ in range(20):
        episode = focused.sample()  # every first draw is usable: each view is placed around an object
        check_episode(episode, 224)
        assert set(episode.ids.tolist()) & set(episode.ref_ids.tolist())  # one object in both views
    # random windows alone would often miss every rod; from the second half of the draws on, the
    # sampler centres on objects, so even a sampler that never asks for it does not give up
    plain = PairSampler([[item]], PairConfig(pad=224, augment=augment_config, max_attempts=4), seed=0)
    for _ in range(20):
        check_episode(plain.sample(), 224)


def test_focus_keeps_the_object_inside_the_crop():
    labels = np.zeros((300, 400), np.int32)
    labels[250:253, 380:389] = 5
    for seed in range(10):
        result = augment(labels.astype(np.float32), labels, np.random.default_rng(seed),
                         AugmentConfig(out_size=64, scale_range=(0.9, 1.1), intensity_prob=0.0), focus=5)
        assert (result.labels == 5).any()

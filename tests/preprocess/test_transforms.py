"""Tests for sine_model.preprocess.transforms (image and label preprocessing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sine_model.preprocess.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE_RULES,
    Geometry,
    ResizeRule,
    prepare_image,
    prepare_labels,
    resize_rule,
    to_rgb_float,
)

MEAN = np.array(IMAGENET_MEAN, dtype=np.float32)
STD = np.array(IMAGENET_STD, dtype=np.float32)


def _valid(prepared) -> np.ndarray:
    """Valid region of a prepared tensor as (h_r, w_r, 3), un-normalised."""
    h_r, w_r = prepared.geometry.valid_hw
    x = prepared.tensor[0, :, :h_r, :w_r].permute(1, 2, 0).numpy()
    return x * STD + MEAN


# ----------------------------------------------------------------------- to_rgb_float
def test_uint8_gray_is_divided_by_255_exactly():
    img = np.array([[0, 255], [128, 51]], dtype=np.uint8)
    out = to_rgb_float(img)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    expected = torch.from_numpy(img).float().div(255).numpy()  # torchvision ToTensor
    for c in range(3):
        assert np.array_equal(out[..., c], expected)
    assert out[1, 1, 0] == np.float32(0.2)
    assert out[0, 1, 2] == 1.0


def test_uint8_rgb_as_is_and_rgba_drops_alpha():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 51, 0
    out = to_rgb_float(rgb)
    assert np.array_equal(out[0, 0], np.array([1.0, 0.2, 0.0], dtype=np.float32))
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    assert np.array_equal(to_rgb_float(rgba), out)


def test_uint16_percentile_mapping():
    img = np.arange(1001, dtype=np.uint16).reshape(7, 143)  # 1% -> 10, 99.8% -> 998
    out = to_rgb_float(img)
    flat = out[..., 0].ravel()
    assert flat[0] == 0.0 and flat[10] == 0.0 and flat[1000] == 1.0 and flat[998] == 1.0
    assert flat[504] == pytest.approx(0.5, abs=1e-6)
    assert flat[257] == pytest.approx(0.25, abs=1e-6)
    # not a cast to 8 bit: 16-bit values above 255 keep distinct levels
    assert len(np.unique(flat)) > 900


def test_float_percentiles_argument_and_channelwise():
    img = np.zeros((2, 2, 3), dtype=np.float64)
    img[..., 0] = [[-1.0, 0.0], [1.0, 3.0]]
    img[..., 1] = [[0.0, 10.0], [20.0, 40.0]]
    out = to_rgb_float(img, percentiles=(0.0, 100.0))
    assert np.allclose(out[..., 0], [[0.0, 0.25], [0.5, 1.0]])
    assert np.allclose(out[..., 1], [[0.0, 0.25], [0.5, 1.0]])
    assert np.array_equal(out[..., 2], np.zeros((2, 2)))  # constant channel -> zeros


def test_constant_and_sparse_channels():
    assert np.array_equal(to_rgb_float(np.full((4, 4), 7, np.uint16)), np.zeros((4, 4, 3)))
    # 1 bright pixel in 1600: both percentiles are 0, fall back to min/max
    img = np.zeros((40, 40), dtype=np.uint16)
    img[5, 6] = 500
    out = to_rgb_float(img)
    assert out[5, 6, 0] == 1.0 and out.sum() == 3.0


def test_channel_rules():
    two = np.zeros((4, 5, 2), dtype=np.uint8)
    two[..., 0], two[..., 1] = 255, 51
    out = to_rgb_float(two, channel_axis=-1)
    assert np.array_equal(out[0, 0], np.array([1.0, 0.2, 0.0], dtype=np.float32))
    # channel-first with explicit axis, same result
    assert np.array_equal(to_rgb_float(np.moveaxis(two, -1, 0), channel_axis=0), out)
    one = np.full((3, 3, 1), 51, dtype=np.uint8)
    assert np.allclose(to_rgb_float(one, channel_axis=2), 0.2)
    chw = np.random.default_rng(0).integers(0, 255, (3, 6, 7), dtype=np.uint8)
    assert np.array_equal(to_rgb_float(chw, channel_axis=0), to_rgb_float(chw.transpose(1, 2, 0)))


@pytest.mark.parametrize(
    ("image", "kwargs", "match"),
    [
        (np.zeros((4, 4), bool), {}, "Boolean"),
        (np.array([[0.0, np.nan]]), {}, "NaN"),
        (np.array([[0.0, np.inf]]), {}, "NaN or infinite"),
        (np.zeros((2, 4, 4, 3), np.uint8), {}, "4D"),
        (np.zeros((4,), np.uint8), {}, "1D"),
        (np.zeros((4, 4, 5), np.uint8), {}, "channel_axis"),
        (np.zeros((2, 5, 5), np.uint8), {}, "channel_axis"),
        (np.zeros((5, 4, 4), np.uint8), {"channel_axis": 0}, "at most 3 channels"),
        (np.zeros((4, 4), np.uint8), {"channel_axis": 0}, "2D"),
        (np.zeros((4, 4, 3), np.uint8), {"channel_axis": 3}, "out of range"),
        (np.zeros((4, 4), np.uint16), {"percentiles": (50.0, 10.0)}, "percentiles"),
        (np.zeros((4, 4), np.complex64), {}, "dtype"),
        (np.zeros((0, 4), np.uint8), {}, "empty"),
    ],
)
def test_to_rgb_float_errors(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        to_rgb_float(image, **kwargs)


# ----------------------------------------------------------------------- resize rules
def test_named_rules():
    assert RESIZE_RULES["fss"] == ResizeRule("fss", "fixed", 518, 896)
    assert (RESIZE_RULES["long_side_896"].size, RESIZE_RULES["long_side_896"].pad) == (896, 896)
    assert (RESIZE_RULES["vos"].size, RESIZE_RULES["vos"].pad) == (1036, 1036)
    assert resize_rule("vos") is RESIZE_RULES["vos"]
    custom = ResizeRule("tiny", "long_side", 100, 112)
    assert resize_rule(custom) is custom
    with pytest.raises(ValueError, match="long_side_896"):
        resize_rule("nope")


@pytest.mark.parametrize(
    ("name", "hw", "expected"),
    [
        ("fss", (100, 300), (518, 518)),
        ("fss", (2000, 30), (518, 518)),
        ("long_side_896", (100, 300), (299, 896)),  # 298.67 rounded
        ("long_side_896", (300, 100), (896, 299)),
        ("long_side_896", (480, 640), (672, 896)),
        ("long_side_896", (25, 256), (87, 896)),  # 87.5 in detectron2 float arithmetic -> 87
        ("long_side_896", (50, 50), (896, 896)),
        ("vos", (100, 300), (345, 1036)),  # 345.33 truncated
        ("vos", (300, 100), (1036, 345)),
        ("vos", (27, 518), (53, 1036)),  # official int(1036 / (518 / 27)) = 53, not 54
        ("vos", (1, 10000), (1, 1036)),  # at least 1 pixel
    ],
)
def test_output_hw(name, hw, expected):
    assert RESIZE_RULES[name].output_hw(*hw) == expected


@pytest.mark.parametrize(
    "args",
    [
        ("x", "bogus", 10, 14),  # mode
        ("x", "fixed", 10, 14, "ceil"),  # rounding
        ("x", "fixed", 0, 14),  # size
        ("x", "fixed", 10, 20),  # pad not a multiple of 14
        ("x", "fixed", 30, 28),  # pad < size
        ("x", "long_side", 10, 0),  # pad
    ],
)
def test_bad_rules(args):
    with pytest.raises(ValueError, match="ResizeRule"):
        ResizeRule(*args)


# ----------------------------------------------------------------------- prepare_image
def test_padding_is_zero_and_valid_region_round_trips():
    img = np.random.default_rng(1).integers(0, 256, (10, 20, 3), dtype=np.uint8)
    prepared = prepare_image(img, ResizeRule("t", "long_side", 20, 28))
    t = prepared.tensor
    assert t.shape == (1, 3, 28, 28) and t.dtype == torch.float32
    assert prepared.geometry == Geometry(pad=28, valid_hw=(10, 20), original_hw=(10, 20))
    assert torch.count_nonzero(t[:, :, 10:, :]) == 0
    assert torch.count_nonzero(t[:, :, :, 20:]) == 0
    assert np.allclose(_valid(prepared), img / 255.0, atol=1e-6)
    # normalisation uses the ImageNet mean/std exactly
    expected = (
        torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None]
    )
    expected = expected / torch.tensor(STD)[:, None, None]
    assert torch.allclose(t[0, :, :10, :20], expected, atol=1e-6)


def test_named_rule_shapes():
    img = np.zeros((300, 100), dtype=np.uint8)
    vos = prepare_image(img, "vos")
    assert vos.tensor.shape == (1, 3, 1036, 1036)
    assert vos.geometry == Geometry(1036, (1036, 345), (300, 100))
    fss = prepare_image(img, "fss")
    assert fss.tensor.shape == (1, 3, 896, 896) and fss.geometry.valid_hw == (518, 518)
    default = prepare_image(img)
    assert default.geometry.valid_hw == (896, 299) and default.geometry.pad == 896


def test_resize_keeps_constant_and_range():
    img = np.full((50, 70), 128, dtype=np.uint8)
    down = prepare_image(img, ResizeRule("t", "long_side", 28, 28))
    assert down.geometry.valid_hw == (20, 28)
    assert np.allclose(_valid(down), 128 / 255, atol=1e-5)
    up = prepare_image(np.eye(5, dtype=np.uint8) * 255, ResizeRule("u", "fixed", 14, 14))
    vals = _valid(up)
    assert vals.min() >= -1e-6 and vals.max() <= 1 + 1e-6


def test_prepare_image_channel_axis_passthrough():
    img = np.zeros((3, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="channel_axis"):
        prepare_image(img, ResizeRule("t", "fixed", 8, 14))
    p = prepare_image(img, ResizeRule("t", "fixed", 8, 14), channel_axis=0)
    assert p.geometry.original_hw == (8, 8)


# ----------------------------------------------------------------------- prepare_labels
def test_labels_without_resize():
    labels = np.array([[0, 3, 3, 0], [7, 7, 0, 0], [0, 0, 0, 3], [0, 0, 0, 0]], dtype=np.uint16)
    masks, ids = prepare_labels(labels, Geometry(pad=6, valid_hw=(4, 4), original_hw=(4, 4)))
    assert ids.dtype == torch.int64 and ids.tolist() == [3, 7]
    assert masks.dtype == torch.bool and masks.shape == (2, 6, 6)
    assert np.array_equal(masks[0, :4, :4].numpy(), labels == 3)
    assert np.array_equal(masks[1, :4, :4].numpy(), labels == 7)
    assert not masks[:, 4:, :].any() and not masks[:, :, 4:].any()


def test_labels_nearest_downscale_matches_torch_nearest():
    labels = np.tile(np.array([1, 1, 2, 3, 3, 3], dtype=np.int32), (6, 1))
    labels[3:] += 10
    masks, ids = prepare_labels(labels, Geometry(pad=14, valid_hw=(3, 3), original_hw=(6, 6)))
    assert ids.tolist() == [1, 2, 3, 11, 12, 13]
    sampled = labels[np.ix_([0, 2, 4], [0, 2, 4])]  # torch nearest 6 -> 3 samples 0, 2, 4
    for k, v in enumerate(ids.tolist()):
        assert np.array_equal(masks[k, :3, :3].numpy(), sampled == v)
    assert not masks[:, 3:, :].any() and not masks[:, :, 3:].any()


def test_every_vanished_object_keeps_one_pixel():
    labels = np.arange(16, dtype=np.int32).reshape(4, 4) + 1
    masks, ids = prepare_labels(labels, Geometry(pad=14, valid_hw=(2, 2), original_hw=(4, 4)))
    assert ids.tolist() == list(range(1, 17))
    sums = masks.flatten(1).sum(1).tolist()
    assert sums == [1] * 16
    assert masks[0, 0, 0] and masks[2, 0, 1] and masks[8, 1, 0] and masks[10, 1, 1]
    assert masks[15, 1, 1]  # label 16 at (3, 3): centroid maps to int(3.5 / 2) = 1


def test_tiny_object_survives_at_centroid():
    labels = np.zeros((100, 100), dtype=np.int64)
    labels[:50, :50] = 2
    labels[51, 77] = 5  # not on the nearest-sampled grid (multiples of 10)
    masks, ids = prepare_labels(labels, Geometry(pad=14, valid_hw=(10, 10), original_hw=(100, 100)))
    assert ids.tolist() == [2, 5]
    assert masks[0].sum() == 25
    assert masks[1].sum() == 1 and masks[1, 5, 7]  # int(51.5 / 10), int(77.5 / 10)


def test_float_and_bool_labels_accepted():
    geom = Geometry(pad=14, valid_hw=(2, 2), original_hw=(2, 2))
    masks, ids = prepare_labels(np.array([[0.0, 4.0], [4.0, 0.0]]), geom)
    assert ids.tolist() == [4] and masks[0, :2, :2].tolist() == [[False, True], [True, False]]
    _, ids = prepare_labels(np.array([[True, False], [False, False]]), geom)
    assert ids.tolist() == [1]


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (np.zeros((2, 2), np.int32), "no objects"),
        (np.array([[0, -1], [1, 0]]), "negative"),
        (np.array([[0.0, 1.5], [1.0, 0.0]]), "non-integer"),
        (np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN"),
        (np.ones((3, 2), np.int32), "does not match"),
        (np.ones((2, 2, 1), np.int32), "does not match"),
        (np.array([["a", "b"], ["c", "d"]]), "integer dtype"),
    ],
)
def test_label_errors(labels, match):
    with pytest.raises(ValueError, match=match):
        prepare_labels(labels, Geometry(pad=14, valid_hw=(2, 2), original_hw=(2, 2)))


def test_geometry_validation():
    with pytest.raises(ValueError, match="pad size"):
        Geometry(pad=14, valid_hw=(15, 2), original_hw=(2, 2))
    with pytest.raises(ValueError, match="original_hw"):
        Geometry(pad=14, valid_hw=(2, 2), original_hw=(0, 2))

"""Hand-checkable unit tests of the model's parts: pooling, positions, attention masks, layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sine_model.modeling.context import masked_average, pool_reference_tokens
from sine_model.modeling.layers import LayerNorm2d, PackedAttention
from sine_model.modeling.mformer import cross_attention_allowed, self_attention_allowed
from sine_model.modeling.position import (
    gaussian_filter_correlation,
    id_query_positions,
    sine_position_encoding,
)


def test_masked_average_is_a_plain_mean_and_positive_values_count():
    features = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    masks = torch.zeros(2, 4, 4)
    masks[0, 0, 0] = 1.0
    masks[0, 1, 1] = 0.01  # any positive value counts fully (the official > 0 binarisation)
    masks[1, 3, :] = 1.0
    pooled = masked_average(features, masks)
    assert pooled.shape == (2, 2)
    # channel 0 holds 0..15 row-major, channel 1 holds 16..31
    torch.testing.assert_close(pooled[0], torch.tensor([(0 + 5) / 2, (16 + 21) / 2]))
    torch.testing.assert_close(pooled[1], torch.tensor([13.5, 29.5]))


def test_empty_mask_pools_to_zero_not_nan():
    pooled = masked_average(torch.ones(3, 4, 4), torch.zeros(1, 4, 4))
    assert torch.equal(pooled, torch.zeros(1, 3))


def _grid(values):
    return torch.tensor(values, dtype=torch.float32)


def test_pooling_groups_ids_and_labels_across_references():
    # Pool at the mask size and feature size so that resizing is the identity.
    feats = torch.stack([
        torch.stack([_grid([[1, 1], [1, 1]]) * 1.0, _grid([[0, 0], [0, 0]])]),
        torch.stack([_grid([[4, 4], [4, 4]]), _grid([[8, 8], [8, 8]])]),
    ])  # (K=2, C=2, 2, 2)
    m = torch.zeros(2, 2, dtype=torch.bool)
    top = m.clone()
    top[0] = True
    one_px = m.clone()
    one_px[1, 1] = True
    masks = [torch.stack([top, one_px]), torch.stack([one_px])]
    labels = [torch.tensor([7, 2]), torch.tensor([7])]
    ids = [torch.tensor([20, 10]), torch.tensor([20])]
    tokens = pool_reference_tokens(feats, masks, labels, ids, (2, 2))
    assert tokens.ids.tolist() == [10, 20]  # ascending ids
    assert tokens.id_labels.tolist() == [2, 7]
    assert tokens.sem_labels.tolist() == [2, 7]
    # id 10: one pixel of reference 0 → (1, 0)
    torch.testing.assert_close(tokens.id_tokens[0], torch.tensor([1.0, 0.0]))
    # id 20: two pixels in reference 0 (value 1, 0) + one pixel in reference 1 (4, 8): pixel-weighted
    torch.testing.assert_close(tokens.id_tokens[1], torch.tensor([(1 + 1 + 4) / 3, 8 / 3]))
    # label 7 = union of id 20's masks → same as id 20; label 2 = id 10
    torch.testing.assert_close(tokens.sem_tokens, tokens.id_tokens)


def test_semantic_prototype_is_union_not_sum():
    feats = torch.stack([torch.stack([_grid([[1, 2], [3, 4]])])])  # (1, 1, 2, 2)
    a = torch.tensor([[True, True], [False, False]])
    b = torch.tensor([[True, False], [True, False]])  # overlaps a at (0, 0)
    tokens = pool_reference_tokens(feats, [torch.stack([a, b])], [torch.tensor([5, 5])],
                                   [torch.tensor([1, 2])], (2, 2))
    # union = {(0,0), (0,1), (1,0)} → (1 + 2 + 3) / 3, each pixel once
    torch.testing.assert_close(tokens.sem_tokens, torch.tensor([[2.0]]))


def test_pooling_resizes_bilinearly_to_the_pool_grid_and_dilates():
    feats = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 0:2, 0:2] = True  # exactly the top-left feature cell at 4×4
    tokens = pool_reference_tokens(feats, [mask], [torch.tensor([1])], [torch.tensor([1])], (4, 4))
    # bilinear 8→4 samples at pixel centres 0.5, 2.5, …: only cell (0, 0) sees the mask
    torch.testing.assert_close(tokens.id_tokens, torch.tensor([[0.0]]))
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[0, 2, 2] = True  # one pixel: bilinear spreads it to the neighbouring cells (> 0 dilation)
    tokens = pool_reference_tokens(feats, [mask], [torch.tensor([1])], [torch.tensor([1])], (4, 4))
    resized = F.interpolate(mask[None].float(), size=(4, 4), mode="bilinear", align_corners=False)
    expected = feats[0, 0][resized[0, 0] > 0].mean()
    torch.testing.assert_close(tokens.id_tokens[0, 0], expected)


def test_id_with_two_labels_is_rejected():
    feats = torch.zeros(1, 1, 2, 2)
    masks = [torch.ones(2, 2, 2, dtype=torch.bool)]
    with pytest.raises(ValueError, match="object id 4 has several labels"):
        pool_reference_tokens(feats, masks, [torch.tensor([1, 2])], [torch.tensor([4, 4])], (2, 2))


def test_sine_position_encoding_values():
    g = 4
    pe = sine_position_encoding(g, g)
    assert pe.shape == (16, 256)
    y = torch.tensor(1 / (g + 1e-6) * 2 * math.pi)  # row 0 → y index 1
    x = torch.tensor(3 / (g + 1e-6) * 2 * math.pi)  # column 2 → x index 3
    row0_col2 = pe[2]
    torch.testing.assert_close(row0_col2[0], torch.sin(y))
    torch.testing.assert_close(row0_col2[1], torch.cos(y))  # dim_t[1] = 10000 ** 0 = 1
    torch.testing.assert_close(row0_col2[2], torch.sin(y / 10000 ** (2 / 128)))
    torch.testing.assert_close(row0_col2[128], torch.sin(x))
    torch.testing.assert_close(row0_col2[129], torch.cos(x))


def test_gaussian_kernel_is_centred_on_the_argmax():
    side = 5
    corr = torch.ones(1, 1, side * side) * 0.5
    corr[0, 0, 1 * side + 3] = 1.0  # peak at row 1, column 3
    out = gaussian_filter_correlation(corr, side, sigma=10.0).reshape(side, side)
    assert out[1, 3] == pytest.approx(1.0)
    assert out[4, 0] == pytest.approx(0.5 * math.exp(-(3**2 + 3**2) / 200))
    assert out[1, 0] == pytest.approx(0.5 * math.exp(-(3**2) / 200))
    assert out[0, 3] == pytest.approx(0.5 * math.exp(-(1**2) / 200))


def test_id_query_position_follows_the_matching_pixel():
    g = 4
    pe = sine_position_encoding(g, g, num_pos_feats=4)  # (16, 8)
    pixels = torch.zeros(1, 16, 8)
    pixels[0, :, 1] = 1.0  # every pixel points along axis 1 …
    pixels[0, 9, :] = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0])  # … except pixel 9
    query = torch.tensor([[[2.0, 0, 0, 0, 0, 0, 0, 0]]])
    pos = id_query_positions(query, pixels, pe, g, torch.tensor(1000.0))
    torch.testing.assert_close(pos[0, 0], pe[9], atol=1e-4, rtol=0)


def test_self_attention_mask_is_block_diagonal():
    allowed = self_attention_allowed(2, 3)
    expected = torch.tensor([
        [1, 1, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_cross_attention_mask_thresholds_and_resets_blocked_rows():
    logits = torch.full((1, 2, 4, 4), -5.0)
    logits[0, 0, :2, :] = 5.0  # query 0: top half of a 4×4 map
    allowed = cross_attention_allowed(logits, (2, 2))
    assert allowed.shape == (1, 1, 2, 4)
    assert allowed[0, 0, 0].tolist() == [True, True, False, False]
    assert allowed[0, 0, 1].tolist() == [True] * 4  # fully blocked → reset to all allowed


def test_layernorm2d_normalises_channels():
    x = torch.randn(2, 5, 3, 3)
    ln = LayerNorm2d(5)
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (5,), eps=1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(ln(x), ref)


def test_packed_attention_matches_nn_multihead_attention():
    torch.manual_seed(0)
    ours = PackedAttention(16, 4)
    torch.nn.init.normal_(ours.in_proj_weight)
    torch.nn.init.normal_(ours.in_proj_bias)
    ref = torch.nn.MultiheadAttention(16, 4)
    ref.load_state_dict(ours.state_dict())
    q, kv = torch.randn(1, 5, 16), torch.randn(1, 7, 16)
    allowed = torch.rand(1, 1, 5, 7) > 0.3
    allowed[..., 0] = True
    expected = ref(q.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1),
                   attn_mask=~allowed[0].repeat(4, 1, 1), need_weights=False)[0].transpose(0, 1)
    torch.testing.assert_close(ours(q, kv, kv, allowed), expected, atol=1e-5, rtol=1e-5)


def test_skeleton_has_the_model_shapes_and_touches_no_initialiser():
    """build_model_skeleton: the same names and shapes as build_model, on meta, and nn.init restored after."""
    from torch import nn

    from sine_model.modeling.config import ModelConfig, build_model, build_model_skeleton

    config = ModelConfig(kind="filterbank", dim=32, num_heads=2, ffn_dim=64, num_decoder_layers=2,
                         num_queries=8, encoder_dim=32, channels=(8, 16, 32))
    initialiser = nn.init.normal_
    skeleton = build_model_skeleton(config)
    real = build_model(config)
    assert nn.init.normal_ is initialiser
    assert {k: v.shape for k, v in skeleton.state_dict().items()} == \
        {k: v.shape for k, v in real.state_dict().items()}
    assert all(p.is_meta for p in skeleton.parameters())

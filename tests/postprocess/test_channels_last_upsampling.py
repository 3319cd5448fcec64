"""Channels-last upsampling and the matrix-product semantic sums (issue 22) against the old computation.

The old path, kept here and not in the package: every query mask upsampled in the planar layout to the
whole P × P, cropped to the valid region, resized to the original size, and the semantic answer summed
with ``einsum("qc,qhw->chw", probs, sigmoid(masks))``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sine_model.postprocess.decode import (
    id_inference,
    instance_inference,
    semantic_inference,
    upsample_mask_logits,
)
from sine_model.postprocess.joint_decode import instance_semantic_inference
from sine_model.postprocess.semantic_region import semantic_region_inference
from sine_model.postprocess.window_upsample import upsample_window
from sine_model.preprocess.transforms import Geometry

GEOMETRIES = [
    Geometry(pad=896, valid_hw=(520, 696), original_hw=(520, 696)),  # the proxy's whole sample target
    Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)),  # an embedded-model tile
    Geometry(pad=224, valid_hw=(130, 201), original_hw=(260, 402)),  # resized
    Geometry(pad=56, valid_hw=(40, 56), original_hw=(75, 101)),
]


def _old_upsample(masks: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    h_r, w_r = geometry.valid_hw
    whole = F.interpolate(masks[None].float(), size=(geometry.pad, geometry.pad), mode="bilinear",
                          align_corners=False)[:, :, :h_r, :w_r]
    if (h_r, w_r) != tuple(geometry.original_hw):
        whole = F.interpolate(whole, size=tuple(geometry.original_hw), mode="bilinear", align_corners=False)
    return whole[0]


def _old_semantic(logits: torch.Tensor, masks: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    h_r, w_r = geometry.valid_hw
    whole = F.interpolate(masks[None].float(), size=(geometry.pad, geometry.pad), mode="bilinear",
                          align_corners=False)[0, :, :h_r, :w_r]
    acc = torch.einsum("qc,qhw->chw", logits.softmax(-1)[:, :-1], whole.sigmoid())[None]
    if (h_r, w_r) != tuple(geometry.original_hw):
        acc = F.interpolate(acc, size=tuple(geometry.original_hw), mode="bilinear", align_corners=False)
    return acc[0]


def _case(geometry: Geometry, queries: int, classes: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    grid = geometry.pad * 2 // 7  # the models' mask grid: P / g = 3.5
    logits = torch.randn(queries, classes + 1, generator=gen) * 3
    masks = torch.randn(queries, grid, grid, generator=gen) * 4
    return logits, masks


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("classes", [1, 3])
def test_semantic_answers_match_the_old_computation(geometry, classes):
    queries = 40 if geometry.pad == 896 else 37  # a last chunk of 8 / 5 masks
    logits, masks = _case(geometry, queries, classes, seed=classes)
    want = _old_semantic(logits, masks, geometry)
    torch.testing.assert_close(semantic_inference(logits, masks, geometry), want, rtol=1e-5, atol=1e-4)
    _, joint = instance_semantic_inference(logits, masks, torch.arange(classes), geometry)
    torch.testing.assert_close(joint, want, rtol=1e-5, atol=1e-4)
    if geometry.valid_hw == geometry.original_hw:
        region = (slice(3, geometry.valid_hw[0] - 5), slice(geometry.valid_hw[1] // 3, geometry.valid_hw[1]))
        got = semantic_region_inference(logits, masks, geometry, region)
        torch.testing.assert_close(got, want[:, region[0], region[1]], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_upsampled_masks_and_detections_match_the_old_computation(geometry):
    logits, masks = _case(geometry, 21, 2, seed=7)
    want = _old_upsample(masks, geometry)
    got = upsample_mask_logits(masks, geometry)
    # bands of rows: source coordinates rounded as for any window (test_partial_upsampling.py)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-4 * geometry.pad / 224)
    # detections: the same pairs and (to float rounding) scores; a mask pixel could flip only where a
    # logit is within ~1e-5 of 0
    new = instance_inference(logits, masks, torch.tensor([4, 9]), geometry, score_threshold=0.0)
    probs = logits.softmax(-1)[:, :-1].flatten()
    top_p, flat = probs.topk(min(100, probs.numel()))
    old_scores = []
    for p, q in zip(top_p.tolist(), (flat // 2).tolist(), strict=True):
        binary = want[q] > 0
        old_scores.append(p * float(want[q].sigmoid()[binary].sum() / (binary.sum() + 1e-6)))
    old_scores = torch.tensor(old_scores)
    old_scores = old_scores[old_scores > 0.0].sort(descending=True).values
    torch.testing.assert_close(new.scores, old_scores, rtol=1e-5, atol=1e-6)
    differing = (new.masks != (want[new.query_index] > 0)).float().mean()
    assert differing < 1e-5
    ids = id_inference(torch.randn(5, 2), masks[:5], torch.arange(5), geometry)
    assert torch.equal(ids.masks, want[ids.query_index] > 0) or \
        (ids.masks != (want[ids.query_index] > 0)).float().mean() < 1e-5


@pytest.mark.parametrize("others", [0, 2, 7, 8, 15, 16, 23])
def test_a_masks_upsampling_does_not_depend_on_the_other_masks_of_the_call(others):
    """Whole SIMD vectors of channels round alike; the zero padding keeps every mask in one."""
    gen = torch.Generator().manual_seed(others)
    masks = torch.randn(others + 1, 64, 64, generator=gen) * 4
    alone = upsample_window(masks[-1:], 224, slice(5, 200), slice(0, 131))
    shared = upsample_window(masks, 224, slice(5, 200), slice(0, 131))
    assert torch.equal(shared[:, -1:], alone)


def test_a_non_square_mask_grid_is_upsampled_whole():
    geometry = Geometry(pad=56, valid_hw=(40, 56), original_hw=(40, 56))
    gen = torch.Generator().manual_seed(9)
    logits, masks = torch.randn(7, 3, generator=gen), torch.randn(7, 14, 18, generator=gen) * 4
    want = _old_semantic(logits, masks, geometry)
    torch.testing.assert_close(semantic_inference(logits, masks, geometry), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(upsample_mask_logits(masks, geometry), _old_upsample(masks, geometry),
                               rtol=1e-5, atol=1e-5)

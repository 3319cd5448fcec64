"""Tests for sine_model.postprocess.decode (ID / instance / semantic post-processing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sine_model.postprocess.decode import (
    ID_SCORE_THRESHOLD,
    INSTANCE_SCORE_THRESHOLD,
    SEMANTIC_THRESHOLD,
    TRAINING_DEFAULT_THRESHOLD,
    id_inference,
    instance_inference,
    semantic_inference,
    semantic_label_map,
    upsample_mask_logits,
)
from sine_model.preprocess.transforms import Geometry

GEOM = Geometry(pad=8, valid_hw=(8, 8), original_hw=(8, 8))


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def const_masks(values, hw=(4, 4)) -> torch.Tensor:
    return torch.stack([torch.full(hw, float(v)) for v in values])


def logits_from_probs(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log().float()


def test_official_thresholds():
    assert ID_SCORE_THRESHOLD == -1e9
    assert INSTANCE_SCORE_THRESHOLD == 0.0
    assert SEMANTIC_THRESHOLD == 0.7
    assert TRAINING_DEFAULT_THRESHOLD == 0.8


# ----------------------------------------------------------------------- upsample
def test_upsample_crops_before_resizing():
    # Mask grid == P, so the first upsample is the identity; the padded area holds 100.
    geom = Geometry(pad=8, valid_hw=(4, 6), original_hw=(8, 12))
    logits = torch.full((2, 8, 8), 100.0)
    logits[0, :4, :6] = 1.0
    logits[1, :4, :6] = -2.0
    out = upsample_mask_logits(logits, geom)
    assert out.shape == (2, 8, 12) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(8, 12), atol=1e-5)
    assert torch.allclose(out[1], torch.full((8, 12), -2.0), atol=1e-5)


def test_upsample_matches_two_step_bilinear():
    geom = Geometry(pad=28, valid_hw=(20, 28), original_hw=(50, 70))
    logits = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(0))
    step1 = F.interpolate(logits[None], size=(28, 28), mode="bilinear", align_corners=False)
    expected = F.interpolate(
        step1[:, :, :20, :28], size=(50, 70), mode="bilinear", align_corners=False
    )[0]
    assert torch.allclose(upsample_mask_logits(logits, geom), expected)


def test_upsample_identity_and_errors():
    x = torch.randn(2, 8, 8)
    assert torch.equal(upsample_mask_logits(x, GEOM), x)
    assert upsample_mask_logits(torch.zeros(0, 4, 4), GEOM).shape == (0, 8, 8)
    with pytest.raises(ValueError, match=r"\(Q, h, w\)"):
        upsample_mask_logits(torch.zeros(4, 4), GEOM)


# ----------------------------------------------------------------------- ID
def test_id_inference_two_queries():
    id_logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # p = 0.8808, 0.1192
    masks = const_masks([1.0, 3.0])  # mean sigmoid 0.7311, 0.9526
    ref_ids = torch.tensor([5, 9])
    p0, p1 = sig(2.0), sig(-2.0)
    s0, s1 = p0 * sig(1.0), p1 * sig(3.0)  # 0.6439, 0.1135

    det = id_inference(id_logits, masks, ref_ids, GEOM)  # VOS: keep everything
    assert det.labels.tolist() == [5, 9] and det.query_index.tolist() == [0, 1]
    assert det.scores.tolist() == pytest.approx([s0, s1], rel=1e-5)
    assert det.masks.dtype == torch.bool and det.masks.shape == (2, 8, 8) and det.masks.all()
    assert det.labels.dtype == torch.int64 and det.query_index.dtype == torch.int64

    det = id_inference(id_logits, masks, ref_ids, GEOM, score_threshold=0.5)
    assert det.labels.tolist() == [5] and len(det) == 1

    det = id_inference(id_logits, masks, ref_ids, GEOM, score_threshold=0.7)
    assert len(det) == 0 and det.masks.shape == (0, 8, 8)


def test_id_inference_sorted_and_empty_mask_scores_zero():
    id_logits = torch.tensor([[0.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
    masks = const_masks([5.0, -1.0, 5.0])  # query 1: empty binary mask -> score 0
    det = id_inference(id_logits, masks, torch.tensor([1, 2, 3]), GEOM)
    assert det.query_index.tolist() == [2, 0, 1]
    assert det.labels.tolist() == [3, 1, 2]
    assert det.scores[-1] == 0.0 and not det.masks[-1].any()
    assert torch.all(det.scores[:-1] > 0)


def test_id_inference_topk_and_errors():
    id_logits = torch.tensor([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    det = id_inference(id_logits, const_masks([1, 1, 1]), torch.tensor([7, 8, 9]), GEOM, topk=2)
    assert det.labels.tolist() == [7, 9]
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        id_inference(torch.zeros(2, 3), const_masks([1, 1]), torch.tensor([1, 2]), GEOM)
    with pytest.raises(ValueError, match="2 queries but id_mask_logits has 3"):
        id_inference(torch.zeros(2, 2), const_masks([1, 1, 1]), torch.tensor([1, 2]), GEOM)
    with pytest.raises(ValueError, match="ref_ids"):
        id_inference(torch.zeros(2, 2), const_masks([1, 1]), torch.tensor([1]), GEOM)
    with pytest.raises(ValueError, match="topk"):
        id_inference(torch.zeros(2, 2), const_masks([1, 1]), torch.tensor([1, 2]), GEOM, topk=0)
    empty = id_inference(torch.zeros(0, 2), torch.zeros(0, 4, 4), torch.zeros(0), GEOM)
    assert len(empty) == 0


# ----------------------------------------------------------------------- instance
def test_instance_topk_decoding_and_order():
    # S=3, M=2; probs without the negative column: [[.6,.1],[.2,.7],[.05,.05]]
    ins_logits = logits_from_probs([[0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.05, 0.05, 0.9]])
    masks = const_masks([10.0, 0.5, 10.0])
    sem_labels = torch.tensor([10, 20])
    det = instance_inference(ins_logits, masks, sem_labels, GEOM, topk=3)
    # top-3 pairs: (q1,c1)=.7, (q0,c0)=.6, (q1,c0)=.2; q1's mask score is sigmoid(0.5)=0.6225,
    # so the final order is (q0,c0)=.59997, (q1,c1)=.4357, (q1,c0)=.1245
    assert det.query_index.tolist() == [0, 1, 1]
    assert det.labels.tolist() == [10, 20, 10]
    expected = [0.6 * sig(10.0), 0.7 * sig(0.5), 0.2 * sig(0.5)]
    assert det.scores.tolist() == pytest.approx(expected, rel=1e-5)
    assert det.masks.shape == (3, 8, 8) and det.masks.all()

    det = instance_inference(ins_logits, masks, sem_labels, GEOM, topk=100)
    assert len(det) == 6  # min(100, S*M), all scores > 0
    det = instance_inference(ins_logits, masks, sem_labels, GEOM, score_threshold=0.3)
    assert det.labels.tolist() == [10, 20]


def _reference_instance(ins_logits, masks, sem_labels, geom, threshold, topk):
    """Straightforward version that upsamples all queries first."""
    full = upsample_mask_logits(masks, geom)
    probs = ins_logits.softmax(-1)[:, :-1]
    m = probs.shape[1]
    top_p, idx = probs.flatten().topk(min(topk, probs.numel()))
    q = idx // m
    binary = full[q] > 0
    mscore = (full[q].sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
    score = top_p * mscore
    keep = score > threshold
    order = torch.sort(score[keep], descending=True, stable=True).indices
    return binary[keep][order], score[keep][order], sem_labels[idx % m][keep][order], q[keep][order]


@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_instance_selected_upsample_equals_all(chunk):
    gen = torch.Generator().manual_seed(3)
    geom = Geometry(pad=28, valid_hw=(20, 28), original_hw=(37, 53))
    ins_logits = torch.randn(9, 4, generator=gen) * 2
    masks = torch.randn(9, 8, 8, generator=gen) * 3
    sem_labels = torch.tensor([4, 8, 15])
    det = instance_inference(ins_logits, masks, sem_labels, geom, 0.38, topk=7, chunk=chunk)
    ref_masks, ref_scores, ref_labels, ref_q = _reference_instance(
        ins_logits, masks, sem_labels, geom, 0.38, 7
    )
    assert 0 < len(det) < 7  # some pairs are thresholded away
    assert torch.equal(det.masks, ref_masks)
    assert torch.allclose(det.scores, ref_scores, rtol=1e-6)
    assert torch.equal(det.labels, ref_labels) and torch.equal(det.query_index, ref_q)


def test_instance_errors():
    masks = const_masks([1, 1, 1])
    with pytest.raises(ValueError, match="M=2 entries"):
        instance_inference(torch.zeros(3, 3), masks, torch.tensor([1, 2, 3]), GEOM)
    with pytest.raises(ValueError, match="3 queries but ins_mask_logits has 2"):
        instance_inference(torch.zeros(3, 3), masks[:2], torch.tensor([1, 2]), GEOM)
    with pytest.raises(ValueError, match=r"\(S, M\+1\)"):
        instance_inference(torch.zeros(3), masks, torch.tensor([1, 2]), GEOM)
    with pytest.raises(ValueError, match=r"\(Q, h, w\)"):
        instance_inference(torch.zeros(3, 3), torch.zeros(3, 4), torch.tensor([1, 2]), GEOM)


# ----------------------------------------------------------------------- semantic
def test_semantic_sum_is_unnormalised():
    # S=2, M=2: class probabilities per query, negative class last
    ins_logits = logits_from_probs([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1]])
    masks = const_masks([5.0, 5.0])
    sem = semantic_inference(ins_logits, masks, GEOM)
    assert sem.shape == (2, 8, 8) and sem.dtype == torch.float32
    assert torch.allclose(sem[0], torch.full((8, 8), 1.7 * sig(5.0)), rtol=1e-5)  # 1.689 > 1
    assert torch.allclose(sem[1], torch.full((8, 8), 0.15 * sig(5.0)), rtol=1e-5)
    assert sem.max() > 1.0


def test_semantic_chunking_and_sigmoid_before_resize():
    gen = torch.Generator().manual_seed(5)
    geom = Geometry(pad=14, valid_hw=(10, 14), original_hw=(25, 33))
    ins_logits = torch.randn(11, 3, generator=gen)
    masks = torch.randn(11, 7, 7, generator=gen) * 4
    sem1 = semantic_inference(ins_logits, masks, geom, chunk=1)
    sem16 = semantic_inference(ins_logits, masks, geom, chunk=16)
    assert torch.allclose(sem1, sem16, atol=1e-5)
    # official FSS order: sigmoid and sum at P x P, then crop + resize of the summed map
    probs = ins_logits.softmax(-1)[:, :-1]
    up = F.interpolate(masks[None], size=(14, 14), mode="bilinear", align_corners=False)[0]
    summed = torch.einsum("qc,qhw->chw", probs, up.sigmoid())[:, :10, :14]
    expected = F.interpolate(summed[None], size=(25, 33), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(sem16, expected, atol=1e-5)


def test_semantic_errors_and_empty():
    with pytest.raises(ValueError, match="2 queries but ins_mask_logits has 3"):
        semantic_inference(torch.zeros(2, 3), const_masks([1, 1, 1]), GEOM)
    assert semantic_inference(torch.zeros(2, 1), const_masks([1, 1]), GEOM).shape == (0, 8, 8)


def test_semantic_label_map():
    probs = torch.tensor([[[0.9, 0.5, 0.8, 0.7]], [[0.95, 0.6, 0.1, 0.2]]])
    out = semantic_label_map(probs, torch.tensor([3, 9]))
    assert isinstance(out, np.ndarray) and out.dtype == np.int64
    assert out.tolist() == [[9, 0, 3, 0]]  # 0.7 is not > 0.7
    assert semantic_label_map(probs.numpy(), np.array([3, 9]), threshold=0.55).tolist() == [
        [9, 9, 3, 3]
    ]
    with pytest.raises(ValueError, match="2 classes"):
        semantic_label_map(probs, torch.tensor([3]))
    with pytest.raises(ValueError, match=r"\(M, H, W\)"):
        semantic_label_map(probs[0], torch.tensor([3]))

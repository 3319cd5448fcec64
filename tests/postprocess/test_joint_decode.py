"""One upsampling for instance and semantic answers gives exactly what the two separate functions give."""

from __future__ import annotations

import pytest
import torch

from sine_model.postprocess.decode import instance_inference, semantic_inference
from sine_model.postprocess.joint_decode import instance_semantic_inference
from sine_model.preprocess.transforms import Geometry


@pytest.mark.parametrize(("geometry", "threshold", "topk", "chunk"), [
    (Geometry(pad=56, valid_hw=(56, 48), original_hw=(56, 48)), 0.0, 100, 16),  # scale 1
    (Geometry(pad=56, valid_hw=(40, 56), original_hw=(75, 101)), 0.0, 7, 3),  # resized, few pairs
    (Geometry(pad=56, valid_hw=(56, 56), original_hw=(56, 56)), -1.0, 100, 5),  # every pair kept
    (Geometry(pad=56, valid_hw=(56, 56), original_hw=(56, 56)), 0.99, 100, 4),  # none kept
    (Geometry(pad=448, valid_hw=(300, 448), original_hw=(300, 448)), 0.0, 100, 16),  # 3 bands of rows
    (Geometry(pad=448, valid_hw=(300, 400), original_hw=(450, 600)), 0.0, 9, 5),  # bands, resized
])
def test_joint_equals_separate(geometry, threshold, topk, chunk):
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(23, 4, generator=gen) * 3
    masks = torch.randn(23, geometry.pad * 2 // 7, geometry.pad * 2 // 7, generator=gen) * 4
    labels = torch.tensor([1, 5, 7])
    joint, probs = instance_semantic_inference(logits, masks, labels, geometry, threshold, topk, chunk)
    alone = instance_inference(logits, masks, labels, geometry, threshold, topk, chunk)
    assert torch.equal(probs, semantic_inference(logits, masks, geometry, chunk))
    assert len(joint) == len(alone) and (threshold < 0.99 or len(joint) == 0)
    for field in ("masks", "scores", "labels", "query_index"):
        assert torch.equal(getattr(joint, field), getattr(alone, field)), field


def test_joint_refuses_what_the_separate_functions_refuse():
    geometry = Geometry(pad=56, valid_hw=(56, 56), original_hw=(56, 56))
    with pytest.raises(ValueError, match="sem_labels"):
        instance_semantic_inference(torch.randn(5, 3), torch.randn(5, 16, 16), torch.tensor([1]), geometry)

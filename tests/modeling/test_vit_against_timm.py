"""Our DINOv2 ViT against timm's ``VisionTransformer`` with the same weights (skipped without timm).

The encoder no longer imports timm (see ``sine_model/encoder.py``); this test keeps the two equal.
"""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch import nn

from sine_model.modeling.encoder import DinoV2Encoder, EncoderConfig


@pytest.fixture
def timm_vit():
    """timm's ViT module, imported when this test runs, not at collection (skipped without timm).

    Imported at module level it would be loaded at collection, for the whole session: timm brings
    torchvision, torch._dynamo and triton, and a process that loaded triton before any OpenGL library
    never meets issue 16's crash (sine_model's triton guard then stands down too).
    """
    return pytest.importorskip("timm.models.vision_transformer")


def test_same_state_dict_names_and_same_blocks_as_timm(timm_vit):
    config = EncoderConfig("tiny", embed_dim=32, depth=2, num_heads=2)
    torch.manual_seed(0)
    ours = DinoV2Encoder(config).eval()
    reference = timm_vit.VisionTransformer(
        img_size=config.pretrain_size, patch_size=14, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0,
        qkv_bias=True, init_values=1e-5, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=1e-6),
    ).eval()
    state = ours.state_dict()
    with torch.no_grad():  # LayerScale at 1e-5 would hide a wrong block: make it count
        for key in state:
            if key.endswith("gamma"):
                state[key].fill_(0.7)
    ours.load_state_dict(state)
    missing, unexpected = reference.load_state_dict(
        {k: v for k, v in state.items() if k != "mask_token"}, strict=True
    ), []
    assert not missing.missing_keys and not missing.unexpected_keys and not unexpected

    images = torch.randn(2, 3, 70, 84, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours_features = ours(images)
        tokens = reference.patch_embed.proj(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([reference.cls_token.expand(2, -1, -1), tokens], dim=1)
        tokens = tokens + ours.interpolated_pos_embed(5, 6)
        for block in reference.blocks:
            tokens = block(tokens)
    expected = tokens[:, 1:].transpose(1, 2).reshape(2, 32, 5, 6)
    torch.testing.assert_close(ours_features, expected, rtol=1e-5, atol=1e-6)

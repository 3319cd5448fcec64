"""State-dict layout, shapes and parameter counts against the reference notes (§3.1, §3.2)."""

from __future__ import annotations

import io

import pytest
import torch

from sine_model import build_sine
from sine_model.modeling.encoder import ENCODER_CONFIGS


def _meta_model(encoder: str, **kwargs):
    with torch.device("meta"):
        return build_sine(encoder, **kwargs)


def _mha(prefix: str, d: int = 256) -> dict[str, tuple]:
    return {
        f"{prefix}.in_proj_weight": (3 * d, d),
        f"{prefix}.in_proj_bias": (3 * d,),
        f"{prefix}.out_proj.weight": (d, d),
        f"{prefix}.out_proj.bias": (d,),
    }


def _norm(prefix: str, d: int = 256) -> dict[str, tuple]:
    return {f"{prefix}.weight": (d,), f"{prefix}.bias": (d,)}


def _ffn(prefix: str, d: int = 256, hidden: int = 2048) -> dict[str, tuple]:
    return {
        f"{prefix}.linear1.weight": (hidden, d),
        f"{prefix}.linear1.bias": (hidden,),
        f"{prefix}.linear2.weight": (d, hidden),
        f"{prefix}.linear2.bias": (d,),
        **_norm(f"{prefix}.norm", d),
    }


def expected_official_shapes(embed_dim: int, depth: int) -> dict[str, tuple]:
    """The official key → shape table, written out from the notes' §3.1."""
    enc = "image_encoder.encoder"
    shapes: dict[str, tuple] = {
        f"{enc}.cls_token": (1, 1, embed_dim),
        f"{enc}.pos_embed": (1, 1370, embed_dim),
        f"{enc}.mask_token": (1, embed_dim),
        f"{enc}.patch_embed.proj.weight": (embed_dim, 3, 14, 14),
        f"{enc}.patch_embed.proj.bias": (embed_dim,),
        **_norm(f"{enc}.norm", embed_dim),
    }
    for i in range(depth):
        b = f"{enc}.blocks.{i}"
        shapes.update({
            **_norm(f"{b}.norm1", embed_dim),
            f"{b}.attn.qkv.weight": (3 * embed_dim, embed_dim),
            f"{b}.attn.qkv.bias": (3 * embed_dim,),
            f"{b}.attn.proj.weight": (embed_dim, embed_dim),
            f"{b}.attn.proj.bias": (embed_dim,),
            f"{b}.ls1.gamma": (embed_dim,),
            **_norm(f"{b}.norm2", embed_dim),
            f"{b}.mlp.fc1.weight": (4 * embed_dim, embed_dim),
            f"{b}.mlp.fc1.bias": (4 * embed_dim,),
            f"{b}.mlp.fc2.weight": (embed_dim, 4 * embed_dim),
            f"{b}.mlp.fc2.bias": (embed_dim,),
            f"{b}.ls2.gamma": (embed_dim,),
        })
    shapes.update({
        "image_encoder.neck.0.weight": (256, embed_dim, 1, 1),
        "image_encoder.neck.1.weight": (256,),
        "image_encoder.neck.1.bias": (256,),
        "image_encoder.neck.2.weight": (256, 256, 3, 3),
        "image_encoder.neck.3.weight": (256,),
        "image_encoder.neck.3.bias": (256,),
    })
    td = "transformer_decoder"
    shapes.update({f"{td}.temp": (), f"{td}.logit_scale": ()})
    fusion = f"{td}.fusion_layers.0"
    shapes.update({
        **_mha(f"{fusion}.transformer_self_attention_layer.self_attn"),
        **_norm(f"{fusion}.transformer_self_attention_layer.norm"),
        **_mha(f"{fusion}.transformer_cross_attention_layer.multihead_attn"),
        **_norm(f"{fusion}.transformer_cross_attention_layer.norm"),
        **_ffn(f"{fusion}.transformer_ffn_layer"),
    })
    for i in range(6):
        b = f"{td}.transformer_layers.{i}"
        shapes.update({
            **_mha(f"{b}.transformer_self_attention_layer.self_attn"),
            **_norm(f"{b}.transformer_self_attention_layer.norm"),
            **_mha(f"{b}.transformer_cross_attention_layer.multihead_attn"),
            **_norm(f"{b}.transformer_cross_attention_layer.norm"),
            **_ffn(f"{b}.transformer_ffn_layer1"),
            **_ffn(f"{b}.transformer_ffn_layer2"),
        })
    shapes.update({
        **_norm(f"{td}.decoder_norm"),
        f"{td}.mask_feat_layer.0.weight": (256, 128, 2, 2),
        f"{td}.mask_feat_layer.0.bias": (128,),
        f"{td}.mask_feat_layer.1.weight": (128,),
        f"{td}.mask_feat_layer.1.bias": (128,),
        f"{td}.mask_feat_layer.3.weight": (128, 256, 2, 2),
        f"{td}.mask_feat_layer.3.bias": (256,),
        f"{td}.query_feat.weight": (200, 256),
        f"{td}.query_embed.weight": (200, 256),
        f"{td}.query_grained_embed.weight": (3, 256),
        f"{td}.id_class_embed.weight": (2, 256),
        f"{td}.id_class_embed.bias": (2,),
        f"{td}.neg_class_embed.weight": (1, 256),
    })
    for i in range(3):
        shapes.update({
            f"{td}.mask_embed.layers.{i}.weight": (256, 256),
            f"{td}.mask_embed.layers.{i}.bias": (256,),
        })
    return shapes


@pytest.mark.parametrize("encoder", ["vits", "vitb", "vitl"])
def test_state_dict_matches_official_layout(encoder):
    config = ENCODER_CONFIGS[encoder]
    model = _meta_model(encoder)
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = expected_official_shapes(config.embed_dim, config.depth)
    assert sorted(set(actual) - set(expected)) == []
    assert sorted(set(expected) - set(actual)) == []
    mismatched = {k: (actual[k], expected[k]) for k in expected if actual[k] != expected[k]}
    assert mismatched == {}


def test_vitl_counts_match_the_notes():
    model = _meta_model("vitl")
    state = model.state_dict()
    assert len(state) == 533
    assert sum(k.startswith("image_encoder.encoder.") for k in state) == 343
    assert sum(k.startswith("image_encoder.neck.") for k in state) == 6
    assert sum(k.startswith("transformer_decoder.") for k in state) == 184
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == 323_145_860
    assert trainable == 18_777_220
    encoder = sum(p.numel() for p in model.image_encoder.encoder.parameters())
    assert encoder == 304_368_640
    assert sum(p.numel() for p in model.image_encoder.neck.parameters()) == 852_992


def test_scalars_and_initial_values():
    model = build_sine("vits")
    td = model.transformer_decoder
    assert td.temp.shape == () and td.temp.item() == pytest.approx(30.0)
    assert td.logit_scale.shape == ()
    assert td.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert all(not p.requires_grad for p in model.image_encoder.encoder.parameters())


def test_hyper_parameters_are_keywords():
    model = _meta_model("vits", num_queries=20, num_decoder_layers=2, dim=64, num_heads=4,
                        ffn_dim=128)
    state = model.state_dict()
    assert state["transformer_decoder.query_feat.weight"].shape == (20, 64)
    assert sum(k.endswith("transformer_ffn_layer1.linear1.weight") for k in state) == 2
    assert state["transformer_decoder.fusion_layers.0.transformer_ffn_layer.linear1.weight"].shape \
        == (128, 64)


def test_unknown_encoder_is_a_clear_error():
    with pytest.raises(ValueError, match="kind must be one of .*vitb.*got 'vith'"):
        build_sine("vith")


def test_strict_save_load_round_trip(tiny_model, tiny_inputs):
    buffer = io.BytesIO()
    torch.save(tiny_model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    clone = build_sine(
        tiny_model.image_encoder.encoder.config, dim=32, num_heads=4, ffn_dim=64,
        num_decoder_layers=3, num_queries=10,
    ).eval()
    result = clone.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    with torch.no_grad():
        a = tiny_model.forward_raw(*tiny_inputs)
        b = clone.forward_raw(*tiny_inputs)
    for key in ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_official_training_key_is_unexpected(tiny_model):
    state = dict(tiny_model.state_dict())
    state["criterion.empty_weight"] = torch.tensor([1.0, 0.1])
    with pytest.raises(RuntimeError, match="criterion.empty_weight"):
        tiny_model.load_state_dict(state, strict=True)

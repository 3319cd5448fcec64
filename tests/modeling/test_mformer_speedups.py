"""The M-Former's faster inference path (issue 22) against a copy of the computation it replaced.

The old path, kept here and not in the package: mask features at 4g × 4g from the whole mask-feature
head, mask logits as ``einsum(embeddings, mask features)`` for every prediction, bool attention masks
converted by SDPA in every layer, and the cross-attention key ``pixels + position`` built per block.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sine_model.modeling.context import ReferenceTokens, fuse
from sine_model.modeling.mformer import (
    MFormer,
    additive_mask,
    folded_query_masks,
    folded_query_masks_resized,
    self_attention_allowed,
)
from sine_model.modeling.position import id_query_positions, sine_position_encoding

GRID = 8


def _old_predict(model: MFormer, queries, num_ids, num_matched, mask_features):
    normed = model.decoder_norm(queries)
    id_q, ins_q, sem_q = normed[:, :num_ids], normed[:, num_ids:num_matched], normed[:, num_matched:]
    scale = torch.clamp(model.logit_scale.exp(), max=100)
    ins_logits = scale * torch.einsum("bqc,bmc->bqm", F.normalize(ins_q, dim=-1), F.normalize(sem_q, dim=-1))
    masks = torch.einsum("bqc,bchw->bqhw", model.mask_embed(normed[:, :num_matched]), mask_features)
    return {"pred_id_logits": model.id_class_embed(id_q), "pred_ins_logits": ins_logits,
            "pred_id_masks": masks[:, :num_ids], "pred_ins_masks": masks[:, num_ids:]}


def _old_forward(model: MFormer, target_features, tokens: ReferenceTokens, return_aux: bool):
    """MFormer.forward as it was before issue 22 (same weights, unfolded masks, bool masks)."""
    batch, _, grid_h, grid_w = target_features.shape
    num_ids = tokens.num_ids
    mask_features = model.mask_feat_layer(target_features)
    ref = torch.cat([tokens.id_tokens, tokens.sem_tokens], dim=0)[None].expand(batch, -1, -1)
    pixels = target_features.flatten(2).transpose(1, 2)
    ref, pixels = fuse(model.fusion_layers, ref, pixels)
    id_queries, prototypes = ref[:, :num_ids], ref[:, num_ids:]
    pixel_pos = sine_position_encoding(grid_h, grid_w, num_pos_feats=pixels.shape[-1] // 2)
    id_pos = id_query_positions(id_queries, pixels, pixel_pos, grid_h, model.temp, model.gaussian_sigma)
    grained = model.query_grained_embed.weight
    neg = model.neg_class_embed.weight[None].expand(batch, -1, -1)
    queries = torch.cat([id_queries + grained[0], model.query_feat.weight[None].expand(batch, -1, -1)
                         + grained[1], torch.cat([prototypes, neg], dim=1) + grained[2]], dim=1)
    query_pos = torch.cat([id_pos, model.query_embed.weight[None].expand(batch, -1, -1),
                           prototypes.new_zeros(batch, prototypes.shape[1] + 1, prototypes.shape[2])], dim=1)
    num_matched = num_ids + model.num_queries
    sa_allowed = self_attention_allowed(num_ids, queries.shape[1] - num_ids)
    memory_pos = pixel_pos[None].expand(batch, -1, -1)
    predictions = [_old_predict(model, queries, num_ids, num_matched, mask_features)]
    first = torch.cat([predictions[0]["pred_id_masks"], predictions[0]["pred_ins_masks"]], dim=1)
    ca_allowed = F.interpolate(first, size=(grid_h, grid_w), mode="bilinear", align_corners=False)
    ca_allowed = ca_allowed.sigmoid().flatten(2) >= 0.5
    ca_allowed = (ca_allowed | ~ca_allowed.any(dim=-1, keepdim=True))[:, None]  # all-blocked → all allowed
    for block in model.transformer_layers:
        queries = block(queries, query_pos, num_matched, pixels, memory_pos, sa_allowed, ca_allowed)
        predictions.append(_old_predict(model, queries, num_ids, num_matched, mask_features))
    out = dict(predictions[-1])
    if return_aux:
        out["aux_outputs"] = predictions[:-1]
    return out, ca_allowed


def _tiny_case(seed: int = 0):
    """A tiny M-Former whose first cross-attention mask has all-blocked rows next to mixed ones."""
    torch.manual_seed(seed)
    model = MFormer(dim=32, num_heads=4, ffn_dim=64, num_decoder_layers=3, num_queries=12,
                   mask_dim=32).eval()
    with torch.no_grad():  # a mask-feature bias that pushes some queries below 0 everywhere
        model.mask_feat_layer[-1].bias.copy_(3.0 * torch.randn(32))
    features = torch.randn(2, 32, GRID, GRID)
    tokens = ReferenceTokens(torch.randn(3, 32), torch.randn(2, 32), torch.arange(3),
                             torch.tensor([0, 0, 1]), torch.arange(2))
    return model, features, tokens


def _first_prediction_allowed(model, features, tokens):
    """The CA mask of the new path before the all-blocked reset, through the old resize + threshold."""
    out = model(features, tokens, return_aux=True)
    first = out["aux_outputs"][0]
    logits = torch.cat([first["pred_id_masks"], first["pred_ins_masks"]], dim=1)
    return F.interpolate(logits, size=(GRID, GRID), mode="bilinear", align_corners=False).sigmoid() >= 0.5


@pytest.mark.parametrize("return_aux", [False, True])
def test_new_mformer_matches_the_old_computation(return_aux):
    model, features, tokens = _tiny_case()
    allowed = _first_prediction_allowed(model, features, tokens).flatten(2)
    assert (~allowed.any(-1)).any(), "the case needs a query blocked everywhere (reset to all-allowed)"
    assert (allowed.any(-1) & ~allowed.all(-1)).any(), "the case needs partly allowed queries"
    with torch.no_grad():
        new = model(features, tokens, return_aux=return_aux)
        old, _ = _old_forward(model, features, tokens, return_aux=return_aux)
    assert new.keys() == old.keys()
    for key in ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks"):
        torch.testing.assert_close(new[key], old[key], atol=1e-5, rtol=1e-5, msg=key)
    if return_aux:
        assert len(new["aux_outputs"]) == len(old["aux_outputs"]) == 3
        for got, want in zip(new["aux_outputs"], old["aux_outputs"], strict=True):
            for key, value in want.items():
                torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-5, msg=key)


def test_new_mformer_gradients_match_the_old_computation():
    model, features, tokens = _tiny_case(seed=1)
    model.train()
    new = model(features, tokens, return_aux=True)
    new_grads = torch.autograd.grad(new["pred_ins_masks"].square().mean(), list(model.parameters()),
                                    allow_unused=True)
    old, _ = _old_forward(model, features, tokens, return_aux=True)
    old_grads = torch.autograd.grad(old["pred_ins_masks"].square().mean(), list(model.parameters()),
                                    allow_unused=True)
    for (name, _), got, want in zip(model.named_parameters(), new_grads, old_grads, strict=True):
        if want is None:
            assert got is None, name
        else:
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4, msg=name)


def test_folded_masks_equal_the_deconvolution_then_dot_product():
    torch.manual_seed(2)
    deconv = torch.nn.ConvTranspose2d(6, 10, kernel_size=2, stride=2)
    hidden, embeddings = torch.randn(2, 6, 5, 7), torch.randn(2, 4, 10)
    want = torch.einsum("bqc,bchw->bqhw", embeddings, deconv(hidden))
    torch.testing.assert_close(folded_query_masks(embeddings, hidden, deconv), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(2, 3), (5, 7), (9, 4)])
def test_resized_folded_masks_equal_bilinear_resizing_of_the_masks(size):
    torch.manual_seed(4)
    deconv = torch.nn.ConvTranspose2d(6, 10, kernel_size=2, stride=2)
    hidden, embeddings = torch.randn(2, 6, 5, 7), torch.randn(2, 4, 10)
    masks = torch.einsum("bqc,bchw->bqhw", embeddings, deconv(hidden))
    want = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    got = folded_query_masks_resized(embeddings, hidden, deconv, size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_additive_mask_gives_the_same_attention_as_the_bool_mask():
    torch.manual_seed(3)
    q, k, v = torch.randn(1, 2, 5, 4), torch.randn(1, 2, 9, 4), torch.randn(1, 2, 9, 4)
    allowed = torch.rand(1, 1, 5, 9) > 0.5
    allowed[..., 0] = True  # no all-blocked row (the M-Former never gives one)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    got = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(allowed, q.dtype))
    torch.testing.assert_close(got, want)


def test_blocked_inference_paths_match_the_old_computation(monkeypatch):
    """Without autograd the FFNs run over blocks of tokens and the masks over blocks of queries (issue 22):
    small blocks here so that the tiny case has several, with a last partial one."""
    import sine_model.modeling.layers as layers
    import sine_model.modeling.mask_folding as mask_folding

    monkeypatch.setattr(layers, "FFN_ROW_BLOCK", 9)
    monkeypatch.setattr(mask_folding, "MASK_QUERY_BLOCK", 4)
    model, features, tokens = _tiny_case(seed=5)
    with torch.no_grad():
        new = model(features, tokens, return_aux=False)
        old, _ = _old_forward(model, features, tokens, return_aux=False)
    for key in ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks"):
        torch.testing.assert_close(new[key], old[key], atol=1e-5, rtol=1e-5, msg=key)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_blocked_ffn_equals_the_whole_ffn(monkeypatch, pre_norm):
    import sine_model.modeling.layers as layers

    torch.manual_seed(6)
    ffn = layers.FFNLayer(8, 16, pre_norm=pre_norm)
    x = torch.randn(2, 23, 8)
    want = ffn(x)  # autograd on: the whole tensor at once
    monkeypatch.setattr(layers, "FFN_ROW_BLOCK", 5)
    with torch.no_grad():
        got = ffn(x)
    torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=1e-5)

"""The M-Former: in-context fusion, query assembly, the matching decoder and the prediction heads.

Query order is [ID (N); instance (S); semantic (M) + negative token (1)]. ID queries and the
instance/semantic group attend only within their group in self-attention. The semantic prototypes skip
cross-attention; FFN1 serves ID and instance queries, FFN2 the prototypes.

Official quirk kept on purpose: the cross-attention mask is computed once, from the prediction made
*before* block 0, and reused by all decoder blocks (the checkpoint was trained that way).

Speed (issue 22), same outputs up to float rounding: the mask logits are dot products of the query
embeddings with the mask features, and the last layer of the mask-feature head is a 2×2, stride-2
transposed convolution, so the embeddings are folded into that layer's weights
(``mask_folding.py``) instead of computing the 256-channel mask features at 4g × 4g (the mask head's
FLOPs at P = 896 drop to about a third, and two 4g × 4g copies go). With ``return_aux=False`` the first
prediction's masks are made only at the feature grid, for the cross-attention mask. Attention masks
are turned into additive float masks once per call, and the cross-attention key input (pixels +
position) is built once for all blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.modeling.context import FusionLayer, ReferenceTokens, fuse
from sine_model.modeling.layers import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    LayerNorm2d,
    SelfAttentionLayer,
    xavier_init_matrices,
)
from sine_model.modeling.mask_folding import (
    foldable_deconvolution,
    folded_query_masks,
    folded_query_masks_resized,
)
from sine_model.modeling.position import id_query_positions, sine_position_encoding

__all__ = [
    "MFormer",
    "DecoderBlock",
    "self_attention_allowed",
    "cross_attention_allowed",
    "cross_attention_allowed_at_grid",
    "additive_mask",
]


class DecoderBlock(nn.Module):
    """One pre-norm M-Former block: shared masked SA → CA (ID + instance) → FFN1 / FFN2."""

    def __init__(self, dim: int = 256, num_heads: int = 8, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.transformer_self_attention_layer = SelfAttentionLayer(dim, num_heads, pre_norm=True)
        self.transformer_cross_attention_layer = CrossAttentionLayer(dim, num_heads, pre_norm=True)
        self.transformer_ffn_layer1 = FFNLayer(dim, ffn_dim, pre_norm=True)
        self.transformer_ffn_layer2 = FFNLayer(dim, ffn_dim, pre_norm=True)
        xavier_init_matrices(self)

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        num_matched: int,
        memory: Tensor,
        memory_pos: Tensor | None,
        sa_allowed: Tensor,
        ca_allowed: Tensor,
        memory_key: Tensor | None = None,
    ) -> Tensor:
        """Update all queries (B, L, C); the first ``num_matched`` (ID + instance) see the image.

        The masks are bool (True = allowed) or additive float masks (see :func:`additive_mask`);
        ``memory_key``, when given, is ``memory + memory_pos`` precomputed by the caller.
        """
        queries = self.transformer_self_attention_layer(queries, query_pos, sa_allowed)
        matched, semantic = queries[:, :num_matched], queries[:, num_matched:]
        matched = self.transformer_cross_attention_layer(
            matched, memory, query_pos[:, :num_matched], memory_pos, ca_allowed, key=memory_key
        )
        return torch.cat(
            [self.transformer_ffn_layer1(matched), self.transformer_ffn_layer2(semantic)], dim=1
        )


def self_attention_allowed(num_ids: int, num_others: int, device: torch.device | None = None) -> Tensor:
    """Block-diagonal (L, L) mask, True = allowed: ID↔ID and (instance + semantic)↔(instance + semantic)."""
    length = num_ids + num_others
    allowed = torch.zeros(length, length, dtype=torch.bool, device=device)
    allowed[:num_ids, :num_ids] = True
    allowed[num_ids:, num_ids:] = True
    return allowed


def cross_attention_allowed(mask_logits: Tensor, grid: tuple[int, int]) -> Tensor:
    """Mask2Former masked attention from mask logits (B, Q, h, w) → allowed (B, 1, Q, g·g).

    Logits are resized bilinearly to the feature grid; positions with sigmoid < 0.5 are blocked, and a
    query whose every position is blocked may attend everywhere instead.
    """
    resized = F.interpolate(mask_logits, size=grid, mode="bilinear", align_corners=False)
    return cross_attention_allowed_at_grid(resized)


def cross_attention_allowed_at_grid(grid_logits: Tensor) -> Tensor:
    """:func:`cross_attention_allowed` from logits already resized to the grid (B, Q, g, g)."""
    allowed = grid_logits.sigmoid().flatten(2) >= 0.5
    allowed = allowed | ~allowed.any(dim=-1, keepdim=True)
    return allowed[:, None].detach()


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """The float mask SDPA builds from a bool one (0 where allowed, −inf where blocked), built once.

    Rows must not be all-blocked (:func:`cross_attention_allowed` and :func:`self_attention_allowed`
    never give one); SDPA would return NaN there in both forms.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, -math.inf)


class MFormer(nn.Module):
    """SINE's ``transformer_decoder``: fusion layers, query assembly, decoder blocks and heads.

    Parameters
    ----------
    dim : int
        Token width (official 256).
    num_heads : int
        Attention heads (8).
    ffn_dim : int
        Hidden width of the FFNs (2048).
    num_fusion_layers : int
        In-context fusion layers (1).
    num_decoder_layers : int
        M-Former blocks (6).
    num_queries : int
        Instance queries S (200).
    mask_dim : int
        Width of the mask embedding (256; must equal ``dim`` for the mask features).
    temp : float
        Initial ID-position softmax temperature (30).
    gaussian_sigma : float
        σ of the Gaussian around the correlation peak, in grid cells (10).
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        num_fusion_layers: int = 1,
        num_decoder_layers: int = 6,
        num_queries: int = 200,
        mask_dim: int = 256,
        temp: float = 30.0,
        gaussian_sigma: float = 10.0,
    ) -> None:
        super().__init__()
        if mask_dim != dim:
            raise ValueError(f"mask_dim ({mask_dim}) must equal dim ({dim}): masks are dot products "
                             "with the mask features")
        self.num_heads = num_heads
        self.num_queries = num_queries
        self.gaussian_sigma = gaussian_sigma
        self.temp = nn.Parameter(torch.tensor(temp))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fusion_layers = nn.ModuleList(
            FusionLayer(dim, num_heads, ffn_dim) for _ in range(num_fusion_layers)
        )
        self.transformer_layers = nn.ModuleList(
            DecoderBlock(dim, num_heads, ffn_dim) for _ in range(num_decoder_layers)
        )
        self.decoder_norm = nn.LayerNorm(dim)
        self.mask_feat_layer = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
            LayerNorm2d(dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim, kernel_size=2, stride=2),
        )
        self.query_feat = nn.Embedding(num_queries, dim)
        self.query_embed = nn.Embedding(num_queries, dim)
        self.query_grained_embed = nn.Embedding(3, dim)  # rows: ID, instance, semantic
        self.id_class_embed = nn.Linear(dim, 2)  # index 0 = present, 1 = no object
        self.neg_class_embed = nn.Embedding(1, dim)
        self.mask_embed = MLP(dim, dim, mask_dim, 3)

    def mask_features(self, target_features: Tensor) -> Tensor:
        """Mask features (B, C, 4g, 4g) from the un-fused neck features of the target."""
        return self.mask_feat_layer(target_features)

    def forward(
        self,
        target_features: Tensor,
        tokens: ReferenceTokens,
        return_aux: bool = True,
    ) -> dict[str, Tensor | list[dict[str, Tensor]]]:
        """Decode B targets (B, C, g, g) against one reference set.

        Returns the official output dict (``pred_id_logits`` (B, N, 2), ``pred_ins_logits``
        (B, S, M+1), ``pred_id_masks`` (B, N, 4g, 4g), ``pred_ins_masks`` (B, S, 4g, 4g)), plus
        ``aux_outputs`` (the predictions before block 0 and after blocks 0..L-2) when ``return_aux``.
        """
        batch, _, grid_h, grid_w = target_features.shape
        if grid_h != grid_w:
            raise ValueError(f"target grid {grid_h}×{grid_w} is not square: pad inputs to a square")
        num_ids, num_queries = tokens.num_ids, self.num_queries
        mask_source = self.mask_source(target_features)

        # In-context fusion, both directions from the pre-fusion inputs.
        ref = torch.cat([tokens.id_tokens, tokens.sem_tokens], dim=0).to(target_features.dtype)
        ref = ref[None].expand(batch, -1, -1)
        pixels = target_features.flatten(2).transpose(1, 2)
        ref, pixels = fuse(self.fusion_layers, ref, pixels)
        id_queries, prototypes = ref[:, :num_ids], ref[:, num_ids:]

        pixel_pos = sine_position_encoding(
            grid_h, grid_w, num_pos_feats=pixels.shape[-1] // 2, device=pixels.device
        ).to(pixels.dtype)
        id_pos = id_query_positions(
            id_queries, pixels, pixel_pos, grid_h, self.temp, self.gaussian_sigma
        )

        grained = self.query_grained_embed.weight
        ins_content = self.query_feat.weight[None].expand(batch, -1, -1)
        neg = self.neg_class_embed.weight[None].expand(batch, -1, -1)
        queries = torch.cat(
            [id_queries + grained[0], ins_content + grained[1],
             torch.cat([prototypes, neg], dim=1) + grained[2]],
            dim=1,
        )
        query_pos = torch.cat(
            [id_pos, self.query_embed.weight[None].expand(batch, -1, -1),
             prototypes.new_zeros(batch, prototypes.shape[1] + 1, prototypes.shape[2])],
            dim=1,
        )
        num_matched = num_ids + num_queries
        sa_allowed = self_attention_allowed(num_ids, queries.shape[1] - num_ids, queries.device)
        sa_mask = additive_mask(sa_allowed, queries.dtype)
        memory_key = pixels + pixel_pos  # the same key input for every block

        if return_aux:
            predictions = [self.predict(queries, num_ids, num_matched, mask_source)]
            ca_allowed = cross_attention_allowed(
                torch.cat([predictions[0]["pred_id_masks"], predictions[0]["pred_ins_masks"]], dim=1),
                (grid_h, grid_w),
            )
        else:  # only the cross-attention mask reads the first prediction: make its masks at the grid
            predictions = []
            ca_allowed = cross_attention_allowed_at_grid(
                self.grid_mask_logits(queries, num_matched, mask_source, (grid_h, grid_w))
            )
        ca_mask = additive_mask(ca_allowed, queries.dtype)
        last = len(self.transformer_layers) - 1
        for i, block in enumerate(self.transformer_layers):
            queries = block(queries, query_pos, num_matched, pixels, None, sa_mask, ca_mask,
                            memory_key=memory_key)
            if return_aux or i == last:
                predictions.append(self.predict(queries, num_ids, num_matched, mask_source))
        out: dict = dict(predictions[-1])
        if return_aux:
            out["aux_outputs"] = predictions[:-1]
        return out

    def mask_source(self, target_features: Tensor) -> Tensor:
        """What :meth:`predict` takes the masks from: the input of the last (foldable) layer of the
        mask-feature head (B, C/2, 2g, 2g), else the mask features themselves (B, C, 4g, 4g)."""
        if foldable_deconvolution(self.mask_feat_layer[-1]):
            return self.mask_feat_layer[:-1](target_features)
        return self.mask_feat_layer(target_features)

    def query_masks(self, embeddings: Tensor, mask_source: Tensor) -> Tensor:
        """Mask logits (B, Q, 4g, 4g): embeddings (B, Q, C) · mask features (see :meth:`mask_source`)."""
        deconv = self.mask_feat_layer[-1]
        if foldable_deconvolution(deconv):
            return folded_query_masks(embeddings, mask_source, deconv)
        return torch.einsum("bqc,bchw->bqhw", embeddings, mask_source)

    def grid_mask_logits(
        self, queries: Tensor, num_matched: int, mask_source: Tensor, grid: tuple[int, int]
    ) -> Tensor:
        """The ID + instance mask logits of :meth:`predict`, bilinearly resized to ``grid``."""
        embeddings = self.mask_embed(self.decoder_norm(queries[:, :num_matched]))
        deconv = self.mask_feat_layer[-1]
        if foldable_deconvolution(deconv):
            return folded_query_masks_resized(embeddings, mask_source, deconv, grid)
        masks = torch.einsum("bqc,bchw->bqhw", embeddings, mask_source)
        return F.interpolate(masks, size=grid, mode="bilinear", align_corners=False)

    def predict(
        self, queries: Tensor, num_ids: int, num_matched: int, mask_source: Tensor
    ) -> dict[str, Tensor]:
        """Heads on the normed queries: ID classes, cosine instance classes, ID and instance masks.

        ``mask_source`` comes from :meth:`mask_source`.
        """
        normed = self.decoder_norm(queries)
        id_q, ins_q, sem_q = normed[:, :num_ids], normed[:, num_ids:num_matched], normed[:, num_matched:]
        scale = torch.clamp(self.logit_scale.exp(), max=100)
        ins_logits = scale * torch.einsum(
            "bqc,bmc->bqm", F.normalize(ins_q, dim=-1), F.normalize(sem_q, dim=-1)
        )
        embeddings = self.mask_embed(normed[:, :num_matched])
        masks = self.query_masks(embeddings, mask_source)
        return {
            "pred_id_logits": self.id_class_embed(id_q),
            "pred_ins_logits": ins_logits,
            "pred_id_masks": masks[:, :num_ids],
            "pred_ins_masks": masks[:, num_ids:],
        }

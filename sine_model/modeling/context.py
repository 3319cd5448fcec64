"""In-context interaction: reference tokens by mask pooling, and the fusion layer.

Pooling rule (official training/FSS/VOS copies, generalised to k references):

* masks and reference features are resized bilinearly (``align_corners=False``) to the mask-feature
  grid 4g × 4g; a pooling mask is ``(sum of the resized masks of a group) > 0``, which slightly dilates;
* an ID token is the masked mean over all masks sharing one id, across references;
* a semantic prototype is the masked mean over the union of all masks with one label, across references;
* "across references" is pixel-weighted: the official code concatenates the per-reference maps along
  the width before pooling, and we do exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.modeling.layers import CrossAttentionLayer, FFNLayer, SelfAttentionLayer, xavier_init_matrices

__all__ = ["ReferenceTokens", "pool_reference_tokens", "masked_average", "FusionLayer"]

POOLING_EPS = 1e-8


@dataclass
class ReferenceTokens:
    """Pre-fusion reference tokens for one reference set.

    Attributes
    ----------
    id_tokens : Tensor
        (N, C): one token per unique object id, in ascending id order.
    sem_tokens : Tensor
        (M, C): one prototype per unique label, in ascending label order.
    ids : Tensor
        (N,) int64 object ids.
    id_labels : Tensor
        (N,) int64 label of each id.
    sem_labels : Tensor
        (M,) int64 unique labels.
    """

    id_tokens: Tensor
    sem_tokens: Tensor
    ids: Tensor
    id_labels: Tensor
    sem_labels: Tensor

    @property
    def num_ids(self) -> int:
        return int(self.ids.numel())

    @property
    def num_classes(self) -> int:
        return int(self.sem_labels.numel())

    def to(self, device: torch.device | str) -> ReferenceTokens:
        return ReferenceTokens(*(t.to(device) for t in (
            self.id_tokens, self.sem_tokens, self.ids, self.id_labels, self.sem_labels)))


def masked_average(features: Tensor, masks: Tensor) -> Tensor:
    """Average ``features`` (C, H, W) inside each binarised mask of ``masks`` (Q, H, W) → (Q, C).

    ``masks`` are binarised with ``> 0`` (without gradient), then Σ F·m / (Σ m + 1e-8).
    """
    with torch.no_grad():
        binary = (masks > 0).to(features.dtype)
        weights = binary / (binary.sum(dim=(-1, -2), keepdim=True) + POOLING_EPS)
    return torch.einsum("chw,qhw->qc", features, weights)


def _group_matrix(values: Tensor, groups: Tensor, dtype: torch.dtype) -> Tensor:
    """(G, N) one-hot matrix: row g selects the entries of ``values`` equal to ``groups[g]``."""
    return (groups[:, None] == values[None, :]).to(dtype)


def pool_reference_tokens(
    ref_features: Tensor,
    ref_masks: list[Tensor],
    ref_labels: list[Tensor],
    ref_ids: list[Tensor],
    pool_size: tuple[int, int],
) -> ReferenceTokens:
    """Pool ID tokens and semantic prototypes from reference features.

    Parameters
    ----------
    ref_features : Tensor
        (K, C, g, g) neck features of the K reference images.
    ref_masks : list of Tensor
        K bool tensors (N_k, P, P).
    ref_labels, ref_ids : list of Tensor
        K int64 tensors (N_k,).
    pool_size : tuple of int
        The mask-feature grid (4g, 4g) at which pooling happens.

    Returns
    -------
    ReferenceTokens
    """
    all_ids = torch.cat([ids.reshape(-1) for ids in ref_ids])
    all_labels = torch.cat([labels.reshape(-1) for labels in ref_labels])
    ids = torch.unique(all_ids)
    sem_labels = torch.unique(all_labels)
    id_labels = _labels_of_ids(ids, all_ids, all_labels)

    # Pixel-weighted mean across references (the official k-shot rule: the maps are width-concatenated),
    # accumulated tile by tile over the groups present in each: a dense (groups, h, K·w) map would need
    # ids × tiles memory (2,809 ids on 256 tiles: 12 GB).
    id_sum, id_area = _group_sums(ref_features, ref_masks, ref_ids, ids, pool_size)
    sem_sum, sem_area = _group_sums(ref_features, ref_masks, ref_labels, sem_labels, pool_size)
    return ReferenceTokens(
        id_tokens=id_sum / (id_area[:, None] + POOLING_EPS),
        sem_tokens=sem_sum / (sem_area[:, None] + POOLING_EPS),
        ids=ids,
        id_labels=id_labels,
        sem_labels=sem_labels,
    )


def _group_sums(ref_features: Tensor, ref_masks: list[Tensor], ref_values: list[Tensor], groups: Tensor,
                pool_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Per group (sorted ``groups``): Σ features over its binarised pooled mask, and the mask's area.

    A group's mask in one reference is the union (sum, then ``> 0``) of its masks there, resized to
    ``pool_size``; sums and areas add up over the references.
    """
    dtype = ref_features.dtype
    sums = ref_features.new_zeros(len(groups), ref_features.shape[1])
    areas = ref_features.new_zeros(len(groups))
    for features, masks, values in zip(ref_features, ref_masks, ref_values, strict=True):
        present = torch.unique(values.reshape(-1))
        if not present.numel():
            continue
        rows = torch.searchsorted(groups, present)
        resized = F.interpolate(masks[None].to(dtype), pool_size, mode="bilinear", align_corners=False)[0]
        with torch.no_grad():
            grouped = torch.einsum("gn,nhw->ghw", _group_matrix(values.reshape(-1), present, dtype), resized)
            binary = (grouped > 0).to(dtype)
        feature_map = F.interpolate(features[None], size=pool_size, mode="bilinear", align_corners=False)[0]
        sums = sums.index_add(0, rows, torch.einsum("chw,ghw->gc", feature_map, binary))
        areas = areas.index_add(0, rows, binary.sum(dim=(-1, -2)))
    return sums, areas


def _labels_of_ids(ids: Tensor, all_ids: Tensor, all_labels: Tensor) -> Tensor:
    """The label of each unique id; an id carrying two labels is a contradiction in the input."""
    out = torch.empty_like(ids)
    for i, obj in enumerate(ids.tolist()):
        labels = torch.unique(all_labels[all_ids == obj])
        if labels.numel() != 1:
            raise ValueError(
                f"object id {obj} has several labels {labels.tolist()}: give every mask of one "
                "object the same label"
            )
        out[i] = labels[0]
    return out


class FusionLayer(nn.Module):
    """Post-norm transformer layer (SA → CA → FFN), no positional encodings.

    The same weights serve both directions of the in-context fusion (tokens ↔ target pixels).
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, ffn_dim: int = 2048) -> None:
        super().__init__()
        self.transformer_self_attention_layer = SelfAttentionLayer(dim, num_heads, pre_norm=False)
        self.transformer_cross_attention_layer = CrossAttentionLayer(dim, num_heads, pre_norm=False)
        self.transformer_ffn_layer = FFNLayer(dim, ffn_dim, pre_norm=False)
        xavier_init_matrices(self)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        """Update ``x`` (B, L, C) with self-attention and cross-attention to ``memory`` (B, S, C)."""
        x = self.transformer_self_attention_layer(x)
        x = self.transformer_cross_attention_layer(x, memory)
        return self.transformer_ffn_layer(x)


def fuse(layers: nn.ModuleList, tokens: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Apply each fusion layer in both directions from its inputs, plus the outer residual.

    Parameters
    ----------
    tokens : Tensor
        (B, N+M, C) reference tokens.
    pixels : Tensor
        (B, HW, C) target pixel tokens.
    """
    for layer in layers:
        new_tokens = layer(tokens, pixels)
        new_pixels = layer(pixels, tokens)
        tokens, pixels = new_tokens + tokens, new_pixels + pixels
    return tokens, pixels

"""Mask logits with the query embeddings folded into the mask head's last 2×2 deconvolution (issue 22).

The M-Former's mask logits are ``einsum("bqc,bchw->bqhw", embeddings, deconv(hidden))``; ``deconv``
is linear, so the embeddings can be folded into its taps and the C-channel mask features at the output
resolution never made. Equal to the unfolded product up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["folded_query_masks", "folded_query_masks_resized", "foldable_deconvolution", "MASK_QUERY_BLOCK"]

#: Queries per matrix product in :func:`folded_query_masks` without autograd (4 MB of logits at 128²).
MASK_QUERY_BLOCK = 16


def folded_query_masks(embeddings: Tensor, hidden: Tensor, deconv: nn.ConvTranspose2d) -> Tensor:
    """Mask logits ``einsum("bqc,bchw->bqhw", embeddings, deconv(hidden))`` without ``deconv(hidden)``.

    ``deconv`` (kernel 2, stride 2, no padding) maps each hidden cell (i, j) to the output cells
    (2i + a, 2j + c) with its tap W[:, :, a, c]; a query's logits there are ``hidden[:, i, j] ·
    (W[:, :, a, c] @ e_q) + bias · e_q``. So the embeddings are folded into per-query taps (K, Q·4),
    one matmul over the hidden cells gives (Q·4, h·w), and the pixel-shuffle permutation puts the taps
    in place.

    Parameters
    ----------
    embeddings : Tensor
        (B, Q, C) mask embeddings.
    hidden : Tensor
        (B, K, h, w) input of ``deconv``.
    deconv : nn.ConvTranspose2d
        K → C channels, kernel 2, stride 2.

    Returns
    -------
    Tensor
        (B, Q, 2h, 2w), equal to the unfolded product up to float rounding.
    """
    batch, num_queries, _ = embeddings.shape
    _, channels, height, width = hidden.shape
    taps = _folded_taps(embeddings, deconv)  # (B, Q·4, K + 1): the bias rides on a ones channel
    ones = hidden.new_ones(batch, 1, height * width)
    source = torch.cat([hidden.reshape(batch, channels, height * width), ones], dim=1)
    if torch.is_grad_enabled():
        logits = torch.bmm(taps, source)
        # (B, Q, a, c, i, j) → (B, Q, 2i + a, 2j + c): the pixel-shuffle order, as one permuting copy.
        logits = logits.view(batch, num_queries, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3)
        return logits.reshape(batch, num_queries, 2 * height, 2 * width)
    # Without autograd, blocks of queries straight into the output: no second Q × 4g × 4g tensor
    # (60 MB at P = 896, faulted in fresh on every call), and each block's copy reads from cache.
    out = source.new_empty(batch, num_queries, 2 * height, 2 * width)
    for start in range(0, num_queries, MASK_QUERY_BLOCK):
        stop = min(start + MASK_QUERY_BLOCK, num_queries)
        block = torch.bmm(taps[:, 4 * start : 4 * stop], source)
        out[:, start:stop].view(batch, stop - start, height, 2, width, 2).copy_(
            block.view(batch, stop - start, 2, 2, height, width).permute(0, 1, 4, 2, 5, 3))
    return out


def folded_query_masks_resized(
    embeddings: Tensor, hidden: Tensor, deconv: nn.ConvTranspose2d, size: tuple[int, int]
) -> Tensor:
    """``F.interpolate(folded_query_masks(...), size, mode="bilinear")`` without the 2h × 2w masks.

    Bilinear resizing (``align_corners=False``, no antialias) is separable and linear: R_y · X · R_xᵀ
    with 1-D interpolation matrices that :func:`F.interpolate` itself builds from an identity. Applied
    to each tap's hidden map first, the masks are then one small matmul at the output size. Used for the
    cross-attention mask, which needs the first prediction's masks only at the feature grid.
    """
    batch, num_queries, _ = embeddings.shape
    _, channels, height, width = hidden.shape
    rows = _interpolation_matrix(2 * height, size[0], hidden)  # (out_h, 2h)
    cols = _interpolation_matrix(2 * width, size[1], hidden)  # (out_w, 2w)
    # Output row 2i + a of the deconvolution holds tap a of hidden row i.
    rows_by_tap = rows.view(size[0], height, 2).permute(2, 0, 1)  # (a, out_h, i)
    cols_by_tap = cols.view(size[1], width, 2).permute(2, 0, 1)  # (c, out_w, j)
    resized = torch.einsum("ayi,bkij->bakyj", rows_by_tap, hidden)
    resized = torch.einsum("bakyj,cxj->backyx", resized, cols_by_tap)  # (B, a, c, K, out_h, out_w)
    resized = resized.reshape(batch, 4 * channels, size[0] * size[1])
    ones = (rows.sum(1)[:, None] * cols.sum(1)[None, :]).reshape(1, 1, -1).expand(batch, 1, -1)
    logits = torch.bmm(_folded_taps(embeddings, deconv, per_tap=False), torch.cat([resized, ones], dim=1))
    return logits.view(batch, num_queries, size[0], size[1])


def _folded_taps(embeddings: Tensor, deconv: nn.ConvTranspose2d, per_tap: bool = True) -> Tensor:
    """Embeddings folded into the deconvolution's taps, bias last.

    ``per_tap``: (B, Q·4, K + 1), rows ordered (query, a, c); else (B, Q, 4·K + 1), columns (a, c, K).
    """
    batch, num_queries, _ = embeddings.shape
    taps = torch.einsum("kcyx,bqc->bqyxk", deconv.weight, embeddings)  # (B, Q, a, c, K)
    bias = embeddings @ deconv.bias if deconv.bias is not None else embeddings.new_zeros(batch, num_queries)
    if per_tap:
        taps = taps.reshape(batch, num_queries * 4, -1)
        return torch.cat([taps, bias.repeat_interleave(4, dim=1)[..., None]], dim=2)
    return torch.cat([taps.reshape(batch, num_queries, -1), bias[..., None]], dim=2)


def _interpolation_matrix(size_in: int, size_out: int, like: Tensor) -> Tensor:
    """(size_out, size_in) matrix of 1-D linear resizing with ``align_corners=False`` (torch's own)."""
    eye = torch.eye(size_in, dtype=like.dtype, device=like.device)[None]
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.contiguous()


def foldable_deconvolution(deconv: nn.Module) -> bool:
    """Whether ``deconv`` is the 2×2, stride-2 transposed convolution :func:`folded_query_masks` handles."""
    return (
        isinstance(deconv, nn.ConvTranspose2d)
        and tuple(deconv.kernel_size) == (2, 2)
        and tuple(deconv.stride) == (2, 2)
        and tuple(deconv.padding) == (0, 0)
        and tuple(deconv.output_padding) == (0, 0)
        and tuple(deconv.dilation) == (1, 1)
        and deconv.groups == 1
    )

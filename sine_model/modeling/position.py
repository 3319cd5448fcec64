"""Positional encodings: the sine encoding of the target grid and SINE's ID-query positions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sine_position_encoding", "gaussian_filter_correlation", "id_query_positions"]


def sine_position_encoding(
    grid_h: int,
    grid_w: int,
    num_pos_feats: int = 128,
    temperature: float = 10000.0,
    scale: float = 2 * math.pi,
    device: torch.device | str | None = None,
) -> Tensor:
    """Normalised 2D sine encoding (DETR / Mask2Former ``PositionEmbeddingSine``), flattened.

    Rows and columns are numbered 1..g, divided by (g + 1e-6) and scaled by ``scale``; channel i uses
    the frequency ``temperature ** (2 * (i // 2) / num_pos_feats)``, sin on even and cos on odd
    channels. The first ``num_pos_feats`` channels encode y, the rest x.

    Returns
    -------
    Tensor
        (grid_h * grid_w, 2 * num_pos_feats), row-major over the grid.
    """
    eps = 1e-6
    y = torch.arange(1, grid_h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, grid_w + 1, dtype=torch.float32, device=device)
    y = y / (y[-1] + eps) * scale
    x = x / (x[-1] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)

    def encode(values: Tensor) -> Tensor:
        angles = values[:, None] / dim_t
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y)[:, None, :].expand(grid_h, grid_w, num_pos_feats)
    pos_x = encode(x)[None, :, :].expand(grid_h, grid_w, num_pos_feats)
    return torch.cat([pos_y, pos_x], dim=-1).reshape(grid_h * grid_w, 2 * num_pos_feats)


def gaussian_filter_correlation(corr: Tensor, side: int, sigma: float = 10.0) -> Tensor:
    """Multiply each correlation map by a Gaussian centred on its argmax.

    Parameters
    ----------
    corr : Tensor
        (B, N, side*side) correlation of N queries with a square grid, row-major.
    side : int
        Grid side. The official code uses the feature height for both axes, so grids must be square.
    sigma : float
        Gaussian standard deviation in grid cells.

    Returns
    -------
    Tensor
        (B, N, side*side) float32 ``corr * exp(-((x - cx)² + (y - cy)²) / (2 σ²))``.
    """
    if corr.shape[-1] != side * side:
        raise ValueError(f"correlation has {corr.shape[-1]} positions, expected {side}×{side}")
    center = corr.argmax(dim=-1)
    # The kernel is built in float32 whatever the input precision (as officially).
    center_y = torch.div(center, side, rounding_mode="floor").float()
    center_x = (center % side).float()
    coords = torch.arange(side, dtype=torch.float32, device=corr.device)
    dy2 = (coords[None, None, :] - center_y[..., None]).pow(2)  # (B, N, side) over rows
    dx2 = (coords[None, None, :] - center_x[..., None]).pow(2)  # (B, N, side) over columns
    kernel = torch.exp(-(dy2[..., :, None] + dx2[..., None, :]) / (2 * sigma**2))
    return corr * kernel.flatten(-2)


def id_query_positions(
    id_queries: Tensor,
    pixels: Tensor,
    pixel_pos: Tensor,
    side: int,
    temperature: Tensor,
    sigma: float = 10.0,
) -> Tensor:
    """Positional embedding of each ID query: where in the target its object most likely is.

    Cosine correlation of the (fused) ID queries with the (fused) target pixels, Gaussian-filtered around
    the argmax, softmax with the learned ``temperature`` over positions, then the expected sine encoding.

    Parameters
    ----------
    id_queries : Tensor
        (B, N, C) fused ID tokens.
    pixels : Tensor
        (B, HW, C) fused target pixel tokens.
    pixel_pos : Tensor
        (HW, C) sine position encoding of the target grid.
    side : int
        Side of the square target grid.
    temperature : Tensor
        Learned 0-d softmax temperature (``transformer_decoder.temp``).
    """
    corr = torch.einsum(
        "bnc,bpc->bnp", F.normalize(id_queries, dim=-1), F.normalize(pixels, dim=-1)
    )
    weights = torch.softmax(gaussian_filter_correlation(corr, side, sigma) * temperature, dim=-1)
    positions = torch.einsum("bnp,pc->bnc", weights, pixel_pos.to(weights.dtype))
    return positions.to(id_queries.dtype)

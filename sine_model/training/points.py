"""Point sampling on mask logits: bilinear reads at normalised coordinates and PointRend sampling.

Coordinates are ``(x, y)`` pairs in ``[0, 1]`` over the whole mask extent, read with
``grid_sample(..., align_corners=False)``: a point maps to the same place on a prediction grid and on a
target mask of any other resolution, as long as both cover the same (padded, square) image. The mask
losses therefore never resize masks.

Deviation from the official ``point_sample`` (which pads with zeros): reads use
``padding_mode="border"``. Uniform points within half a pixel of the image edge would otherwise blend
both the logit and the target with a zero fringe, pulling the logits of objects that touch the image
border towards 0 (a point with target 0.5 is best fitted by logit 0). Inside the image both modes agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["point_sample", "uniform_points", "uncertain_points"]


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Read ``inputs`` bilinearly at normalised points.

    Parameters
    ----------
    inputs : Tensor
        (N, C, H, W) or (N, H, W) float maps.
    coords : Tensor
        (N, P, 2) points, ``(x, y)`` in ``[0, 1]``; ``(0, 0)`` is the top-left corner of the top-left
        pixel and ``(1, 1)`` the bottom-right corner of the bottom-right pixel (``align_corners=False``).
        Points in the outer half-pixel fringe (or outside) read the nearest edge value.

    Returns
    -------
    Tensor
        (N, C, P) for 4-D ``inputs``, (N, P) for 3-D ``inputs``.
    """
    if inputs.dim() not in (3, 4):
        raise ValueError(f"inputs must be (N, C, H, W) or (N, H, W), got shape {tuple(inputs.shape)}")
    if coords.dim() != 3 or coords.shape[-1] != 2 or coords.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"coords must be (N, P, 2) with N = {inputs.shape[0]}, got shape {tuple(coords.shape)}"
        )
    squeeze = inputs.dim() == 3
    maps = inputs[:, None] if squeeze else inputs
    grid = (2.0 * coords.to(maps.dtype) - 1.0)[:, :, None]  # (N, P, 1, 2) in [-1, 1]
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out[..., 0]  # (N, C, P)
    return out[:, 0] if squeeze else out


def uniform_points(
    num_masks: int,
    num_points: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Uniformly random points, (num_masks, num_points, 2) in ``[0, 1)``.

    ``generator`` must live on ``device`` (CPU by default).
    """
    return torch.rand(num_masks, num_points, 2, generator=generator, device=device, dtype=dtype)


def uncertain_points(
    logits: Tensor,
    num_points: int = 12544,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """PointRend importance sampling: most points where the mask logit is close to 0.

    Draws ``int(oversample_ratio · num_points)`` uniform candidates per mask, keeps the
    ``int(importance_ratio · num_points)`` most uncertain ones (uncertainty = −|logit|, read by
    :func:`point_sample`) and fills the rest with fresh uniform points. No gradient flows through the
    choice of points.

    Parameters
    ----------
    logits : Tensor
        (N, H, W) or (N, 1, H, W) mask logits.
    num_points : int
        Points per mask (official: 12,544 = 112²).
    oversample_ratio : float
        Candidates per returned point, ≥ 1 (official: 3).
    importance_ratio : float
        Fraction of the points chosen by uncertainty, in [0, 1] (official: 0.75).
    generator : torch.Generator, optional
        Random source, on the device of ``logits``.

    Returns
    -------
    Tensor
        (N, num_points, 2) points, ``(x, y)`` in ``[0, 1]``.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_ratio <= 1:
        raise ValueError(f"importance_ratio must be in [0, 1], got {importance_ratio}")
    if logits.dim() == 4:
        if logits.shape[1] != 1:
            raise ValueError(f"logits must have one channel, got shape {tuple(logits.shape)}")
        logits = logits[:, 0]
    if logits.dim() != 3:
        raise ValueError(f"logits must be (N, H, W) or (N, 1, H, W), got shape {tuple(logits.shape)}")
    num_masks, device = logits.shape[0], logits.device
    num_candidates = int(num_points * oversample_ratio)
    num_important = int(importance_ratio * num_points)
    with torch.no_grad():
        candidates = uniform_points(num_masks, num_candidates, generator=generator, device=device)
        uncertainty = -point_sample(logits.detach().float(), candidates).abs()  # (N, candidates)
        top = uncertainty.topk(num_important, dim=1).indices
        chosen = torch.gather(candidates, 1, top[..., None].expand(-1, -1, 2))
        extra = uniform_points(num_masks, num_points - num_important, generator=generator, device=device)
        return torch.cat([chosen, extra], dim=1)

"""Bilinear upsampling of mask logits to the padded input size, computed only over a window of the output.

Mask logits live on a ``g × g`` grid and are upsampled bilinearly (``align_corners=False``) to ``P × P``
(P / g is 3.5 for the models here: P = 224 or 896, g = 4·P/14); most callers then keep only part of the
result (the valid, non-padding region; a tile's core). Each output pixel reads the input at
``(i + 0.5)·g/P − 0.5``; cropping the input at a cell ``a`` whose output offset ``a·P/g`` is an integer
(``a`` a multiple of the denominator of P/g) and keeping one cell of margin gives the same source
coordinates, so :func:`upsample_window` upsamples only that window (equal up to float rounding of the
coordinates, ~1e-6).
"""

from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

__all__ = ["upsample_window"]


def upsample_window(masks: torch.Tensor, pad: int, rows: slice, cols: slice) -> torch.Tensor:
    """``interpolate(masks[None], size=(pad, pad), mode="bilinear")[:, :, rows, cols]`` on the window only.

    Parameters
    ----------
    masks : torch.Tensor
        ``(Q, g, g)`` float32 mask logits.
    pad : int
        Side P of the upsampled square.
    rows, cols : slice
        Output rows and columns with explicit start and stop (step 1), inside ``[0, P)``.

    Returns
    -------
    torch.Tensor
        ``(1, Q, rows, cols)`` float32.
    """
    x = masks.float().unsqueeze(0)
    grid_h, grid_w = x.shape[-2:]
    if grid_h != grid_w:
        whole = F.interpolate(x, size=(pad, pad), mode="bilinear", align_corners=False)
        return whole[:, :, rows, cols]
    ratio = Fraction(pad, grid_h)
    (y0, y1), (x0, x1) = _window(rows, ratio, grid_h), _window(cols, ratio, grid_w)
    if (y0, y1, x0, x1) == (0, grid_h, 0, grid_w):  # the whole grid: the plain call
        whole = F.interpolate(x, size=(pad, pad), mode="bilinear", align_corners=False)
        return whole[:, :, rows, cols]
    # scale_factor (not size): the window keeps the whole grid's source coordinates
    out = F.interpolate(x[..., y0:y1, x0:x1], scale_factor=float(ratio), mode="bilinear", align_corners=False)
    dy, dx = int(y0 * ratio), int(x0 * ratio)
    return out[:, :, rows.start - dy : rows.stop - dy, cols.start - dx : cols.stop - dx]


def _window(span: slice, ratio: Fraction, size: int) -> tuple[int, int]:
    """Input cells ``[lo, hi)`` whose upsampling covers output ``span``: one cell of margin each side,
    ``lo`` a multiple of the denominator of ``ratio`` (an integer output offset), clipped to the grid."""
    lo = max(0, int(span.start / ratio) - 1)
    lo -= lo % ratio.denominator
    hi = min(size, -int(-span.stop // ratio) + 1)
    return lo, hi

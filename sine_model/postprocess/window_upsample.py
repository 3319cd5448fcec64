"""Bilinear upsampling of mask logits to the padded input size, computed only over a window of the output.

Mask logits live on a ``g × g`` grid and are upsampled bilinearly (``align_corners=False``) to ``P × P``
(P / g is 3.5 for the models here: P = 224 or 896, g = 4·P/14); most callers then keep only part of the
result (the valid, non-padding region; a tile's core). Each output pixel reads the input at
``(i + 0.5)·g/P − 0.5``; cropping the input at a cell ``a`` whose output offset ``a·P/g`` is an integer
(``a`` a multiple of the denominator of P/g) and keeping one cell of margin gives the same source
coordinates, so :func:`upsample_window` upsamples only that window (equal up to float rounding of the
coordinates, ~1e-6).

The upsampling runs in the channels-last layout (queries innermost): torch's CPU bilinear kernel is
about 2.5× faster there for a chunk of 16 masks than in the planar layout, with the same interpolation
(the two kernels differ by float rounding, ~1 ulp), and the query-weighted sums of the semantic answer
(:func:`sigmoid_weighted_sum`) read that layout as one matrix product (issue 22).

Large windows are upsampled in bands of :data:`BAND_ROWS` output rows (:func:`upsample_bands`): a band
of 16 masks stays a few MB, so the sigmoid and the sums read it from cache and the memory allocator
reuses the same blocks instead of mapping fresh pages for every 23-MB chunk (at P = 896 those page
faults alone cost up to a third of the semantic answer's time, depending on the allocator's state).
Every caller cuts a window into the same bands, so a mask's values do not depend on the caller.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction

import torch
import torch.nn.functional as F

__all__ = [
    "BAND_ROWS",
    "CHANNEL_BLOCK",
    "resize_channels_last",
    "sigmoid_weighted_sum",
    "upsample_bands",
    "upsample_window",
    "upsample_window_banded",
    "weighted_sigmoid_window",
]

#: Output rows per band of :func:`upsample_bands` (32 mask cells at P / g = 3.5; ~5 MB for 16 masks
#: 700 columns wide).
BAND_ROWS = 112

#: Channels per upsampling call are padded to a multiple of this (16 float32 = one AVX-512 vector,
#: two AVX2 vectors), see :func:`resize_channels_last`.
CHANNEL_BLOCK = 16


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
        ``(1, Q, rows, cols)`` float32, in the channels-last memory layout (a view of it).
    """
    x = masks.float().unsqueeze(0)
    grid_h, grid_w = x.shape[-2:]
    if grid_h != grid_w:
        return resize_channels_last(x, size=(pad, pad))[:, :, rows, cols]
    ratio = Fraction(pad, grid_h)
    (y0, y1), (x0, x1) = _window(rows, ratio, grid_h), _window(cols, ratio, grid_w)
    if (y0, y1, x0, x1) == (0, grid_h, 0, grid_w):  # the whole grid: the plain call
        return resize_channels_last(x, size=(pad, pad))[:, :, rows, cols]
    # scale_factor (not size): the window keeps the whole grid's source coordinates
    out = resize_channels_last(x[..., y0:y1, x0:x1], scale_factor=float(ratio))
    dy, dx = int(y0 * ratio), int(x0 * ratio)
    return out[:, :, rows.start - dy : rows.stop - dy, cols.start - dx : cols.stop - dx]


def resize_channels_last(x: torch.Tensor, **size: object) -> torch.Tensor:
    """Bilinear ``F.interpolate`` (``align_corners=False``; ``size=`` or ``scale_factor=``) of
    (1, Q, h, w) in the channels-last layout, Q padded with zero maps
    to a multiple of :data:`CHANNEL_BLOCK`; returns the first Q channels (a view).

    The kernel runs whole SIMD vectors of channels and a scalar loop for the rest, which round
    differently (~1 ulp); with every channel in a whole vector a mask's values do not depend on which
    other masks share its call (the joint and the separate answers stay equal).
    """
    num = x.shape[1]
    padded = x.new_zeros((1, -(-num // CHANNEL_BLOCK) * CHANNEL_BLOCK, *x.shape[2:]))
    padded = padded.contiguous(memory_format=torch.channels_last)
    padded[:, :num] = x
    out = F.interpolate(padded, mode="bilinear", align_corners=False, **size)
    return out[:, :num]


def sigmoid_weighted_sum(acc: torch.Tensor, weights: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``acc += einsum("qc,qhw->chw", weights, logits.sigmoid())`` as one matrix product; returns ``acc``.

    Parameters
    ----------
    acc : torch.Tensor
        ``(C, h, w)`` float32, contiguous; updated in place.
    weights : torch.Tensor
        ``(Q, C)`` float32 (class probabilities of Q queries).
    logits : torch.Tensor
        ``(Q, h, w)`` mask logits in any layout; the channels-last one of :func:`upsample_window`
        (queries innermost) needs no copy besides the sigmoid's output.
    """
    num_queries, height, width = logits.shape
    probs = logits.permute(1, 2, 0).sigmoid()  # (h, w, Q); dense in the input's stride order
    probs = probs.reshape(height * width, num_queries)
    acc.view(acc.shape[0], height * width).addmm_(weights.T.to(probs.dtype), probs.T)
    return acc


def upsample_bands(masks: torch.Tensor, pad: int, rows: slice, cols: slice,
                   band_rows: int = BAND_ROWS) -> Iterator[tuple[int, torch.Tensor]]:
    """:func:`upsample_window` over consecutive bands of ``rows``: yields (first row of the band relative
    to ``rows.start``, its ``(1, Q, band, cols)`` logits); one band when the grid is not square."""
    if masks.shape[-2] != masks.shape[-1]:
        yield 0, upsample_window(masks, pad, rows, cols)
        return
    for start in range(rows.start, rows.stop, band_rows):
        stop = min(start + band_rows, rows.stop)
        yield start - rows.start, upsample_window(masks, pad, slice(start, stop), cols)


def upsample_window_banded(masks: torch.Tensor, pad: int, rows: slice, cols: slice) -> torch.Tensor:
    """The bands of :func:`upsample_bands` joined: ``(1, Q, rows, cols)``, channels-last."""
    out = _channels_last_empty(masks.shape[0], rows, cols, masks.device)
    for offset, band in upsample_bands(masks, pad, rows, cols):
        out[:, :, offset : offset + band.shape[2]] = band
    return out


def weighted_sigmoid_window(
    acc: torch.Tensor, weights: torch.Tensor, masks: torch.Tensor, pad: int, rows: slice, cols: slice,
    keep: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """``acc += einsum("qc,qhw->chw", weights, sigmoid(upsampled masks))`` over a window, band by band.

    Parameters
    ----------
    acc : torch.Tensor
        ``(C, rows, cols)`` float32, contiguous; updated in place.
    weights : torch.Tensor
        ``(Q, C)`` weights of the Q masks.
    masks : torch.Tensor
        ``(Q, g, g)`` mask logits.
    pad, rows, cols
        As for :func:`upsample_window`.
    keep : torch.Tensor, optional
        Indices of masks whose upsampled logits are also wanted.

    Returns
    -------
    torch.Tensor or None
        ``(1, len(keep), rows, cols)`` logits of the ``keep`` masks (equal to
        ``upsample_window_banded(masks[keep], ...)``), or None without ``keep``.
    """
    kept = None
    if keep is not None:
        kept = _channels_last_empty(len(keep), rows, cols, masks.device)
    whole = acc.shape[0] == 1  # one class: a band of the map is a contiguous block of it
    for offset, band in upsample_bands(masks, pad, rows, cols):
        height = band.shape[2]
        if whole:
            sigmoid_weighted_sum(acc[:, offset : offset + height], weights, band[0])
        else:
            acc[:, offset : offset + height] += sigmoid_weighted_sum(
                acc.new_zeros((acc.shape[0], height, acc.shape[2])), weights, band[0])
        if kept is not None:
            kept[:, :, offset : offset + height] = band[:, keep]
    return kept


def _channels_last_empty(num: int, rows: slice, cols: slice, device: torch.device) -> torch.Tensor:
    return torch.empty((1, num, rows.stop - rows.start, cols.stop - cols.start), dtype=torch.float32,
                       device=device, memory_format=torch.channels_last)


def _window(span: slice, ratio: Fraction, size: int) -> tuple[int, int]:
    """Input cells ``[lo, hi)`` whose upsampling covers output ``span``: one cell of margin each side,
    ``lo`` a multiple of the denominator of ``ratio`` (an integer output offset), clipped to the grid."""
    lo = max(0, int(span.start / ratio) - 1)
    lo -= lo % ratio.denominator
    hi = min(size, -int(-span.stop // ratio) + 1)
    return lo, hi

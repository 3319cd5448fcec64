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
(:func:`weighted_sigmoid_window`) read that layout as one matrix product (issue 22).

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
    out, (dy, dx) = _upsample_window_uncropped(masks, pad, rows, cols)
    return out[:, : masks.shape[0], dy : dy + rows.stop - rows.start, dx : dx + cols.stop - cols.start]


def _upsample_window_uncropped(masks: torch.Tensor, pad: int, rows: slice, cols: slice
                               ) -> tuple[torch.Tensor, tuple[int, int]]:
    """The upsampling of :func:`upsample_window` before its crop: the contiguous channels-last
    ``(1, Q', R, C)`` output (Q' ≥ Q: the zero-padded channels of :func:`resize_channels_last`) and the
    offset of the requested window in it."""
    x = masks.float().unsqueeze(0)
    grid_h, grid_w = x.shape[-2:]
    if grid_h != grid_w:
        return _resize_padded(x, size=(pad, pad)), (rows.start, cols.start)
    ratio = Fraction(pad, grid_h)
    (y0, y1), (x0, x1) = _window(rows, ratio, grid_h), _window(cols, ratio, grid_w)
    if (y0, y1, x0, x1) == (0, grid_h, 0, grid_w):  # the whole grid: the plain call
        return _resize_padded(x, size=(pad, pad)), (rows.start, cols.start)
    # scale_factor (not size): the window keeps the whole grid's source coordinates
    out = _resize_padded(x[..., y0:y1, x0:x1], scale_factor=float(ratio))
    return out, (rows.start - int(y0 * ratio), cols.start - int(x0 * ratio))


def resize_channels_last(x: torch.Tensor, **size: object) -> torch.Tensor:
    """Bilinear ``F.interpolate`` (``align_corners=False``; ``size=`` or ``scale_factor=``) of
    (1, Q, h, w) in the channels-last layout, Q padded with zero maps
    to a multiple of :data:`CHANNEL_BLOCK`; returns the first Q channels (a view).

    The kernel runs whole SIMD vectors of channels and a scalar loop for the rest, which round
    differently (~1 ulp); with every channel in a whole vector a mask's values do not depend on which
    other masks share its call (the joint and the separate answers stay equal).
    """
    return _resize_padded(x, **size)[:, : x.shape[1]]


def _resize_padded(x: torch.Tensor, **size: object) -> torch.Tensor:
    """:func:`resize_channels_last` with the padded channels kept (a contiguous channels-last tensor)."""
    num = x.shape[1]
    if num % CHANNEL_BLOCK:
        padded = torch.empty((1, -(-num // CHANNEL_BLOCK) * CHANNEL_BLOCK, *x.shape[2:]), dtype=x.dtype,
                             device=x.device, memory_format=torch.channels_last)
        padded[:, num:] = 0
        padded[:, :num] = x
    else:
        padded = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(padded, mode="bilinear", align_corners=False, **size)


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
    num, classes, width = masks.shape[0], acc.shape[0], cols.stop - cols.start
    weights_t = weights.T.float()
    bands = [(start, min(start + BAND_ROWS, rows.stop)) for start in range(rows.start, rows.stop, BAND_ROWS)]
    if masks.shape[-2] != masks.shape[-1]:
        bands = [(rows.start, rows.stop)]
    for start, stop in bands:
        # the uncropped band: its sigmoid in place, and the product over its contiguous rows
        band, (dy, dx) = _upsample_window_uncropped(masks, pad, slice(start, stop), cols)
        offset, height = start - rows.start, stop - start
        if kept is not None:
            kept[:, :, offset : offset + height] = band[:, keep, dy : dy + height, dx : dx + width]
        _, channels, band_h, band_w = band.shape
        probs = band.sigmoid_().permute(0, 2, 3, 1).reshape(band_h * band_w, channels)[:, :num]
        sums = torch.mm(weights_t, probs.T).view(classes, band_h, band_w)
        acc[:, offset : offset + height] += sums[:, dy : dy + height, dx : dx + width]
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

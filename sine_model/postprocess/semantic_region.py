"""The semantic answer of one region of a tile (its core), without upsampling the rest.

The engine keeps only each tile's core of the semantic map (:mod:`sine_model.engine.stitching`), yet
:func:`~sine_model.postprocess.decode.semantic_inference` upsamples every instance-query mask over the
whole padded tile: with 3 × 3 tiles of a 512² target the cores are 58 % of the tile pixels.
Bilinear upsampling (``align_corners=False``) by an integer factor is the same at every output pixel
whether the input is whole or cropped with one input pixel of margin, so :func:`semantic_region_inference`
upsamples only the input window under the region and returns ``semantic_inference(...)[:, rows, cols]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sine_model.postprocess.decode import _check_instance, semantic_inference
from sine_model.preprocess.transforms import Geometry

__all__ = ["semantic_region_inference"]


def semantic_region_inference(
    ins_logits: torch.Tensor,
    ins_mask_logits: torch.Tensor,
    geometry: Geometry,
    region: tuple[slice, slice],
    chunk: int = 16,
) -> torch.Tensor:
    """``semantic_inference(ins_logits, ins_mask_logits, geometry, chunk)[:, rows, cols]``, region only.

    Parameters
    ----------
    ins_logits, ins_mask_logits, geometry, chunk
        As for :func:`~sine_model.postprocess.decode.semantic_inference`.
    region : (slice, slice)
        Rows and columns of the original-resolution map (steps of 1).

    Returns
    -------
    torch.Tensor
        ``(M, rows, cols)`` float32. Only the region is upsampled when the original size is the valid
        size (scale 1) and the padded side is an integer multiple of the mask grid; otherwise the whole
        map is computed and cropped.
    """
    _check_instance(ins_logits, ins_mask_logits)
    rows, cols = (range(*s.indices(n)) for s, n in zip(region, geometry.original_hw, strict=True))
    grid_h, grid_w = ins_mask_logits.shape[-2:]
    factor = geometry.pad // grid_h
    exact = (tuple(geometry.valid_hw) == tuple(geometry.original_hw) and grid_h == grid_w
             and factor * grid_h == geometry.pad and rows.step == 1 and cols.step == 1
             and len(rows) > 0 and len(cols) > 0 and ins_logits.shape[1] > 1)
    if not exact:
        return semantic_inference(ins_logits, ins_mask_logits, geometry, chunk)[:, region[0], region[1]]
    (y0, y1), (x0, x1) = _window(rows, factor, grid_h), _window(cols, factor, grid_w)
    probs = ins_logits.float().softmax(-1)[:, :-1]
    acc = torch.zeros((probs.shape[1], len(rows), len(cols)), dtype=torch.float32,
                      device=ins_mask_logits.device)
    out_rows = slice(rows.start - y0 * factor, rows.stop - y0 * factor)
    out_cols = slice(cols.start - x0 * factor, cols.stop - x0 * factor)
    step = max(int(chunk), 1)
    for start in range(0, ins_logits.shape[0], step):
        window = ins_mask_logits[start : start + step, y0:y1, x0:x1].float().unsqueeze(0)
        # scale_factor (not size): the same source coordinates as upsampling the whole grid to P
        masks = F.interpolate(window, scale_factor=factor, mode="bilinear", align_corners=False)
        acc += torch.einsum("qc,qhw->chw", probs[start : start + step],
                            masks[0, :, out_rows, out_cols].sigmoid_())
    return acc


def _window(span: range, factor: int, size: int) -> tuple[int, int]:
    """Input cells whose upsampling covers output ``span`` (one cell of margin, clipped to the grid)."""
    return max(0, span.start // factor - 1), min(size, -(-span.stop // factor) + 1)

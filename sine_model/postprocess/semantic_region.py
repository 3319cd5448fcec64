"""The semantic answer of one region of a tile (its core), without upsampling the rest.

The engine keeps only each tile's core of the semantic map (:mod:`sine_model.engine.stitching`), yet
:func:`~sine_model.postprocess.decode.semantic_inference` upsamples every instance-query mask over the
whole padded tile: with 3 × 3 tiles of a 512² target the cores are 58 % of the tile pixels.
:func:`semantic_region_inference` upsamples only the mask cells under the region
(:func:`~sine_model.postprocess.window_upsample.upsample_window`) and returns
``semantic_inference(...)[:, rows, cols]`` (equal up to float rounding, ~1e-6).
"""

from __future__ import annotations

import torch

from sine_model.postprocess.decode import _check_instance, semantic_inference
from sine_model.postprocess.window_upsample import weighted_sigmoid_window
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
        size (scale 1); otherwise the whole map is computed and cropped.
    """
    _check_instance(ins_logits, ins_mask_logits)
    rows, cols = (range(*s.indices(n)) for s, n in zip(region, geometry.original_hw, strict=True))
    exact = (tuple(geometry.valid_hw) == tuple(geometry.original_hw) and rows.step == 1 and cols.step == 1
             and len(rows) > 0 and len(cols) > 0 and ins_logits.shape[1] > 1)
    if not exact:
        return semantic_inference(ins_logits, ins_mask_logits, geometry, chunk)[:, region[0], region[1]]
    probs = ins_logits.float().softmax(-1)[:, :-1]
    acc = torch.zeros((probs.shape[1], len(rows), len(cols)), dtype=torch.float32,
                      device=ins_mask_logits.device)
    window = slice(rows.start, rows.stop), slice(cols.start, cols.stop)
    step = max(int(chunk), 1)
    for start in range(0, ins_logits.shape[0], step):
        weighted_sigmoid_window(acc, probs[start : start + step], ins_mask_logits[start : start + step],
                                geometry.pad, *window)
    return acc

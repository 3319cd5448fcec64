"""Resource guards: refuse a run that cannot fit before it starts, with the number and a remedy.

A run that does not fit is otherwise killed by the operating system (no message, nothing kept) or ends
in a ``MemoryError`` traceback. Two checks, both from sizes alone (no pixel is read):

* :func:`check_scale`: the resize factor is a positive finite number and does not blow one original
  pixel up past a model patch (``--scale 1e9`` on a 96 × 96 image would otherwise plan 9,216 tiles of
  one pixel each);
* :func:`check_target_fits`: the memory one target needs — its tiles as model inputs, their outputs,
  the stitched maps, the feature cache and the model — against the memory the system has free now;
* :func:`automatic_scale_cap`: the largest scale chosen automatically from the reference objects' size
  (:mod:`sine_model.engine.object_scale`) may take, so a reference of tiny objects is not blown up
  past what the references' tiles leave of memory.

The estimate is deliberately coarse (upper bounds of the arrays the engine holds at once); it is for
refusing runs that are far out of reach, not for packing memory tightly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from sine_model.engine.tiling import axis_spans
from sine_model.errors import PropagationError

__all__ = ["MemoryEstimate", "automatic_scale_cap", "available_bytes", "check_propagator_target",
           "check_scale", "check_target_fits", "estimate_target_bytes", "refiner_bytes"]

_FLOAT = 4  # bytes of a float32
#: Fraction of the free memory a run may plan to use (the rest is left to the system and other programs).
USABLE_FRACTION = 0.8


def check_scale(scale: float, pad: int, patch: int) -> float:
    """The resize factor as a float, refused when it is not positive and finite or is absurdly large.

    Parameters
    ----------
    scale : float
        Resize factor applied before tiling.
    pad, patch : int
        Model input side and patch size (pixels).

    Raises
    ------
    PropagationError
        For 0, a negative number, NaN or inf, or a factor above ``pad / patch`` (one original pixel
        would cover more than a patch: the tiles would each see less than a patch of the image).
    """
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise PropagationError(f"scale (CLI: --scale) must be a number, got {scale!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise PropagationError(f"scale (CLI: --scale) must be a positive number, got {scale!r}; 1 keeps "
                               "the native pixel size, 0.5 halves it")
    limit = pad / patch
    if value > limit:
        raise PropagationError(
            f"scale (CLI: --scale) {value:g} is too large: it would enlarge each pixel beyond a model patch "
            f"({patch} px) and cut every image into tiles of under {patch} pixels. Use a scale of at most "
            f"{limit:g} (1 = native pixels)")
    return value


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one target needs, by part; ``total`` is their sum."""

    tiles: int
    outputs: int
    cache: int
    model: int

    @property
    def total(self) -> int:
        return self.tiles + self.outputs + self.cache + self.model


def estimate_target_bytes(height: int, width: int, n_tiles: int, pad: int, n_maps: int, n_modes: int,
                          cache_bytes: int = 0, model_bytes: int = 0) -> MemoryEstimate:
    """Upper bound of the memory processing one ``height × width`` target needs.

    Parameters
    ----------
    height, width : int
        The target's size in pixels.
    n_tiles : int
        Tiles planned for it.
    pad : int
        Model input side.
    n_maps : int
        Maps each tile's output holds (semantic classes plus instance or ID proposals).
    n_modes : int
        Modes answered (each a stitched map of the target's size).
    cache_bytes, model_bytes : int
        The feature cache's budget and the model's weights.
    """
    tiles = n_tiles * 3 * pad * pad * _FLOAT  # every tile as a model input, made before the first call
    grid = (pad // 4) ** 2  # mask logits live on a 4g × 4g grid (about pad / 4 a side)
    per_tile = max(1, n_maps) * grid * _FLOAT + 2 * pad * pad * _FLOAT
    stitched = height * width * (max(1, n_maps) * _FLOAT + n_modes * 16 + 3 * _FLOAT)
    return MemoryEstimate(tiles=tiles, outputs=n_tiles * per_tile + stitched, cache=max(0, cache_bytes),
                          model=max(0, model_bytes))


def refiner_bytes(refiner: Any, height: int, width: int) -> int:
    """Upper bound of the memory the refiner's answer for one ``height × width`` target needs.

    Its features are made strip by strip (:meth:`~sine_model.postprocess.pixel_refiner.PixelRefiner.strips`):
    a strip's filter-bank features, their pieces and the forest's float64 sums, then per pixel of the
    whole target its class probabilities and the maps the instances are made from. About twice the peak
    measured for one ``refine`` and its instances (116 MB for 512 × 512, 592 MB for 1040 × 1392 pixels).
    """
    from sine_model.postprocess.pixel_refiner import STRIP_MARGIN, STRIP_PIXELS

    strip_rows = max(16, STRIP_PIXELS // max(1, width) // 16 * 16)
    strip = min(height, strip_rows + 2 * STRIP_MARGIN) * width
    outputs = refiner.num_outputs
    per_strip_pixel = 3 * refiner.num_inputs * _FLOAT + 5 * outputs * 8
    per_pixel = 3 * outputs * _FLOAT + 100  # probabilities, class maps, labels, seeds, watershed
    return strip * per_strip_pixel + height * width * per_pixel


def available_bytes() -> int | None:
    """Memory the system has free now (``MemAvailable`` on Linux, else physical pages); None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_target_fits(index: int, estimate: MemoryEstimate, free: int | None = None) -> None:
    """Refuse target ``index`` when ``estimate`` exceeds the usable free memory, naming both and a remedy.

    Raises
    ------
    PropagationError
        With the estimate by part, the free memory and what to change.
    """
    free = available_bytes() if free is None else free
    if free is None or estimate.total <= USABLE_FRACTION * free:
        return
    gib = 1024**3
    raise PropagationError(
        f"target {index} needs about {estimate.total / gib:.1f} GiB (tiles {estimate.tiles / gib:.1f}, "
        f"outputs {estimate.outputs / gib:.1f}, feature cache {estimate.cache / gib:.1f}, model "
        f"{estimate.model / gib:.1f}) but {free / gib:.1f} GiB are free: lower the scale (CLI: --scale), "
        "split the image into smaller pieces, give the feature cache less (Propagator cache_bytes), or "
        "close other programs")


def check_propagator_target(propagator: Any, index: int, height: int, width: int, n_tiles: int,
                            n_modes: int) -> None:
    """:func:`check_target_fits` for target ``index`` of a :class:`~sine_model.engine.propagator.Propagator`.

    The one call of the guard: the engine makes it for every target before its first model call.
    """
    n_maps = propagator.instance_topk + len(propagator.semantic_classes())
    estimate = estimate_target_bytes(height, width, n_tiles, propagator.pad, n_maps, n_modes,
                                     propagator.cache.max_bytes, propagator.model_bytes)
    check_target_fits(index, estimate)


#: Share of the largest scale :func:`check_scale` accepts that an automatic scale may use (half: tiles at
#: least two patches wide, and a quarter of the tiles of the limit).
AUTOMATIC_SCALE_SHARE = 0.5


def automatic_scale_cap(pad: int, patch: int, overlap: int, shapes: list[tuple[int, int]], n_maps: int,
                        cache_bytes: int = 0, model_bytes: int = 0, free: int | None = None) -> float:
    """The largest scale an automatic choice may take for references of ``shapes``.

    :data:`AUTOMATIC_SCALE_SHARE` of :func:`check_scale`'s limit, lowered (by steps of 0.8, not below 1)
    until the tiles of all references, encoded at once by ``set_references``, fit the usable free memory
    by :func:`estimate_target_bytes`.

    Parameters
    ----------
    pad, patch, overlap : int
        Model input side, patch size and tile overlap (model-input pixels).
    shapes : list of (int, int)
        Height and width of each reference image.
    n_maps : int
        Maps each tile's output holds.
    cache_bytes, model_bytes : int
        The feature cache's budget and the model's weights.
    free : int, optional
        Free memory in bytes (default: :func:`available_bytes`).
    """
    cap = AUTOMATIC_SCALE_SHARE * pad / patch
    free = available_bytes() if free is None else free
    if free is None or not shapes:
        return cap
    height, width = max(shapes, key=lambda hw: hw[0] * hw[1])
    while cap > 1:
        extent = max(1, int(pad / cap))
        step_overlap = min(int(overlap / cap), extent - 1)
        n_tiles = sum(len(axis_spans(h, extent, step_overlap)) * len(axis_spans(w, extent, step_overlap))
                      for h, w in shapes)
        estimate = estimate_target_bytes(height, width, n_tiles, pad, n_maps, 3, cache_bytes, model_bytes)
        if estimate.total <= USABLE_FRACTION * free:
            break
        cap = max(1.0, cap * 0.8)
    return cap

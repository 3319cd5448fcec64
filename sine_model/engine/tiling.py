"""Overlapping tiles for images larger than the model input, and the regions each tile owns.

Tiles are laid out on the original pixel grid. Neighbouring tiles overlap; the *cores* (the part of the
image a tile is responsible for) split every overlap in the middle, so cores partition the image
exactly. Stitching keeps, per tile, only what falls in (or is centred in) its core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["AUTO_BATCH_PIXELS", "Tile", "auto_batch_size", "axis_spans", "plan_tiles"]


@dataclass(frozen=True)
class Tile:
    """One tile: its extent ``[y0:y1, x0:x1]`` and its core ``[cy0:cy1, cx0:cx1]`` (image coordinates)."""

    y0: int
    x0: int
    y1: int
    x1: int
    cy0: int
    cx0: int
    cy1: int
    cx1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        """The core as slices into the tile's own array."""
        return (slice(self.cy0 - self.y0, self.cy1 - self.y0),
                slice(self.cx0 - self.x0, self.cx1 - self.x0))

    @property
    def core_slices(self) -> tuple[slice, slice]:
        return slice(self.cy0, self.cy1), slice(self.cx0, self.cx1)

    def owns(self, y: float, x: float) -> bool:
        """Whether image position (y, x) lies in this tile's core."""
        return self.cy0 <= y < self.cy1 and self.cx0 <= x < self.cx1


def axis_spans(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tile spans along one axis: ``(start, stop, core_start, core_stop)`` per tile.

    A length that fits in one tile gives one span. Otherwise the fewest tiles whose overlap is at least
    ``overlap`` are spread evenly from 0 to ``length``.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length ({length}) and tile ({tile}) must be positive")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap ({overlap}) must be in [0, tile size {tile})")
    if length <= tile:
        return [(0, length, 0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    stops = [s + tile for s in starts]
    bounds = [0] + [(stops[i] + starts[i + 1]) // 2 for i in range(count - 1)] + [length]
    return [(starts[i], stops[i], bounds[i], bounds[i + 1]) for i in range(count)]


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """Row-major tiles of at most ``tile`` × ``tile`` covering a ``height`` × ``width`` image."""
    return [
        Tile(y0, x0, y1, x1, cy0, cx0, cy1, cx1)
        for y0, y1, cy0, cy1 in axis_spans(height, tile, overlap)
        for x0, x1, cx0, cx1 in axis_spans(width, tile, overlap)
    ]


#: Model-input pixels per model call when ``batch_size`` is automatic: 20 tiles of 224², 3 of 518², 1 of
#: 896² (batching amortises per-call work; beyond one ViT-L input at 896² it only costs memory).
AUTO_BATCH_PIXELS = 1 << 20


def auto_batch_size(pad: int) -> int:
    """Tiles per model call for input side ``pad`` when ``batch_size`` is automatic."""
    return max(1, AUTO_BATCH_PIXELS // (pad * pad))

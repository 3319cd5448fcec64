"""Label-map hygiene: paint scored masks so the best score wins, and pick a safe integer dtype."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ScoreCanvas", "smallest_label_dtype", "MAX_LABEL"]

MAX_LABEL = 2**32 - 1  # label values must fit uint32 (napari Labels, TIFF tools)


def smallest_label_dtype(max_value: int) -> np.dtype:
    """The smallest unsigned dtype that holds ``max_value`` (uint8, uint16 or uint32)."""
    if max_value < 0:
        raise ValueError(f"label values must be non-negative, got {max_value}")
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label value {max_value} does not fit in uint32 (max {MAX_LABEL})")


@dataclass
class ScoreCanvas:
    """An image-sized canvas where each pixel keeps the value of the highest-scoring mask painted on it.

    Painting is order independent: a pixel changes only when a strictly higher score arrives.
    """

    shape: tuple[int, int]
    labels: np.ndarray = field(init=False)
    scores: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.labels = np.zeros(self.shape, dtype=np.int64)
        self.scores = np.full(self.shape, -np.inf, dtype=np.float32)

    def paint(self, mask: np.ndarray, value: int, score: float, offset: tuple[int, int] = (0, 0)) -> None:
        """Paint ``value`` where ``mask`` (placed at ``offset``) is set and ``score`` beats the canvas."""
        y, x = offset
        height, width = mask.shape
        region = (slice(y, y + height), slice(x, x + width))
        win = mask & (score > self.scores[region])
        self.labels[region][win] = value
        self.scores[region][win] = score

    def visible_fraction(self, mask: np.ndarray, value: int, offset: tuple[int, int] = (0, 0)) -> float:
        """Fraction of ``mask`` that still shows ``value`` after all painting."""
        area = int(mask.sum())
        if area == 0:
            return 0.0
        y, x = offset
        height, width = mask.shape
        shown = self.labels[y : y + height, x : x + width][mask] == value
        return float(shown.sum()) / area

    def finish(self) -> np.ndarray:
        """The label map in the smallest unsigned dtype that fits."""
        top = int(self.labels.max()) if self.labels.size else 0
        return self.labels.astype(smallest_label_dtype(top))

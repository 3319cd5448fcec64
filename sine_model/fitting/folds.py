"""Reference folds: each reference cut in two halves, one predicted from the other.

Everything fitted on the references at run time (calibration, the refiner, cross-fitted adaptation) needs
held-out answers: the model's answer on a half it was not given. These folds are the only held-out data a
one-shot user has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["MIN_HALF_SIDE", "reference_folds"]

#: Halves narrower than this (pixels, across the cut) are not made: the model would see a sliver.
MIN_HALF_SIDE = 16


def reference_folds(pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                    channel_axis: int | None = None,
                    min_side: int = MIN_HALF_SIDE) -> list[tuple[tuple, tuple]]:
    """Both (reference half, held-out half) folds of every reference whose halves both hold objects.

    Each image is cut at the middle across its longer side, or across the other side when one of those
    halves has no objects; objects crossing the cut are split with it. A side shorter than
    ``2 * min_side`` is never cut (the reference is too small to halve that way). ``channel_axis``
    names the channel axis of 3-D images (default: the last).
    """
    folds = []
    for image, labels in pairs:
        spatial = [0, 1]
        if image.ndim == 3:
            channels = image.ndim - 1 if channel_axis is None else channel_axis % image.ndim
            spatial = [a for a in range(3) if a != channels]
        longer = 0 if labels.shape[0] >= labels.shape[1] else 1
        for axis in (longer, 1 - longer):
            if labels.shape[axis] < 2 * min_side:
                continue
            cut = labels.shape[axis] // 2
            halves = []
            for part in (slice(0, cut), slice(cut, None)):
                image_index = [slice(None)] * image.ndim
                label_index = [slice(None)] * 2
                image_index[spatial[axis]], label_index[axis] = part, part
                halves.append((image[tuple(image_index)], labels[tuple(label_index)]))
            if all(half[1].any() for half in halves):
                folds += [(halves[0], halves[1]), (halves[1], halves[0])]
                break
    return folds

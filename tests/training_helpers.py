"""Shared helpers of the training-data tests: label images, pair items and episode checks."""

from __future__ import annotations

import numpy as np
import torch

from sine_model.training.pairs import Episode, PairItem


def block_labels(shape=(60, 80), block=10, first_id=1) -> np.ndarray:
    """Labels made of ``block``-sized squares with distinct ids, row-major from ``first_id``."""
    ys, xs = np.indices(shape)
    return ((ys // block) * (shape[1] // block) + xs // block + first_id).astype(np.int32)


def blob_item(centers, classes, shape=(64, 64), radius=6, seed=0) -> PairItem:
    """Disks at ``centers`` (ids 1..n) with class ``classes[k]`` on a noisy image."""
    labels = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    for k, (cy, cx) in enumerate(centers, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = k
    rng = np.random.default_rng(seed)
    image = (labels > 0) * 0.6 + rng.uniform(0, 0.2, shape)
    return PairItem(image.astype(np.float32), labels, {k + 1: c for k, c in enumerate(classes)})


def check_episode(ep: Episode, pad: int) -> None:
    assert ep.ref_image.shape == ep.target.shape == (1, 3, pad, pad)
    for masks, labels, ids in ((ep.ref_masks, ep.ref_labels, ep.ref_ids), (ep.masks, ep.labels, ep.ids)):
        assert masks.dtype == torch.bool and masks.shape[1:] == (pad, pad)
        assert labels.dtype == ids.dtype == torch.int64
        assert masks.shape[0] == labels.shape[0] == ids.shape[0] >= 1
        assert masks.flatten(1).any(dim=1).all()
        assert len(set(ids.tolist())) == len(ids)
    h, w = ep.valid_hw
    assert not ep.masks[:, h:].any() and not ep.masks[:, :, w:].any()
    assert ep.valid_mask.sum() == h * w
    assert (ep.target[..., h:, :] == 0).all()
    assert set(ep.labels.tolist()) <= set(ep.ref_labels.tolist())

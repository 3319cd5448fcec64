"""Scored masks of one target (:class:`Detections`) and the scoring of (query, label) pairs.

A pair's final score is its class probability times the mean sigmoid of its query's upsampled mask
logits inside the mask (logit > 0), as in the official inference; pairs are stored only when they pass
the score threshold. The ID and instance answers of :mod:`~sine_model.postprocess.decode` and
:func:`~sine_model.postprocess.joint_decode.instance_semantic_inference` feed them chunks of upsampled
masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from sine_model.preprocess.transforms import Geometry

__all__ = ["Detections", "empty_detections", "hopeful_pairs", "score_pair_chunks"]


@dataclass
class Detections:
    """Scored binary masks, sorted by descending score.

    Parameters
    ----------
    masks : torch.Tensor
        ``(n, H, W)`` bool masks at the original resolution.
    scores : torch.Tensor
        ``(n,)`` float32 final scores.
    labels : torch.Tensor
        ``(n,)`` int64 labels (reference id or semantic label).
    query_index : torch.Tensor
        ``(n,)`` int64 index of the query that produced each mask.
    """

    masks: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    query_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def empty_detections(geometry: Geometry, device: torch.device) -> Detections:
    """No detections, with the shapes and dtypes of a target of ``geometry``'s original size."""
    height, width = geometry.original_hw
    return Detections(
        masks=torch.zeros((0, height, width), dtype=torch.bool, device=device),
        scores=torch.zeros((0,), dtype=torch.float32, device=device),
        labels=torch.zeros((0,), dtype=torch.int64, device=device),
        query_index=torch.zeros((0,), dtype=torch.int64, device=device),
    )


def hopeful_pairs(probs: torch.Tensor, query_idx: torch.Tensor, labels: torch.Tensor,
                  score_threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The (probability, query, label) pairs whose class probability can still pass ``score_threshold``."""
    if score_threshold >= 0:
        # final = prob × mask score with mask score in [0, 1]: pairs whose class probability cannot
        # beat the threshold are dropped before their masks are upsampled (same result, less work).
        hopeful = probs > score_threshold
        return probs[hopeful], query_idx[hopeful], labels[hopeful]
    return probs, query_idx, labels


def score_pair_chunks(probs: torch.Tensor, query_idx: torch.Tensor, labels: torch.Tensor,
                      chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], geometry: Geometry,
                      score_threshold: float) -> Detections:
    """Score (query, label) pairs from ``chunks`` of (ascending query indices, their upsampled logits).

    Chunks come in ascending query order and together hold every query of ``query_idx``; pairs are
    gathered by query, in their given order within a query, then stably sorted by descending score.
    """
    device = probs.device
    grouped = torch.sort(query_idx, stable=True).indices  # pairs by query, given order within a query
    kept_scores, kept_labels, kept_q, kept_masks = [], [], [], []
    for qs, upsampled in chunks:
        # contiguous: the upsampling is channels-last, and sums over a strided view would be ordered by
        # how many masks share the chunk (the joint and the separate answers must stay equal)
        logits = upsampled.flatten(1).contiguous()
        binary = logits > 0
        area = binary.sum(1).float()
        inside = torch.where(binary, logits.sigmoid_(), 0.0).sum(1)
        mask_score = inside / (area + 1e-6)
        sel = grouped[torch.isin(query_idx[grouped], qs)]
        local = torch.searchsorted(qs, query_idx[sel])
        final = probs[sel].float() * mask_score[local]
        keep = final > score_threshold
        if bool(keep.any()):
            sel, local = sel[keep], local[keep]
            kept_scores.append(final[keep])
            kept_labels.append(labels[sel])
            kept_q.append(query_idx[sel])
            kept_masks.append(binary[local].view(-1, *geometry.original_hw))
    if not kept_scores:
        return empty_detections(geometry, device)
    scores = torch.cat(kept_scores)
    order = torch.sort(scores, descending=True, stable=True).indices
    return Detections(
        masks=torch.cat(kept_masks)[order].contiguous(),
        scores=scores[order],
        labels=torch.cat(kept_labels)[order].to(torch.int64),
        query_index=torch.cat(kept_q)[order].to(torch.int64),
    )

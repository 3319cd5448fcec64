"""Post-processing of SINE outputs for one target image.

All functions take the raw outputs of ONE target (batch dimension removed)
and the :class:`~sine_model.preprocess.transforms.Geometry` of its prepared image.
Mask logits live on the ``4g x 4g`` mask-feature grid; they are upsampled
bilinearly (``align_corners=False``) to the padded ``P x P`` input, cropped to
the valid region ``[:h_r, :w_r]`` and resized bilinearly to the original
``(H, W)`` (detectron2 ``sem_seg_postprocess`` semantics).

* :func:`id_inference` (official VOS): one mask per reference object.
* :func:`instance_inference` (official FSOD): top-k (query, class) pairs.
* :func:`semantic_inference` (official FSS): unnormalised
  ``sum_q softmax(logits_q)[c] * sigmoid(mask_q)`` per class.

Scores are ``class probability x mean sigmoid inside the binary mask``
(binary = upsampled logit > 0).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sine_model.modes import SEMANTIC_THRESHOLD  # FSS binarises at > 0.7 (tools/eval_fss.py)
from sine_model.postprocess.detections import Detections, empty_detections, hopeful_pairs, score_pair_chunks
from sine_model.postprocess.window_upsample import (
    resize_channels_last,
    upsample_window_banded,
    weighted_sigmoid_window,
)
from sine_model.preprocess.transforms import Geometry

#: VOS keeps every object (``tools/eval_vos.py`` threshold -1e9).
ID_SCORE_THRESHOLD: float = -1e9
#: FSOD config score threshold (``inference_fsod`` config), with top-100.
INSTANCE_SCORE_THRESHOLD: float = 0.0
#: Default ``score_threshold`` of the training-model class.
TRAINING_DEFAULT_THRESHOLD: float = 0.8
#: Number of (query, class) pairs kept before thresholding (all entry points).
DEFAULT_TOPK: int = 100

__all__ = [
    "DEFAULT_TOPK",
    "ID_SCORE_THRESHOLD",
    "INSTANCE_SCORE_THRESHOLD",
    "SEMANTIC_THRESHOLD",
    "TRAINING_DEFAULT_THRESHOLD",
    "Detections",
    "id_inference",
    "instance_inference",
    "semantic_inference",
    "semantic_label_map",
    "upsample_mask_logits",
]


def _check_masks(mask_logits: torch.Tensor, name: str) -> None:
    if not isinstance(mask_logits, torch.Tensor) or mask_logits.ndim != 3:
        shape = getattr(mask_logits, "shape", None)
        raise ValueError(f"{name} must be a (Q, h, w) tensor, got shape {shape}")


def _to_padded_crop(mask_logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Upsample ``(Q, h, w)`` to ``(P, P)`` and crop to ``(Q, h_r, w_r)`` (only the crop is upsampled)."""
    h_r, w_r = geometry.valid_hw
    return upsample_window_banded(mask_logits, geometry.pad, slice(0, h_r), slice(0, w_r))


def _resize_to_original(x: torch.Tensor, geometry: Geometry, masks: bool = True) -> torch.Tensor:
    """Bilinearly resize ``(1, C, h_r, w_r)`` to ``(C, H, W)``.

    ``masks``: C query masks, resized in the channels-last layout so that a mask's values do not depend
    on the other masks of the call (:func:`resize_channels_last`); else (a semantic map) the plain call.
    """
    if tuple(x.shape[-2:]) == tuple(geometry.original_hw):
        # at scale 1 the valid region is the original size: bilinear at the same size copies exactly
        return x[0]
    if masks:
        return resize_channels_last(x, size=tuple(geometry.original_hw))[0]
    return F.interpolate(x, size=tuple(geometry.original_hw), mode="bilinear", align_corners=False)[0]


def upsample_mask_logits(mask_logits: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """Bring mask logits to the original image resolution.

    Parameters
    ----------
    mask_logits : torch.Tensor
        ``(Q, h4, w4)`` mask logits of one target.
    geometry : Geometry
        Geometry of the prepared target image.

    Returns
    -------
    torch.Tensor
        ``(Q, H, W)`` float32 logits: bilinear to ``(P, P)``, crop
        ``[:h_r, :w_r]``, bilinear to ``geometry.original_hw``.
    """
    _check_masks(mask_logits, "mask_logits")
    height, width = geometry.original_hw
    if mask_logits.shape[0] == 0:
        return torch.zeros((0, height, width), dtype=torch.float32, device=mask_logits.device)
    return _resize_to_original(_to_padded_crop(mask_logits, geometry), geometry)


def _score_pairs(
    probs: torch.Tensor,
    query_idx: torch.Tensor,
    labels: torch.Tensor,
    mask_logits: torch.Tensor,
    geometry: Geometry,
    score_threshold: float,
    chunk: int,
) -> Detections:
    """Score selected (query, label) pairs; upsample only the used queries.

    Queries are processed ``chunk`` at a time and only masks of pairs that
    pass ``score_threshold`` are stored (as bool), bounding memory.
    """
    probs, query_idx, labels = hopeful_pairs(probs, query_idx, labels, score_threshold)
    unique_q = torch.unique(query_idx)  # ascending
    step = max(int(chunk), 1)
    chunks = ((qs, upsample_mask_logits(mask_logits[qs], geometry)) for qs in unique_q.split(step))
    return score_pair_chunks(probs, query_idx, labels, chunks, geometry, score_threshold)


def id_inference(
    id_logits: torch.Tensor,
    id_mask_logits: torch.Tensor,
    ref_ids: torch.Tensor,
    geometry: Geometry,
    score_threshold: float = ID_SCORE_THRESHOLD,
    topk: int = DEFAULT_TOPK,
    chunk: int = 16,
) -> Detections:
    """Masks of the ID queries, one per reference object (official VOS).

    Parameters
    ----------
    id_logits : torch.Tensor
        ``(N, 2)`` logits; index 0 = object present.
    id_mask_logits : torch.Tensor
        ``(N, h4, w4)`` mask logits.
    ref_ids : torch.Tensor
        ``(N,)`` int64 reference id of each ID query (used as label).
    geometry : Geometry
        Geometry of the prepared target image.
    score_threshold : float, optional
        Keep detections with final score strictly above this value.
    topk : int, optional
        At most ``min(topk, N)`` queries are considered (by class probability).
    chunk : int, optional
        Number of queries upsampled at once.

    Returns
    -------
    Detections
        Sorted by descending score; ``labels`` are reference ids.
    """
    _check_masks(id_mask_logits, "id_mask_logits")
    if id_logits.ndim != 2 or id_logits.shape[1] != 2:
        raise ValueError(f"id_logits must have shape (N, 2), got {tuple(id_logits.shape)}")
    n = id_logits.shape[0]
    if id_mask_logits.shape[0] != n:
        raise ValueError(
            f"id_logits has {n} queries but id_mask_logits has {id_mask_logits.shape[0]}"
        )
    ref_ids = torch.as_tensor(ref_ids)
    if ref_ids.ndim != 1 or ref_ids.shape[0] != n:
        raise ValueError(f"ref_ids must have shape ({n},), got {tuple(ref_ids.shape)}")
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if n == 0:
        return empty_detections(geometry, id_mask_logits.device)
    probs = id_logits.float().softmax(-1)[:, 0]
    top_p, top_q = probs.topk(min(topk, n))
    labels = ref_ids.to(top_q.device)[top_q]
    return _score_pairs(top_p, top_q, labels, id_mask_logits, geometry, score_threshold, chunk)


def _check_instance(ins_logits: torch.Tensor, ins_mask_logits: torch.Tensor) -> None:
    _check_masks(ins_mask_logits, "ins_mask_logits")
    if ins_logits.ndim != 2 or ins_logits.shape[1] < 1:
        raise ValueError(f"ins_logits must have shape (S, M+1), got {tuple(ins_logits.shape)}")
    if ins_logits.shape[0] != ins_mask_logits.shape[0]:
        raise ValueError(
            f"ins_logits has {ins_logits.shape[0]} queries but ins_mask_logits has "
            f"{ins_mask_logits.shape[0]}"
        )


def instance_inference(
    ins_logits: torch.Tensor,
    ins_mask_logits: torch.Tensor,
    sem_labels: torch.Tensor,
    geometry: Geometry,
    score_threshold: float = INSTANCE_SCORE_THRESHOLD,
    topk: int = DEFAULT_TOPK,
    chunk: int = 16,
) -> Detections:
    """Instance masks from the top-k (query, class) pairs (official FSOD).

    Parameters
    ----------
    ins_logits : torch.Tensor
        ``(S, M+1)`` logits; the last column is the negative class.
    ins_mask_logits : torch.Tensor
        ``(S, h4, w4)`` mask logits.
    sem_labels : torch.Tensor
        ``(M,)`` int64 semantic label of each prototype.
    geometry : Geometry
        Geometry of the prepared target image.
    score_threshold : float, optional
        Keep detections with final score strictly above this value.
    topk : int, optional
        Number of (query, class) pairs considered, ``min(topk, S*M)``.
    chunk : int, optional
        Number of queries upsampled at once. Only queries appearing in the
        top-k are upsampled.

    Returns
    -------
    Detections
        Sorted by descending score; a query may appear once per class.
    """
    _check_instance(ins_logits, ins_mask_logits)
    sem_labels = torch.as_tensor(sem_labels)
    n_queries, m_plus_1 = ins_logits.shape
    m = m_plus_1 - 1
    if sem_labels.ndim != 1 or sem_labels.shape[0] != m:
        raise ValueError(
            f"ins_logits has M+1={m_plus_1} columns, so sem_labels must have M={m} "
            f"entries, got shape {tuple(sem_labels.shape)}"
        )
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    if m == 0 or n_queries == 0:
        return empty_detections(geometry, ins_mask_logits.device)
    probs = ins_logits.float().softmax(-1)[:, :-1].flatten()
    top_p, flat_idx = probs.topk(min(topk, probs.numel()))
    query_idx = flat_idx // m
    labels = sem_labels.to(flat_idx.device)[flat_idx % m]
    return _score_pairs(top_p, query_idx, labels, ins_mask_logits, geometry, score_threshold, chunk)


def semantic_inference(
    ins_logits: torch.Tensor,
    ins_mask_logits: torch.Tensor,
    geometry: Geometry,
    chunk: int = 16,
) -> torch.Tensor:
    """Per-class semantic map (official FSS).

    Parameters
    ----------
    ins_logits : torch.Tensor
        ``(S, M+1)`` logits; the last (negative) column is dropped.
    ins_mask_logits : torch.Tensor
        ``(S, h4, w4)`` mask logits.
    geometry : Geometry
        Geometry of the prepared target image.
    chunk : int, optional
        Number of queries processed at once (bounds memory).

    Returns
    -------
    torch.Tensor
        ``(M, H, W)`` float32 ``sum_q softmax(logits_q)[c] * sigmoid(mask_q)``.
        Not normalised: values can exceed 1 (the 0.7 FSS threshold is
        calibrated to this sum).

    Notes
    -----
    As in the official FSS model, the sigmoid and the sum are taken on the
    ``P x P`` upsampled masks, and the summed map is then cropped and resized
    to ``(H, W)``.
    """
    _check_instance(ins_logits, ins_mask_logits)
    n_queries, m_plus_1 = ins_logits.shape
    m = m_plus_1 - 1
    h_r, w_r = geometry.valid_hw
    device = ins_mask_logits.device
    if m == 0:
        height, width = geometry.original_hw
        return torch.zeros((0, height, width), dtype=torch.float32, device=device)
    probs = ins_logits.float().softmax(-1)[:, :-1]
    acc = torch.zeros((1, m, h_r, w_r), dtype=torch.float32, device=device)
    step = max(int(chunk), 1)
    for start in range(0, n_queries, step):
        weighted_sigmoid_window(acc[0], probs[start : start + step], ins_mask_logits[start : start + step],
                                geometry.pad, slice(0, h_r), slice(0, w_r))
    return _resize_to_original(acc, geometry, masks=False)


def semantic_label_map(
    sem_probs: torch.Tensor | np.ndarray,
    sem_labels: torch.Tensor | np.ndarray,
    threshold: float = SEMANTIC_THRESHOLD,
) -> np.ndarray:
    """Collapse a semantic map into a label image.

    Parameters
    ----------
    sem_probs : torch.Tensor or np.ndarray
        ``(M, H, W)`` output of :func:`semantic_inference`.
    sem_labels : torch.Tensor or np.ndarray
        ``(M,)`` label of each class channel.
    threshold : float, optional
        A pixel gets the label of its arg-max class if that class's value is
        strictly above ``threshold``, else 0 (background). Ties go to the
        first class.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int64 label image.
    """
    probs = torch.as_tensor(sem_probs)
    labels = torch.as_tensor(sem_labels).to(torch.int64)
    if probs.ndim != 3:
        raise ValueError(f"sem_probs must have shape (M, H, W), got {tuple(probs.shape)}")
    if labels.ndim != 1 or labels.shape[0] != probs.shape[0]:
        raise ValueError(
            f"sem_probs has {probs.shape[0]} classes but sem_labels has shape {tuple(labels.shape)}"
        )
    if probs.shape[0] == 0:
        return np.zeros(tuple(probs.shape[1:]), dtype=np.int64)
    best, arg = probs.float().max(0)
    out = torch.where(best > threshold, labels.to(arg.device)[arg], torch.zeros_like(arg))
    return out.cpu().numpy().astype(np.int64)

"""Instance and semantic answers of one target from one upsampling of the instance-query masks.

:func:`~sine_model.postprocess.decode.instance_inference` (official FSOD) and
:func:`~sine_model.postprocess.decode.semantic_inference` (official FSS) both upsample instance-query masks
to the padded input size — the larger part of their cost at P = 896. Asked for together, as the engine
does for a model whose instances come from its queries, :func:`instance_semantic_inference` upsamples
each mask once and gives both answers, equal to those of the two functions.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from sine_model.postprocess.decode import (
    DEFAULT_TOPK,
    INSTANCE_SCORE_THRESHOLD,
    _check_instance,
    _resize_to_original,
    instance_inference,
    semantic_inference,
)
from sine_model.postprocess.detections import Detections, hopeful_pairs, score_pair_chunks
from sine_model.postprocess.window_upsample import weighted_sigmoid_window
from sine_model.preprocess.transforms import Geometry

__all__ = ["instance_semantic_inference"]


def instance_semantic_inference(
    ins_logits: torch.Tensor,
    ins_mask_logits: torch.Tensor,
    sem_labels: torch.Tensor,
    geometry: Geometry,
    score_threshold: float = INSTANCE_SCORE_THRESHOLD,
    topk: int = DEFAULT_TOPK,
    chunk: int = 16,
) -> tuple[Detections, torch.Tensor]:
    """:func:`instance_inference` and :func:`semantic_inference` of one target, each mask upsampled once.

    Both answers read the same instance-query masks at the padded size; asked for together (the
    official model in all modes) they share that upsampling, the larger part of their cost. The
    results equal those of the two functions (same operations, same order).

    Returns
    -------
    (Detections, torch.Tensor)
        What :func:`instance_inference` and :func:`semantic_inference` return.
    """
    _check_instance(ins_logits, ins_mask_logits)
    sem_labels = torch.as_tensor(sem_labels)
    n_queries, m_plus_1 = ins_logits.shape
    m = m_plus_1 - 1
    if sem_labels.ndim != 1 or sem_labels.shape[0] != m or topk < 1 or m == 0 or n_queries == 0:
        return (instance_inference(ins_logits, ins_mask_logits, sem_labels, geometry, score_threshold, topk,
                                   chunk),
                semantic_inference(ins_logits, ins_mask_logits, geometry, chunk))
    soft = ins_logits.float().softmax(-1)[:, :-1]
    top_p, flat_idx = soft.flatten().topk(min(topk, soft.numel()))
    pair_labels = sem_labels.to(flat_idx.device)[flat_idx % m]
    probs, query_idx, labels = hopeful_pairs(top_p, flat_idx // m, pair_labels, score_threshold)
    wanted = torch.unique(query_idx)
    h_r, w_r = geometry.valid_hw
    acc = torch.zeros((1, m, h_r, w_r), dtype=torch.float32, device=ins_mask_logits.device)
    step = max(int(chunk), 1)

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, n_queries, step):
            qs = wanted[(wanted >= start) & (wanted < start + step)]
            kept = weighted_sigmoid_window(acc[0], soft[start : start + step],
                                           ins_mask_logits[start : start + step], geometry.pad,
                                           slice(0, h_r), slice(0, w_r), keep=qs - start)
            if qs.numel():
                yield qs, _resize_to_original(kept, geometry)

    stream = chunks()
    detections = score_pair_chunks(probs, query_idx, labels, stream, geometry, score_threshold)
    for _ in stream:  # the semantic map needs every query, also those after the last wanted one
        pass
    return detections, _resize_to_original(acc, geometry, masks=False)

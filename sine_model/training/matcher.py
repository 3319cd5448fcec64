"""Query ↔ target assignment: Hungarian matching for instance queries, fixed matching for ID queries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from sine_model.training.points import point_sample, uniform_points

__all__ = ["HungarianMatcher", "match_ids", "class_indices", "pairwise_bce_cost", "pairwise_dice_cost"]


def pairwise_bce_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean sigmoid BCE of every prediction against every target.

    Parameters
    ----------
    logits : Tensor
        (Q, P) mask logits at P points.
    targets : Tensor
        (T, P) target values in [0, 1] at the same points.

    Returns
    -------
    Tensor
        (Q, T) costs: ``mean_p [t·softplus(−x) + (1 − t)·softplus(x)]``.
    """
    num_points = max(logits.shape[1], 1)
    on = F.softplus(-logits)  # BCE where the target is 1
    off = F.softplus(logits)  # BCE where the target is 0
    return (on @ targets.T + off @ (1 - targets).T) / num_points


def pairwise_dice_cost(logits: Tensor, targets: Tensor) -> Tensor:
    """Soft dice loss of every prediction against every target.

    Parameters
    ----------
    logits : Tensor
        (Q, P) mask logits at P points.
    targets : Tensor
        (T, P) target values in [0, 1].

    Returns
    -------
    Tensor
        (Q, T) costs ``1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)`` with ``p = sigmoid(x)``.
    """
    probs = logits.sigmoid()
    overlap = probs @ targets.T
    total = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (2 * overlap + 1) / (total + 1)


def class_indices(labels: Tensor, ref_sem_labels: Tensor) -> Tensor:
    """Map semantic labels to their index among the reference labels (the instance-class targets).

    Parameters
    ----------
    labels : Tensor
        (T,) int64 semantic labels of the target masks.
    ref_sem_labels : Tensor
        (M,) int64 unique reference labels, ascending (the model's ``ref_sem_labels``).

    Returns
    -------
    Tensor
        (T,) int64 indices into ``ref_sem_labels``.

    Raises
    ------
    ValueError
        If a target label does not occur in the reference (the pair sampler must drop such objects).
    """
    labels = labels.reshape(-1).to(ref_sem_labels.device)
    known = torch.isin(labels, ref_sem_labels)
    if not bool(known.all()):
        missing = sorted(set(labels[~known].tolist()))
        raise ValueError(
            f"target labels {missing} are not among the reference labels {ref_sem_labels.tolist()}"
        )
    return torch.searchsorted(ref_sem_labels.contiguous(), labels.contiguous())


def match_ids(ref_ids: Tensor, target_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Fixed matching of ID queries: the query of reference id ``k`` ↔ the target mask with id ``k``.

    Matches by id value. The official code instead zips the common ids in reference order with those in
    target order, which is the same pairing whenever both lists share one relative order; our
    ``ref_ids`` are unique and ascending, so by-value lookup gives the official pairs in every case
    where the official zip is correct, and the right pairs where it is not.

    Parameters
    ----------
    ref_ids : Tensor
        (N,) unique reference ids, one per ID query (the model's ``ref_ids``).
    target_ids : Tensor
        (T,) unique instance ids of the target masks.

    Returns
    -------
    tuple of Tensor
        ``(query_index, target_index)``, int64, in ascending query order. Queries not listed are
        unmatched and get the no-object class.
    """
    ref_ids = ref_ids.reshape(-1)
    target_ids = target_ids.reshape(-1).to(ref_ids.device)
    if torch.unique(target_ids).numel() != target_ids.numel():
        raise ValueError(f"target ids must be unique, got {target_ids.tolist()}")
    if torch.unique(ref_ids).numel() != ref_ids.numel():
        raise ValueError(f"reference ids must be unique, got {ref_ids.tolist()}")
    same = ref_ids[:, None] == target_ids[None, :]  # (N, T), at most one True per row and column
    query_index, target_index = same.nonzero(as_tuple=True)
    return query_index.long(), target_index.long()


class HungarianMatcher:
    """Optimal one-to-one assignment of instance queries to target masks, per image.

    Cost = ``cost_class``·(−p(class)) + ``cost_mask``·BCE + ``cost_dice``·dice, the mask terms on
    ``num_points`` uniformly random points shared by all masks of the image (official: 2, 5, 5 and
    12,544 points). Solved with :func:`scipy.optimize.linear_sum_assignment`, which matches
    min(S, T) pairs.

    Parameters
    ----------
    cost_class, cost_mask, cost_dice : float
        Weights of the three cost terms.
    num_points : int
        Points per mask for the mask costs.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ) -> None:
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("at least one matching cost weight must be non-zero")
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    def __repr__(self) -> str:
        return (
            f"HungarianMatcher(cost_class={self.cost_class}, cost_mask={self.cost_mask}, "
            f"cost_dice={self.cost_dice}, num_points={self.num_points})"
        )

    @torch.no_grad()
    def cost_matrix(
        self,
        ins_logits: Tensor,
        ins_masks: Tensor,
        target_classes: Tensor,
        target_masks: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Matching cost (S, T) of one image.

        Parameters
        ----------
        ins_logits : Tensor
            (S, M+1) class logits of the instance queries.
        ins_masks : Tensor
            (S, h, w) mask logits.
        target_classes : Tensor
            (T,) int64 class indices in [0, M) (see :func:`class_indices`).
        target_masks : Tensor
            (T, H, W) target masks (bool or float), any resolution covering the same extent.
        generator : torch.Generator, optional
            Random source for the points, on the device of ``ins_masks``.
        """
        probs = ins_logits.float().softmax(-1)
        cost_class = -probs[:, target_classes.to(probs.device)]
        points = uniform_points(1, self.num_points, generator=generator, device=ins_masks.device)
        pred = point_sample(ins_masks.float()[None], points)[0]  # (S, P)
        target = point_sample(target_masks.to(pred)[None], points.to(pred))[0]  # (T, P)
        return (
            self.cost_class * cost_class
            + self.cost_mask * pairwise_bce_cost(pred, target)
            + self.cost_dice * pairwise_dice_cost(pred, target)
        )

    @torch.no_grad()
    def match(
        self,
        ins_logits: Tensor,
        ins_masks: Tensor,
        target_classes: Tensor,
        target_masks: Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Match the instance queries of one image to its target masks.

        Parameters are those of :meth:`cost_matrix`.

        Returns
        -------
        tuple of Tensor
            ``(query_index, target_index)``, int64 CPU tensors of length min(S, T), ascending in
            ``query_index``.
        """
        if target_masks.shape[0] == 0 or ins_masks.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty.clone()
        cost = self.cost_matrix(ins_logits, ins_masks, target_classes, target_masks, generator)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        return torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)

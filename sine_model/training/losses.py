"""SINE training losses: class + point-sampled mask losses on matched queries, with deep supervision.

Targets, one dict per target image::

    {"masks": (T, H, W) bool, "labels": (T,) int64 semantic labels, "ids": (T,) int64 instance ids}

Masks may have any resolution but must cover the same extent as the prediction grid (the padded square
model input). They are never resized: losses read them at normalised points (:mod:`.points`), exactly
where the predicted logits are read. Every target label must occur among the reference labels; ids must
be unique per image and match the reference ids of the same objects (crop pairs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sine_model.training.matcher import HungarianMatcher, class_indices, match_ids
from sine_model.training.points import point_sample, uncertain_points

__all__ = ["SetCriterion", "sigmoid_bce_loss", "dice_loss"]

PRED_KEYS = ("pred_id_logits", "pred_ins_logits", "pred_id_masks", "pred_ins_masks")


def sigmoid_bce_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Sigmoid BCE averaged over points, summed over masks, divided by ``num_masks``.

    Parameters
    ----------
    logits, targets : Tensor
        (K, P) logits and targets in [0, 1] at P points of K masks.
    num_masks : float
        Normaliser (> 0).
    """
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def dice_loss(logits: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """``1 − (2·Σ p·t + 1) / (Σ p + Σ t + 1)`` per mask (``p = sigmoid``), summed, divided by ``num_masks``.

    Parameters
    ----------
    logits, targets : Tensor
        (K, P) logits and targets in [0, 1].
    num_masks : float
        Normaliser (> 0).
    """
    probs = logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1) + 1
    denominator = probs.sum(-1) + targets.sum(-1) + 1
    return (1 - numerator / denominator).sum() / num_masks


class SetCriterion(nn.Module):
    """Weighted SINE losses for one batch of model outputs, final layer and every auxiliary layer.

    Per layer: ``loss_ce_ins`` (instance classes), ``loss_ce_id`` (ID presence), ``loss_mask`` (BCE) and
    ``loss_dice``; auxiliary layer ``i`` adds the suffix ``_i``. That is 4 · (1 + L) terms for L
    auxiliary outputs (official, 6 auxiliary outputs: 28). Each layer is matched on its own; the mask
    normaliser ``num_masks`` (ID matches + instance matches over the batch, ≥ 1) comes from the final
    layer and is shared by all layers (as in the official code; it is the same count in every layer).

    Parameters
    ----------
    matcher : HungarianMatcher, optional
        Instance matcher; default ``HungarianMatcher(class_weight, mask_weight, dice_weight)`` with
        12,544 points.
    class_weight, mask_weight, dice_weight : float
        Weights of the class (both CE terms), BCE and dice terms (official: 2, 5, 5).
    no_object_weight : float
        CE weight of the no-object class of both classifiers (official: 0.1).
    num_points, oversample_ratio, importance_ratio : float
        PointRend importance sampling for the mask losses (official: 12,544, 3, 0.75).
    deep_supervision : bool
        Also supervise the ``aux_outputs``.
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        *,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        self.matcher = matcher or HungarianMatcher(class_weight, mask_weight, dice_weight)
        self.weights = {
            "loss_ce_ins": class_weight,
            "loss_ce_id": class_weight,
            "loss_mask": mask_weight,
            "loss_dice": dice_weight,
        }
        self.no_object_weight = no_object_weight
        self.num_points = int(num_points)
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.deep_supervision = deep_supervision

    def extra_repr(self) -> str:
        return (
            f"matcher={self.matcher!r}, weights={self.weights}, no_object_weight={self.no_object_weight}, "
            f"num_points={self.num_points}, oversample_ratio={self.oversample_ratio}, "
            f"importance_ratio={self.importance_ratio}, deep_supervision={self.deep_supervision}"
        )

    def forward(
        self,
        outputs: Mapping | Sequence[Mapping],
        targets: Sequence[Mapping[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Compute all loss terms.

        Parameters
        ----------
        outputs : dict or sequence of dict
            Model outputs (:meth:`sine_model.SINE.decode` / ``forward_raw``): one batched dict, or one
            dict per reference set (each may hold several targets). Images are taken in order.
        targets : sequence of dict
            One target dict per image (see the module docstring).
        generator : torch.Generator, optional
            Random source for all point sampling, on the device of the predictions.

        Returns
        -------
        dict of str to Tensor
            The weighted terms (``loss_ce_ins``, ``loss_ce_id``, ``loss_mask``, ``loss_dice`` and their
            ``_i`` auxiliary versions) and ``"total"``, their sum.
        """
        images = _split_images(outputs)
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} predicted images but {len(targets)} targets")
        prepared = [_prepare_target(target, image) for target, image in zip(targets, images, strict=True)]
        num_layers = {len(image["layers"]) for image in images}
        if len(num_layers) != 1:
            raise ValueError(f"images have different numbers of decoder outputs: {sorted(num_layers)}")
        layers = range(num_layers.pop()) if self.deep_supervision else [-1]

        final = [image["layers"][-1] for image in images]
        final_matches = self.match(final, images, prepared, generator)
        num_masks = max(float(sum(len(i[0]) + len(n[0]) for i, n in final_matches)), 1.0)

        losses: dict[str, Tensor] = {}
        for layer in layers:
            preds = [image["layers"][layer] for image in images]
            is_final = layer == -1 or layer == len(images[0]["layers"]) - 1
            matches = final_matches if is_final else self.match(preds, images, prepared, generator)
            suffix = "" if is_final else f"_{layer}"
            terms = self.layer_losses(preds, prepared, matches, num_masks, generator)
            losses.update({name + suffix: self.weights[name] * value for name, value in terms.items()})
        losses["total"] = torch.stack(list(losses.values())).sum()
        return losses

    def match(
        self,
        preds: list[dict[str, Tensor]],
        images: list[dict],
        targets: list[dict[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]:
        """Per image: ((ID query, target) fixed matches, (instance query, target) Hungarian matches)."""
        matches = []
        for pred, image, target in zip(preds, images, targets, strict=True):
            id_match = match_ids(image["ref_ids"], target["ids"])
            ins_match = self.matcher.match(
                pred["pred_ins_logits"], pred["pred_ins_masks"], target["classes"], target["masks"], generator
            )
            matches.append((id_match, ins_match))
        return matches

    def layer_losses(
        self,
        preds: list[dict[str, Tensor]],
        targets: list[dict[str, Tensor]],
        matches: list[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]],
        num_masks: float,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Unweighted ``loss_ce_ins``, ``loss_ce_id``, ``loss_mask`` and ``loss_dice`` of one layer."""
        ce_ins, id_logits, id_classes, point_logits, point_labels = [], [], [], [], []
        for pred, target, ((id_src, id_tgt), (ins_src, ins_tgt)) in zip(preds, targets, matches, strict=True):
            ins_logits = pred["pred_ins_logits"].float()
            num_queries, num_classes = ins_logits.shape[0], ins_logits.shape[1] - 1
            dev = ins_logits.device
            classes = torch.full((num_queries,), num_classes, dtype=torch.int64, device=dev)
            classes[ins_src.to(dev)] = target["classes"][ins_tgt.to(target["classes"].device)].to(dev)
            weight = torch.ones(num_classes + 1, device=dev)
            weight[-1] = self.no_object_weight
            ce_ins.append(F.cross_entropy(ins_logits, classes, weight))

            logits = pred["pred_id_logits"].float()
            present = torch.ones(logits.shape[0], dtype=torch.int64, device=logits.device)
            present[id_src.to(logits.device)] = 0
            id_logits.append(logits)
            id_classes.append(present)

            src = torch.cat([pred["pred_ins_masks"][ins_src.to(dev)], pred["pred_id_masks"][id_src.to(dev)]])
            tgt_index = torch.cat([ins_tgt, id_tgt]).to(target["masks"].device)
            if src.shape[0]:
                logits_k, labels_k = self._sample_points(src.float(), target["masks"][tgt_index], generator)
                point_logits.append(logits_k)
                point_labels.append(labels_k)

        all_id_logits = torch.cat(id_logits)
        id_weight = torch.tensor([1.0, self.no_object_weight], device=all_id_logits.device)
        if all_id_logits.shape[0]:
            loss_ce_id = F.cross_entropy(all_id_logits, torch.cat(id_classes), id_weight)
        else:
            loss_ce_id = all_id_logits.sum()
        if point_logits:
            logits_all, labels_all = torch.cat(point_logits), torch.cat(point_labels)
            loss_mask = sigmoid_bce_loss(logits_all, labels_all, num_masks)
            loss_dice = dice_loss(logits_all, labels_all, num_masks)
        else:  # nothing matched: zero, but still connected to the graph
            loss_mask = loss_dice = 0.0 * preds[0]["pred_ins_masks"].sum()
        return {
            "loss_ce_ins": torch.stack(ce_ins).mean(),
            "loss_ce_id": loss_ce_id,
            "loss_mask": loss_mask,
            "loss_dice": loss_dice,
        }

    def _sample_points(
        self, src: Tensor, target_masks: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """Point logits (K, P) with gradient and point labels (K, P) at importance-sampled points."""
        coords = uncertain_points(
            src, self.num_points, self.oversample_ratio, self.importance_ratio, generator=generator
        )
        with torch.no_grad():
            labels = point_sample(target_masks.to(src), coords.to(target_masks.device).to(src))
        return point_sample(src, coords), labels.to(src.device)


def _split_images(outputs: Mapping | Sequence[Mapping]) -> list[dict]:
    """One entry per image: its predictions per layer (auxiliary first, final last) and reference ids."""
    groups = [outputs] if isinstance(outputs, Mapping) else list(outputs)
    images = []
    for out in groups:
        missing = [key for key in (*PRED_KEYS, "ref_ids", "ref_sem_labels") if key not in out]
        if missing:
            raise ValueError(f"model outputs lack {missing}")
        layers = [*(out.get("aux_outputs") or []), out]
        for b in range(out["pred_ins_logits"].shape[0]):
            images.append({
                "layers": [{key: layer[key][b] for key in PRED_KEYS} for layer in layers],
                "ref_ids": out["ref_ids"][b],
                "ref_sem_labels": out["ref_sem_labels"][b],
            })
    return images


def _prepare_target(target: Mapping[str, Tensor], image: dict) -> dict[str, Tensor]:
    """Check one target dict; masks as float, labels as class indices into the reference labels."""
    masks, labels, ids = target["masks"], target["labels"].reshape(-1), target["ids"].reshape(-1)
    if masks.dim() != 3 or not masks.shape[0] == labels.numel() == ids.numel():
        raise ValueError(
            f"target masks must be (T, H, W) with T labels and T ids, got masks {tuple(masks.shape)}, "
            f"{labels.numel()} labels, {ids.numel()} ids"
        )
    device = image["layers"][-1]["pred_ins_masks"].device
    return {
        "masks": masks.to(device=device, dtype=torch.float32),
        "classes": class_indices(labels.to(device), image["ref_sem_labels"]),
        "ids": ids.to(device),
    }

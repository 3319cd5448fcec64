"""SINE = image encoder (DINOv2 + neck) + M-Former, with the official state-dict layout."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sine_model.modeling.context import ReferenceTokens, pool_reference_tokens
from sine_model.modeling.mformer import MFormer

__all__ = ["SINE"]


class SINE(nn.Module):
    """In-context segmentation model; ``state_dict()`` keys match the official checkpoint.

    Build it with :func:`sine_model.modeling.config.build_model`. The forward pass is split so that callers
    can cache:
    :meth:`encode_images` (encoder + neck), :meth:`reference_tokens` (mask pooling, once per reference
    set) and :meth:`decode` (fusion + M-Former per target). :meth:`forward_raw` chains them with the
    official one-call contract.
    """

    def __init__(self, image_encoder: nn.Module, transformer_decoder: MFormer) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.transformer_decoder = transformer_decoder
        #: The preset whose weights were loaded (input side, instance source, …); set by
        #: :func:`sine_model.hub.pretrained.from_pretrained`, ``None`` for a model built with random weights.
        self.preset: Any = None

    @property
    def patch_size(self) -> int:
        return self.image_encoder.patch_size

    def encode_images(self, images: Tensor) -> Tensor:
        """Normalised padded images (B, 3, P, P) → neck features (B, C, P/14, P/14)."""
        return self.image_encoder(images)

    def reference_tokens(
        self,
        ref_features: Tensor,
        ref_masks: Sequence[Tensor],
        ref_labels: Sequence[Tensor],
        ref_ids: Sequence[Tensor],
    ) -> ReferenceTokens:
        """Pool ID tokens and semantic prototypes from reference neck features (K, C, g, g)."""
        grid = ref_features.shape[-1]
        pool = 4 * grid  # the mask-feature grid: two stride-2 transposed convolutions
        return pool_reference_tokens(
            ref_features, list(ref_masks), list(ref_labels), list(ref_ids), (pool, pool)
        )

    def decode(
        self, target_features: Tensor, tokens: ReferenceTokens, return_aux: bool = True
    ) -> dict:
        """Fusion + M-Former for B targets (B, C, g, g) against one reference set."""
        out = self.transformer_decoder(target_features, tokens, return_aux=return_aux)
        batch = target_features.shape[0]
        out["ref_ids"] = tokens.ids[None].expand(batch, -1)
        out["ref_id_labels"] = tokens.id_labels[None].expand(batch, -1)
        out["ref_sem_labels"] = tokens.sem_labels[None].expand(batch, -1)
        return out

    def forward_raw(
        self,
        ref_images: Tensor,
        ref_masks: Sequence[Tensor],
        ref_labels: Sequence[Tensor],
        ref_ids: Sequence[Tensor],
        target: Tensor,
    ) -> dict:
        """Segment one target given K references, as the official forward does.

        Parameters
        ----------
        ref_images : Tensor
            (K, 3, P, P) float, ImageNet-normalised, zero-padded bottom-right to a square P, P a
            multiple of 14.
        ref_masks : sequence of Tensor
            K bool tensors (N_k, P, P).
        ref_labels, ref_ids : sequence of Tensor
            K int64 tensors (N_k,): semantic label and object id of every mask. Masks sharing an id
            (also across references) form one object; masks sharing a label form one class.
        target : Tensor
            (1, 3, P, P) float.

        Returns
        -------
        dict
            ``pred_id_logits`` (1, N, 2), ``pred_ins_logits`` (1, S, M+1), ``pred_id_masks``
            (1, N, 4g, 4g), ``pred_ins_masks`` (1, S, 4g, 4g), ``aux_outputs`` (earlier predictions)
            and ``ref_ids`` (1, N), ``ref_id_labels`` (1, N), ``ref_sem_labels`` (1, M); g = P/14,
            N unique ids ascending, M unique labels ascending.
        """
        masks, labels, ids = validate_raw_inputs(
            ref_images, ref_masks, ref_labels, ref_ids, target, self.patch_size
        )
        features = self.encode_images(torch.cat([ref_images, target], dim=0))
        tokens = self.reference_tokens(features[:-1], masks, labels, ids)
        return self.decode(features[-1:], tokens)


def _check_image_batch(name: str, images: object, patch: int) -> Tensor:
    if not isinstance(images, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, P, P), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a float tensor (normalised image), got {images.dtype}")
    height, width = images.shape[-2:]
    if height != width:
        raise ValueError(f"{name} is {height}×{width}: pad images to a square P×P (bottom/right)")
    if height % patch:
        raise ValueError(
            f"{name} side {height} is not a multiple of {patch}: pad to "
            f"{-(-height // patch) * patch}"
        )
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return images


def validate_raw_inputs(
    ref_images: Tensor,
    ref_masks: Sequence[Tensor],
    ref_labels: Sequence[Tensor],
    ref_ids: Sequence[Tensor],
    target: Tensor,
    patch: int = 14,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """Check the :meth:`SINE.forward_raw` contract; return masks (bool) and labels/ids (int64).

    Raises
    ------
    ValueError
        Naming the offending argument and how to fix it.
    """
    _check_image_batch("ref_images", ref_images, patch)
    _check_image_batch("target", target, patch)
    if target.shape[0] != 1:
        raise ValueError(f"target must hold one image (1, 3, P, P), got {tuple(target.shape)}")
    side = ref_images.shape[-1]
    if target.shape[-1] != side:
        raise ValueError(f"target is {target.shape[-1]}² but references are {side}²: use one P")
    count = ref_images.shape[0]
    for name, seq in (("ref_masks", ref_masks), ("ref_labels", ref_labels), ("ref_ids", ref_ids)):
        if isinstance(seq, (Tensor, str, bytes)) or not isinstance(seq, Sequence):
            raise ValueError(f"{name} must be a list with one tensor per reference image")
        if len(seq) != count:
            raise ValueError(f"{name} has {len(seq)} entries for {count} reference images")
    masks_out, labels_out, ids_out = [], [], []
    for k, (masks, labels, ids) in enumerate(zip(ref_masks, ref_labels, ref_ids, strict=True)):
        if not isinstance(masks, Tensor) or masks.ndim != 3 or masks.shape[-2:] != (side, side):
            shape = tuple(masks.shape) if isinstance(masks, Tensor) else type(masks).__name__
            raise ValueError(f"ref_masks[{k}] must be a (N, {side}, {side}) tensor, got {shape}")
        if masks.shape[0] == 0:
            raise ValueError(f"reference {k} has no masks: drop that reference or label an object")
        if masks.dtype != torch.bool:
            if masks.is_floating_point() or not ((masks == 0) | (masks == 1)).all():
                raise ValueError(f"ref_masks[{k}] must be bool (or 0/1 integers), got {masks.dtype}")
            masks = masks.bool()
        empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"ref_masks[{k}] has empty masks at indices {empty}: remove them")
        for name, values in (("ref_labels", labels), ("ref_ids", ids)):
            if not isinstance(values, Tensor) or values.ndim != 1:
                raise ValueError(f"{name}[{k}] must be a 1-D tensor with one value per mask")
            if values.is_floating_point() or values.dtype == torch.bool or values.is_complex():
                raise ValueError(f"{name}[{k}] must be an integer tensor, got {values.dtype}")
            if values.shape[0] != masks.shape[0]:
                raise ValueError(
                    f"{name}[{k}] has {values.shape[0]} values for {masks.shape[0]} masks"
                )
        masks_out.append(masks.to(ref_images.device))
        labels_out.append(labels.to(device=ref_images.device, dtype=torch.int64))
        ids_out.append(ids.to(device=ref_images.device, dtype=torch.int64))
    return masks_out, labels_out, ids_out

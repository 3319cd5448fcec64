"""Time-lapse memory for ID propagation (the official VOS recipe).

Each object keeps its own memory: the fixed reference (always used) plus at most ``slots`` earlier
predicted frames. A frame's priority decays linearly with its distance to the frame being predicted,
``max(0, 1 - Δt / decay_frames)`` × its score; when a new frame arrives and the memory is full, the entry
with the lowest (decayed score, score, frame index) is evicted — if the newcomer is not itself lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["MemoryFrame", "ObjectMemory", "TimelapseMemory"]


@dataclass
class MemoryFrame:
    """One remembered frame: its neck features and the predicted masks of the objects it serves."""

    index: int
    features: torch.Tensor  # (C, g, g)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)  # object id → bool (P, P)


@dataclass
class ObjectMemory:
    """Frame indices and scores remembered for one object."""

    entries: list[tuple[int, float]] = field(default_factory=list)  # (frame index, score)


class TimelapseMemory:
    """Per-object memories of predicted frames used as extra references.

    Parameters
    ----------
    slots : int
        Remembered frames per object besides the fixed reference (official: 5, i.e. 6 frames).
    decay_frames : float
        Frame distance at which a remembered score has decayed to zero (official: 20).
    """

    def __init__(self, slots: int = 5, decay_frames: float = 20.0) -> None:
        if slots < 1 or decay_frames <= 0:
            raise ValueError("memory needs slots >= 1 and decay_frames > 0")
        self.slots = slots
        self.decay_frames = decay_frames
        self.frames: dict[int, MemoryFrame] = {}
        self.objects: dict[int, ObjectMemory] = {}

    def decayed(self, frame: int, score: float, now: int) -> float:
        return score * max(0.0, 1.0 - abs(now - frame) / self.decay_frames)

    def add(self, index: int, features: torch.Tensor, masks: dict[int, torch.Tensor],
            scores: dict[int, float]) -> None:
        """Offer frame ``index`` with each object's predicted mask and score to the memories."""
        frame = MemoryFrame(index, features)
        for obj, mask in masks.items():
            if not bool(mask.any()):
                continue
            memory = self.objects.setdefault(obj, ObjectMemory())
            score = float(scores[obj])
            if len(memory.entries) >= self.slots:
                ranked = sorted(
                    memory.entries + [(index, score)],
                    key=lambda e: (self.decayed(e[0], e[1], index), e[1], e[0]),
                )
                evicted = ranked[0]
                if evicted == (index, score):
                    continue
                memory.entries.remove(evicted)
            memory.entries.append((index, score))
            frame.masks[obj] = mask
        if frame.masks:
            self.frames[index] = frame
        self._drop_unused_frames()

    def _drop_unused_frames(self) -> None:
        used = {i for memory in self.objects.values() for i, _ in memory.entries}
        for index in list(self.frames):
            if index not in used:
                del self.frames[index]
                continue
            frame = self.frames[index]
            for obj in list(frame.masks):
                if all(i != index for i, _ in self.objects[obj].entries):
                    del frame.masks[obj]

    def add_prediction(self, index: int, features: torch.Tensor, raw: dict, b: int,
                       valid_hw: tuple[int, int], pad: int, object_ids: list[int]) -> None:
        """Offer the model's ID answer for frame ``index`` (item ``b`` of the raw outputs).

        Masks are the ID mask logits upsampled to the padded input and cut to its valid part; an
        object's score is its ID probability × the mean sigmoid inside its mask.
        """
        logits = raw["pred_id_masks"][b : b + 1].float()
        full = F.interpolate(logits, size=(pad, pad), mode="bilinear", align_corners=False)[0]
        h_r, w_r = valid_hw
        binary = torch.zeros_like(full, dtype=torch.bool)
        binary[:, :h_r, :w_r] = full[:, :h_r, :w_r] > 0
        probs = raw["pred_id_logits"][b].float().softmax(-1)[:, 0]
        mask_score = (full.sigmoid() * binary).flatten(1).sum(1) / (binary.flatten(1).sum(1) + 1e-6)
        scores = (probs * mask_score).tolist()
        self.add(index, features, {o: binary[i] for i, o in enumerate(object_ids)},
                 {o: scores[i] for i, o in enumerate(object_ids)})

    def extend(self, features: torch.Tensor, masks: list, classes: list, ids: list,
               class_of: dict[int, int]) -> tuple[torch.Tensor, list, list, list]:
        """The reference inputs of :meth:`SINE.reference_tokens` with the remembered frames appended."""
        frames = self.references()
        device = features.device
        features = torch.cat([features] + [f.features[None].to(features.dtype) for f in frames])
        masks, classes, ids = list(masks), list(classes), list(ids)
        for frame in frames:
            objs = sorted(frame.masks)
            masks.append(torch.stack([frame.masks[o] for o in objs]))
            ids.append(torch.tensor(objs, device=device))
            classes.append(torch.tensor([class_of[o] for o in objs], device=device))
        return features, masks, classes, ids

    def tokens(self, model: Any, tokens: Any, reference: Any) -> Any:
        """``model``'s reference tokens for ``reference`` (the propagator's encoded references) with the
        remembered frames appended; ``tokens`` (the references' own) while nothing is remembered."""
        if not self.frames:
            return tokens
        class_of = dict(zip(tokens.ids.tolist(), tokens.id_labels.tolist(), strict=True))
        return model.reference_tokens(*self.extend(reference.features, reference.masks, reference.classes,
                                                   reference.ids, class_of))

    def references(self) -> list[MemoryFrame]:
        """The remembered frames, oldest first, each with only the masks still remembered."""
        return [self.frames[i] for i in sorted(self.frames)]

"""ID answers by matching, for presets whose ID head is weak (a mixin of ``Propagator``).

A preset whose :attr:`~sine_model.hub.presets.Preset.id_source` is ``"matching"`` answers ID mode with
its instance answer's objects relabelled with the reference objects they match
(:mod:`sine_model.postprocess.id_matching`); ``"queries"`` (the official model, and models without a
preset) keeps the model's ID outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sine_model.engine.stitching import ObjectScore, TargetResult
from sine_model.postprocess.id_matching import ReferenceObjects, describe_references, match_ids

__all__ = ["IdAnswers"]


class IdAnswers:
    """How the ID answer is made: the model's ID queries, or matching (see the module docstring)."""

    id_source: str
    thresholds: dict[str, float]
    _id_objects: ReferenceObjects | None

    def _describe_id_references(self, rgbs: list[np.ndarray], label_images: list[np.ndarray]) -> None:
        """Keep what matching needs of the references (nothing when the model's ID queries answer)."""
        self._id_objects = describe_references(rgbs, label_images) if self.id_source == "matching" else None

    def _model_modes(self, modes: tuple[str, ...]) -> tuple[str, ...]:
        """The modes the model and the stitching make for ``modes``: matching needs the instance answer."""
        if self.id_source != "matching" or "id" not in modes:
            return modes
        return tuple(dict.fromkeys(m if m != "id" else "instance" for m in modes))

    def _ids_by_matching(self, result: TargetResult, rgb: np.ndarray, modes: tuple[str, ...],
                         id_sources: dict[int, str]) -> TargetResult:
        """``result`` (made for :meth:`_model_modes`) with the ID answer by matching, in ``modes`` only."""
        if self.id_source != "matching" or "id" not in modes:
            return result
        assert self._id_objects is not None  # set with the references
        semantic = result.labels.get("semantic")  # (made only when asked for: not computed for this)
        id_map, found = match_ids(self._id_objects, rgb, result.labels["instance"], self.thresholds["id"],
                                  foreground=None if semantic is None else semantic > 0)
        labels: dict[str, Any] = {}
        scores: list[ObjectScore] = []
        for mode in modes:
            if mode == "id":
                labels[mode] = id_map
                scores += [ObjectScore(result.index, i, "id", s, f"{id_sources.get(i, '')}|{how}")
                           for i, s, how in found]
            else:
                labels[mode] = result.labels[mode]
                scores += [s for s in result.scores if s.mode == mode]
        return TargetResult(result.index, labels, scores, result.shape, result.semantic_maps)

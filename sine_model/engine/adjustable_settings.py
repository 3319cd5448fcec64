"""The settings of a :class:`~sine_model.engine.propagator.Propagator` that fitting changes after it is built.

Calibration (:mod:`sine_model.fitting.calibration`) chooses the scale, the input projection and the
per-class split rules; the refiner (:mod:`sine_model.fitting.refiner`) is fitted on the references. These
methods set and undo them; changing what the references were encoded with drops the references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sine_model.engine.inputs import PropagationError
from sine_model.engine.resources import check_scale
from sine_model.postprocess.components import instance_steps_by_class
from sine_model.postprocess.pixel_refiner import PixelRefiner
from sine_model.preprocess.projection import ReferenceProjection
from sine_model.preprocess.transforms import to_rgb_float

__all__ = ["AdjustableSettings"]


class AdjustableSettings:
    """Scale, input projection, split rules and refiner of a propagator (a mixin of ``Propagator``)."""

    pad: int
    _overlap: int
    channel_axis: int | None
    project_inputs: bool
    refiner: PixelRefiner | None
    _projection: ReferenceProjection | None
    _instance_steps: dict | None
    _calibrated_steps: dict | None
    _ref_labels: tuple[list[np.ndarray], dict[int, int]]

    def set_refiner(self, refiner: PixelRefiner | None) -> None:
        """Refine the semantic answer (and instances made from it) with ``refiner`` (None: do not).

        :func:`~sine_model.fitting.refiner.fit_refiner` fits one on the references and sets it; setting
        references again drops it.
        """
        if refiner is not None and list(refiner.class_ids) != self.semantic_classes():
            raise PropagationError(f"the refiner knows classes {list(refiner.class_ids)} but the references "
                                   f"have {self.semantic_classes()}: fit it on these references")
        self.refiner = refiner

    def training_image(self, image: Any) -> Any:
        """``image`` as the model sees it, for adaptation: the reference projection (uint8 grey) if on."""
        if self._projection is None:
            return image
        return self._projection.grey(to_rgb_float(np.asarray(image), channel_axis=self.channel_axis))

    def instance_steps(self) -> dict:
        """Per class, how the semantic answer is split into instances.

        Chosen on the references' own labels
        (:func:`~sine_model.postprocess.components.instance_steps_by_class`),
        unless :meth:`set_instance_steps` (e.g. :func:`~sine_model.fitting.calibration.calibrate`) fixed them.
        """
        if self._instance_steps is None:
            self._instance_steps = instance_steps_by_class(*self._ref_labels)
        if self._calibrated_steps:
            return {**self._instance_steps, **self._calibrated_steps}
        return self._instance_steps

    def set_instance_steps(self, steps: Mapping[int, Any] | None) -> None:
        """Fix the per-class split rules of the semantic answer (None: choose them on the references)."""
        self._calibrated_steps = None if steps is None else dict(steps)

    def clear_calibration(self, scale: float) -> None:
        """Undo :func:`~sine_model.fitting.calibration.calibrate`: ``scale``, no input projection, split
        rules chosen on the references; then set the references again."""
        if scale != self.scale:
            self.set_scale(scale)
        self.set_instance_steps(None)
        if self.project_inputs:
            self.set_project_inputs(False)

    def set_project_inputs(self, enabled: bool) -> None:
        """Turn the reference projection on or off; set the references again (it is fitted on them)."""
        self.project_inputs = bool(enabled)
        self._projection, self._reference, self._tokens = None, None, None

    def set_scale(self, scale: float) -> None:
        """Change the resize factor; the references must be set again (they are encoded at the scale)."""
        self._set_extents(scale)
        self._reference, self._tokens = None, None

    def _set_extents(self, scale: float) -> None:
        self.scale = check_scale(scale, self.pad, self.model.patch_size)  # positive, finite, not absurd
        self.tile_extent = max(1, int(self.pad / self.scale))  # tile side in original pixels
        self.overlap_extent = min(int(self._overlap / self.scale), self.tile_extent - 1)


"""The settings of a :class:`~sine_model.engine.propagator.Propagator` that fitting changes after it is built.

With no scale given, the scale is chosen from the reference objects' size when the references are set
(:mod:`sine_model.engine.object_scale`, capped by :func:`~sine_model.engine.resources.automatic_scale_cap`).
Calibration (:mod:`sine_model.fitting.calibration`) chooses the scale, the input projection and the
per-class split rules; the refiner (:mod:`sine_model.fitting.refiner`) is fitted on the references. These
methods set and undo them; changing what the references were encoded with drops the references.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sine_model.engine.inputs import PropagationError
from sine_model.engine.object_scale import ScaleChoice, choose_object_scale
from sine_model.engine.resources import automatic_scale_cap, check_scale
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
    #: The scale in use and why (automatic from the reference objects, or given).
    scale_choice: ScaleChoice
    _scale_given: float | None

    def set_refiner(self, refiner: PixelRefiner | None) -> None:
        """Refine the semantic answer (and instances made from it) with ``refiner`` (None: do not).

        :func:`~sine_model.fitting.refiner.fit_refiner` fits one on the references and sets it; setting
        references again drops it.
        """
        if refiner is not None and list(refiner.class_ids) != self.semantic_classes():
            raise PropagationError(f"the refiner knows classes {list(refiner.class_ids)} but the references "
                                   f"have {self.semantic_classes()}: fit it on these references")
        self.refiner = refiner

    def _model_pass_needed(self, model_modes: tuple[str, ...], keep_maps: bool = False,
                           memory: bool = False) -> bool:
        """Whether a target's answers in ``model_modes`` (:meth:`_model_modes`) read the model's outputs.

        A refiner that reads no model maps decides the instance and semantic answers from the image
        alone (and matching makes the ID answer from those instances), so the model pass would be thrown
        away: it is skipped unless its maps are kept or the time-lapse memory needs its predictions.
        """
        if keep_maps or memory or self.refiner is None or self.refiner.use_model_maps:
            return True
        return any(mode not in ("instance", "semantic") for mode in model_modes)

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

    def clear_calibration(self, scale: float | None) -> None:
        """Undo :func:`~sine_model.fitting.calibration.calibrate`: ``scale`` (None: automatic), no input
        projection, split rules chosen on the references; then set the references again."""
        if scale is None:
            if self._scale_given is not None:  # calibration (or a caller) fixed one: automatic again
                self.set_scale(None)
        elif scale != self.scale or self._scale_given is None:
            self.set_scale(scale)
        self.set_instance_steps(None)
        if self.project_inputs:
            self.set_project_inputs(False)

    def set_project_inputs(self, enabled: bool) -> None:
        """Turn the reference projection on or off; set the references again (it is fitted on them)."""
        self.project_inputs = bool(enabled)
        self._projection, self._reference, self._tokens = None, None, None

    def set_scale(self, scale: float | None) -> None:
        """Change the resize factor; the references must be set again (they are encoded at the scale).

        None: automatic, chosen from the reference objects' size when the references are set (the model's
        preset records the object sizes it sees well; without one, 1).
        """
        self._set_extents(1.0 if scale is None else scale)
        self._scale_given = None if scale is None else self.scale
        self.scale_choice = ScaleChoice(self.scale, automatic=scale is None)
        self._reference, self._tokens = None, None

    def _fit_scale_to_objects(self, label_images: list[np.ndarray], class_of: dict[int, int]) -> None:
        """With no scale given, choose it from the objects of ``label_images`` (before they are encoded)."""
        if self._scale_given is not None:
            return
        preset = getattr(self.model, "preset", None)
        band = getattr(getattr(preset, "input", None), "object_diameter_px", None)
        shapes = [labels.shape[:2] for labels in label_images]
        n_maps = self.instance_topk + len(set(class_of.values()))
        cap = automatic_scale_cap(self.pad, self.model.patch_size, self._overlap, shapes, n_maps,
                                  self.cache.max_bytes, self.model_bytes)
        self.scale_choice = choose_object_scale(label_images, band, cap)
        if self.scale_choice.scale != self.scale:
            self._set_extents(self.scale_choice.scale)

    def _set_extents(self, scale: float) -> None:
        self.scale = check_scale(scale, self.pad, self.model.patch_size)  # positive, finite, not absurd
        self.tile_extent = max(1, int(self.pad / self.scale))  # tile side in original pixels
        self.overlap_extent = min(int(self._overlap / self.scale), self.tile_extent - 1)


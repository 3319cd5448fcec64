"""Getting a propagator ready for its references: calibrate, adapt, fit the refiner, in that order.

The order matters and is the same for the CLI, the demo, the napari worker and the evaluation harness:

1. :func:`~sine_model.fitting.calibration.calibrate` chooses the scale, the projection and the splitting
rules on
   the unadapted model (adaptation then trains on what the calibrated engine will see);
2. :func:`~sine_model.fitting.adaptation.adapt_propagator` fine-tunes neck + decoder; when a refiner comes
   next it is cross-fitted (one copy per reference half), so that the refiner learns from answers on
   pixels the model did not train on, as its answers on targets will be;
3. :func:`~sine_model.fitting.refiner.fit_refiner` trains the full-resolution refiner on the maps of the model
   it will be used with (reverting this order lowered the harness's mean instance F1: docs/quality.md).

:class:`ReferencePreparation` runs the stages one by one (:meth:`~ReferencePreparation.stages` yields a
line before each, for a progress display) and keeps what each returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["ReferencePreparation"]


class ReferencePreparation:
    """Set a propagator's references and prepare it for them.

    Parameters
    ----------
    propagator : Propagator
        The engine; on return its references are ``pairs``, and its model, calibration and refiner are
        whatever the stages chose.
    pairs : sequence of (image, labels)
        The reference pairs.
    classes : mapping, optional
        Label value -> class id (default: all class 1).
    calibrate : bool
        Run :func:`~sine_model.fitting.calibration.calibrate` first.
    adapt_seconds : float
        Time budget of test-time adaptation (0: none).
    refine_seconds : float
        Time budget of the refiner's training (0: no refiner).
    cross_fit : bool
        Adapt one copy per reference half when a refiner is fitted next (the default; ``False`` is an
        ablation: one adaptation on whole references).
    adapt_max_steps : int, optional
        Also stop each adaptation (each copy) after this many steps, so runs repeat whatever the load.
    refine_with_model : bool
        Give the refiner the model's maps (``False``: a pixel classifier on image features alone, an
        ablation).
    colour_features : bool
        Let the refiner read colour features when a reference is in colour.
    keep_defaults_if_uncalibratable : bool
        When no reference has objects in both halves, calibration cannot score anything: keep the
        engine's defaults instead of raising :class:`~sine_model.engine.inputs.PropagationError`
        (``calibration`` stays ``None``).
    """

    def __init__(
        self,
        propagator: Any,
        pairs: Sequence[tuple[Any, Any]],
        classes: Mapping[int, int] | None = None,
        *,
        calibrate: bool = False,
        adapt_seconds: float = 0.0,
        refine_seconds: float = 0.0,
        cross_fit: bool = True,
        adapt_max_steps: int | None = None,
        refine_with_model: bool = True,
        colour_features: bool = True,
        keep_defaults_if_uncalibratable: bool = False,
    ) -> None:
        if adapt_seconds < 0 or refine_seconds < 0:
            raise ValueError(f"time budgets must be ≥ 0 seconds, got adapt_seconds={adapt_seconds}, "
                             f"refine_seconds={refine_seconds}")
        self.propagator = propagator
        self.pairs = list(pairs)
        self.classes = dict(classes) if classes else None
        self.calibrate = calibrate
        self.adapt_seconds = float(adapt_seconds)
        self.refine_seconds = float(refine_seconds)
        self.cross_fit = cross_fit
        self.adapt_max_steps = adapt_max_steps
        self.refine_with_model = refine_with_model
        self.colour_features = colour_features
        self.keep_defaults_if_uncalibratable = keep_defaults_if_uncalibratable
        self.calibration: Any = None  # sine_model.fitting.calibration.Calibration
        self.adaptation: Any = None  # sine_model.fitting.adaptation.AdaptResult
        self.refinement: Any = None  # sine_model.postprocess.pixel_refiner.RefinerFit
        self.seconds: dict[str, float] = {}  # wall time per stage that ran

    def run(self) -> ReferencePreparation:
        """Run every stage; return ``self``."""
        for _ in self.stages():
            pass
        return self

    def stages(self) -> Iterator[str]:
        """Run the stages, yielding a line that says what comes next before each one starts."""
        propagator, pairs, classes = self.propagator, self.pairs, self.classes
        yield f"encoding {len(pairs)} reference(s) on {propagator.device}"
        propagator.set_references(pairs, classes)  # checks the references before anything is changed
        if self.calibrate:
            yield "calibrating on the references (scale, splitting of touching objects)"
            self.calibration = self._timed("calibrate", self._calibrate)
        if self.adapt_seconds > 0:
            yield f"adapting the model to the references (at most {self.adapt_seconds:g} s)"
            self.adaptation = self._timed("adapt", self._adapt)
        if self.refine_seconds > 0:
            yield f"fitting the full-resolution refiner (at most {self.refine_seconds:g} s)"
            self.refinement = self._timed("refine", self._refine)

    @property
    def fold_models(self) -> list | None:
        """The cross-fitted copies the refiner was fitted with, if the adaptation was cross-fitted."""
        return None if self.adaptation is None else self.adaptation.fold_models

    def _timed(self, name: str, stage: Any) -> Any:
        start = time.perf_counter()
        try:
            return stage()
        finally:
            self.seconds[name] = time.perf_counter() - start

    def _calibrate(self) -> Any:
        from sine_model.engine.inputs import PropagationError
        from sine_model.fitting.calibration import calibrate

        try:
            return calibrate(self.propagator, self.pairs, self.classes)
        except PropagationError:  # calibrate raises this before it changes anything
            if not self.keep_defaults_if_uncalibratable:
                raise
            return None

    def _adapt(self) -> Any:
        from sine_model.fitting.adaptation import adapt_propagator

        return adapt_propagator(self.propagator, self.pairs, self.adapt_seconds, classes=self.classes,
                                cross_fit=self.cross_fit and self.refine_seconds > 0,
                                max_steps=self.adapt_max_steps)

    def _refine(self) -> Any:
        from sine_model.fitting.refiner import fit_refiner

        return fit_refiner(self.propagator, self.pairs, self.classes, self.refine_seconds,
                           use_model_maps=self.refine_with_model, fold_models=self.fold_models,
                           colour_features=self.colour_features)

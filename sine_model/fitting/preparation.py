"""Getting a propagator ready for its references: calibrate, adapt, fit the refiner, in that order.

The order matters and is the same for the CLI, the demo, the napari worker and the evaluation harness:

1. :func:`~sine_model.fitting.calibration.calibrate` chooses the scale, the projection and the splitting
   rules on the unadapted model (adaptation then trains on what the calibrated engine will see);
2. :func:`~sine_model.fitting.adaptation.adapt_propagator` fine-tunes neck + decoder; when a refiner comes
   next it is cross-fitted (one copy per reference half), so that the refiner learns from answers on
   pixels the model did not train on, as its answers on targets will be;
3. :func:`~sine_model.fitting.refiner.fit_refiner` trains the full-resolution refiner on the maps of the model
   it will be used with (reverting this order lowered the harness's mean instance F1: docs/quality.md).

Which stages run and their budgets (optimiser steps, seeded) come from the model's preset
(:class:`~sine_model.hub.preset_specs.FittingRecipe`) unless the caller says otherwise. A stage never ends a
run: one that cannot work on these references (too few objects, objects too small for the crops, a
reference too small to halve, a budget too short) steps aside, :attr:`ReferencePreparation.stepped_aside`
says why in one line, and the next stage runs. A wall-clock cap per stage is only a safety net; a fit it
cut short is reported (:meth:`ReferencePreparation.report`).

:class:`ReferencePreparation` runs the stages one by one (:meth:`~ReferencePreparation.stages` yields a
line before each, for a progress display) and keeps what each returned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from sine_model.errors import PropagationError
from sine_model.fitting.folds import MIN_HALF_SIDE, reference_folds
from sine_model.hub.presets import FittingRecipe, get_preset

__all__ = ["MAX_STAGE_SECONDS", "MIN_REFINER_STEPS", "ReferencePreparation", "recipe_of"]

#: Wall-clock safety cap of adaptation and of the refiner's training (each), in seconds.
MAX_STAGE_SECONDS = 600.0
#: A refiner the safety cap stopped before this many steps steps aside (an untrained MLP would spoil
#: the model's answer).
MIN_REFINER_STEPS = 10


def recipe_of(propagator: Any) -> FittingRecipe:
    """The fitting recipe of the propagator's model's preset (none for a model without a preset)."""
    preset = getattr(getattr(propagator, "model", None), "preset", None)
    if preset is None:
        return FittingRecipe()
    try:
        return get_preset(preset).recipe
    except ValueError:  # a preset name no longer registered
        return FittingRecipe()


def _why_no_folds(pairs: Sequence[tuple[Any, Any]]) -> str:
    """Why no reference gives (half, held-out half) folds, in words."""
    shapes = [np.shape(labels) for _, labels in pairs]
    if all(max(shape) < 2 * MIN_HALF_SIDE for shape in shapes):
        return (f"the reference is too small to halve ({' and '.join(f'{h}×{w}' for h, w in shapes)} pixels; "
                f"halves need {MIN_HALF_SIDE} pixels across)")
    counts = [len(np.unique(np.asarray(labels)[np.asarray(labels) != 0])) for _, labels in pairs]
    if sum(counts) < 2:
        return f"too few objects ({sum(counts)} labelled; halves need one each)"
    return "no reference has labelled objects in both halves (label objects across the whole image)"


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
    recipe : FittingRecipe, optional
        Stages and budgets; default: the recipe of the model's preset (:func:`recipe_of`).
    calibrate : bool, optional
        Run :func:`~sine_model.fitting.calibration.calibrate` first (overrides the recipe).
    adapt_steps : int, optional
        Test-time adaptation steps per adapted copy, 0: none (overrides the recipe).
    refine_steps : int, optional
        Training steps of the refiner, 0: no refiner (overrides the recipe).
    max_seconds : float
        Wall-clock safety cap of adaptation and of the refiner's training, each.
    cross_fit : bool
        Adapt one copy per reference half when a refiner is fitted next (the default; ``False`` is an
        ablation: one adaptation on whole references).
    refine_with_model : bool, optional
        Give the refiner the model's maps besides the image features (overrides the recipe's
        ``refiner_maps``).
    refine_forest : bool, optional
        Average the refiner's MLP with a random forest (overrides the recipe's ``refiner_forest``).
    colour_features : bool
        Let the refiner read colour features when a reference is in colour.
    seed : int
        Seed of adaptation and of the refiner.
    """

    def __init__(
        self,
        propagator: Any,
        pairs: Sequence[tuple[Any, Any]],
        classes: Mapping[int, int] | None = None,
        *,
        recipe: FittingRecipe | None = None,
        calibrate: bool | None = None,
        adapt_steps: int | None = None,
        refine_steps: int | None = None,
        max_seconds: float = MAX_STAGE_SECONDS,
        cross_fit: bool = True,
        refine_with_model: bool | None = None,
        refine_forest: bool | None = None,
        colour_features: bool = True,
        seed: int = 0,
    ) -> None:
        base = recipe if recipe is not None else recipe_of(propagator)
        self.recipe = FittingRecipe(
            calibrate=base.calibrate if calibrate is None else bool(calibrate),
            adapt_steps=base.adapt_steps if adapt_steps is None else int(adapt_steps),
            refine_steps=base.refine_steps if refine_steps is None else int(refine_steps),
            refiner_maps=base.refiner_maps if refine_with_model is None else bool(refine_with_model),
            refiner_forest=base.refiner_forest if refine_forest is None else bool(refine_forest),
            evidence=base.evidence,
        )  # checks the budgets
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self.propagator = propagator
        self.pairs = list(pairs)
        self.classes = dict(classes) if classes else None
        self.max_seconds = float(max_seconds)
        self.cross_fit = cross_fit
        self.colour_features = colour_features
        self.seed = seed
        self.scale_choice: Any = None  # sine_model.engine.object_scale.ScaleChoice, once the refs are set
        self.calibration: Any = None  # sine_model.fitting.calibration.Calibration
        self.adaptation: Any = None  # sine_model.fitting.adaptation.AdaptResult
        self.refinement: Any = None  # sine_model.fitting.refiner.RefinerFit
        self.seconds: dict[str, float] = {}  # wall time per stage that was tried
        self.stepped_aside: dict[str, str] = {}  # stage -> why it did not run

    @property
    def calibrate(self) -> bool:
        return self.recipe.calibrate

    @property
    def adapt_steps(self) -> int:
        return self.recipe.adapt_steps

    @property
    def refine_steps(self) -> int:
        return self.recipe.refine_steps

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
        self.scale_choice = getattr(propagator, "scale_choice", None)  # (automatic: from the objects' size)
        if self.calibrate:
            yield "calibrating on the references (scale, splitting of touching objects)"
            self.calibration = self._timed("calibrate", self._calibrate)
        if self.adapt_steps > 0:
            yield f"adapting the model to the references ({self.adapt_steps} steps)"
            self.adaptation = self._timed("adapt", self._adapt)
        if self.refine_steps > 0:
            yield f"fitting the full-resolution refiner ({self.refine_steps} steps)"
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

    def _step_aside(self, stage: str, reason: str) -> None:
        self.stepped_aside[stage] = reason
        self.propagator.set_references(self.pairs, self.classes)  # whatever the stage left half-done

    def _calibrate(self) -> Any:
        from sine_model.fitting.calibration import calibrate

        if not reference_folds(self.pairs, self.propagator.channel_axis):
            self._step_aside("calibrate", _why_no_folds(self.pairs))
            return None
        scale, project = self.propagator.scale, getattr(self.propagator, "project_inputs", False)
        if getattr(self.scale_choice, "automatic", False):
            scale = None  # chosen again from the objects when the references are set again
        try:
            return calibrate(self.propagator, self.pairs, self.classes)
        except PropagationError as error:
            self.propagator.set_project_inputs(project)
            self.propagator.set_scale(scale)
            self._step_aside("calibrate", str(error))
            return None

    def _adapt(self) -> Any:
        from sine_model.fitting.adaptation import adapt_propagator
        from sine_model.training.pairs import NoUsablePairError

        model = self.propagator.model
        try:
            return adapt_propagator(self.propagator, self.pairs, self.max_seconds, classes=self.classes,
                                    cross_fit=self.cross_fit and self.refine_steps > 0,
                                    max_steps=self.adapt_steps, seed=self.seed)
        except NoUsablePairError:
            self.propagator.model = model
            self._step_aside("adapt", "objects too small or too sparse for the training crops: no crop "
                                      "kept a reference object")
            return None

    def _refine(self) -> Any:
        from sine_model.fitting.refiner import fit_refiner

        try:
            fit = fit_refiner(self.propagator, self.pairs, self.classes, self.refine_steps,
                              seconds=self.max_seconds, use_model_maps=self.recipe.refiner_maps,
                              fold_models=self.fold_models, colour_features=self.colour_features,
                              forest=self.recipe.refiner_forest, seed=self.seed)
        except PropagationError as error:
            self.propagator.set_refiner(None)
            self._step_aside("refine", str(error))
            return None
        if fit.steps < min(MIN_REFINER_STEPS, self.refine_steps):
            self.propagator.set_refiner(None)
            self._step_aside("refine", f"budget too short: the {self.max_seconds:g} s safety cap stopped "
                                       f"it after {fit.steps} of {self.refine_steps} steps")
            return None
        return fit

    def report(self) -> list[str]:
        """One line per stage of the recipe: what it did, or why it stepped aside; first, when the scale
        was chosen from the reference objects' size and is not 1, the working scale and why."""
        choice = self.scale_choice  # a line only when the objects' size changed the scale
        changed = choice is not None and choice.automatic and choice.scale != 1
        lines = [f"working {choice.describe()}"] if changed else []
        for stage, reason in self.stepped_aside.items():
            lines.append(f"{_STAGE_NAMES[stage]} stepped aside: {reason}; the run goes on without it")
        if (result := self.calibration) is not None:
            rules = ", ".join(f"class {c}: {s.describe()}" for c, s in sorted(result.steps.items()))
            projection = ", reference projection" if result.project_inputs else ""
            lines.append(f"calibrated on the references in {self.seconds['calibrate']:.1f} s: scale "
                         f"{result.scale:g}{projection}, {rules} (held-out instance F1 {result.f1:.3f} "
                         f"over {result.folds} folds)")
        if (adapted := self.adaptation) is not None:
            halves = " (one copy per reference half, averaged)" if self.fold_models else ""
            cut = f"; cut short by the {self.max_seconds:g} s safety cap" if adapted.cut_short else ""
            lines.append(f"adapted neck + decoder{halves}: {adapted.steps} steps in {adapted.seconds:.1f} s"
                         f"{cut}")
        if (fit := self.refinement) is not None:
            source = "halves predicted from each other" if fit.held_out else \
                "references predicted from themselves"
            if not self.recipe.refiner_maps:
                source = "image features only"
            kind = "MLP + random forest" if self.recipe.refiner_forest else "MLP"
            cut = (f"; cut short by the {self.max_seconds:g} s safety cap before {self.refine_steps} "
                   "steps") if fit.cut_short else ""
            lines.append(f"refiner ({kind}) fitted on the references in {self.seconds['refine']:.1f} s: "
                         f"{fit.steps} steps on {fit.pixels} pixels ({source}), loss {fit.loss:.3f}{cut}")
        return lines

    def provenance(self) -> dict[str, Any]:
        """What was asked and what ran, JSON-ready: the recipe, the scale when it was chosen from the
        reference objects' size, and per stage its summary or why it stepped aside (stages not asked for
        are absent)."""
        record: dict[str, Any] = {"recipe": self.recipe.describe()}
        if self.scale_choice is not None and self.scale_choice.automatic:  # (a given one is a parameter)
            record["scale"] = self.scale_choice.as_dict()
        asked = {"calibrate": self.calibrate, "adapt": self.adapt_steps > 0, "refine": self.refine_steps > 0}
        for stage in (s for s, on in asked.items() if on):
            if stage in self.stepped_aside:
                record[stage] = {"ran": False, "stepped_aside": self.stepped_aside[stage]}
        if (result := self.calibration) is not None:
            record["calibrate"] = {"ran": True, "scale": result.scale, "projection": result.project_inputs,
                                   "f1": round(result.f1, 4), "folds": result.folds,
                                   "rules": {str(c): s.describe() for c, s in sorted(result.steps.items())}}
        if (adapted := self.adaptation) is not None:
            record["adapt"] = {"ran": True, "steps": adapted.steps, "seconds": round(adapted.seconds, 2),
                               "final_loss": round(adapted.losses[-1], 6) if adapted.losses else None,
                               "per_reference_half": self.fold_models is not None,
                               "cut_short": adapted.cut_short}
        if (fit := self.refinement) is not None:
            record["refine"] = {"ran": True, "steps": fit.steps, "seconds": round(fit.seconds, 2),
                                "pixels": fit.pixels, "held_out": fit.held_out,
                                "model_maps": self.recipe.refiner_maps, "forest": self.recipe.refiner_forest,
                                "final_loss": round(fit.loss, 6), "cut_short": fit.cut_short}
        return record


_STAGE_NAMES = {"calibrate": "calibration", "adapt": "adaptation", "refine": "the refiner"}

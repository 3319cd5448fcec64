"""The SINE model behind the harness's runner interface (``bench/evaluate.py``, :class:`baselines.Runner`).

Every reference gets a fresh copy of the base model; calibration, adaptation and the full-resolution
refiner run on the reference only, in that order, as in ``napari-sine propagate``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from baselines import Prediction

from sine_model.fitting.preparation import ReferencePreparation
from sine_model.postprocess.components import min_areas_by_class, semantic_components

__all__ = ["HARNESS_INSTANCE_SOURCES", "ModelRunner", "make_model"]

#: The model's instance answers the harness can score from one pass (``--instances``).
HARNESS_INSTANCE_SOURCES = ("queries", "semantic", "components")


class ModelRunner:
    """A SINE model behind the runner interface (:class:`baselines.Runner`)."""

    def __init__(self, model, name: str, *, pad: int, scale: float | None = 1.0, device: str | None = None,
                 modes: Sequence[str] = ("id", "instance", "semantic"), adapt_steps: int = 0,
                 instance_sources: Sequence[str] = HARNESS_INSTANCE_SOURCES, calibrate: bool | None = False,
                 refine_steps: int | None = 0, refine_with_model: bool | None = None,
                 refine_forest: bool | None = None, cross_fit: bool = True,
                 colour_features: bool = True) -> None:
        from sine_model.engine.propagator import Propagator

        self.name = name
        self.modes = tuple(modes)
        # All instance sources from one pass: the engine makes query instances, and the semantic answer's
        # instances are made here with the engine's own function, area floor and split rules
        # ("components": the same without the split, to measure it).
        sources = tuple(dict.fromkeys(instance_sources))
        engine_source = "queries" if "queries" in sources else "semantic"
        self.propagator = Propagator(model, device, pad=pad, scale=scale, instance_source=engine_source)
        self.variants = {f"[{source} instances]": f"instance@{source}" for source in sources} \
            if sources != (engine_source,) else {}
        # None: what the model's preset recipe says
        from sine_model.fitting.preparation import recipe_of

        recipe = recipe_of(self.propagator)
        self.refine_steps = recipe.refine_steps if refine_steps is None else int(refine_steps)
        calibrate = recipe.calibrate if calibrate is None else bool(calibrate)
        self.refine_fits: list = []  # sine_model.postprocess.pixel_refiner.RefinerFit per reference
        self.refine_with_model = refine_with_model
        self.refine_forest = refine_forest
        self.colour_features = colour_features  # the refiner's per-channel features of colour images
        self.cross_fit = cross_fit  # adapt per reference half when refining after adaptation
        if self.refine_steps > 0:  # the engine's instances come from the refined map
            self.variants = {"[refined instances]": "instance",
                             "[components instances]": "instance@components"}
        self._floor: dict[int, int] = {}
        self.base_model = model
        self.adapt_budget = int(adapt_steps)  # steps per adapted copy (seeded: runs repeat)
        self.adapt_steps: list[int] = []  # steps taken per reference (both copies when cross-fitted)
        self.stepped_aside: list[dict[str, str]] = []  # per reference: stage -> why it did not run
        self.id_crops = not self.adapt_budget  # adapting once more per crop pair would double the time
        self.calibrate = calibrate
        self.scale = None if scale is None else float(scale)  # None: automatic, from the objects' size
        self.scale_choices: list[dict] = []  # per reference: the working scale and why
        self.calibrations: list = []  # sine_model.fitting.calibration.Calibration per reference
        self._ref_ndim = 2

    def fit(self, image: np.ndarray, labels: np.ndarray, classes=None) -> None:
        # every reference adapts a fresh copy of the base model (never the previous reference's)
        self.propagator.model = self.base_model
        self.propagator.clear_calibration(self.scale)  # undo the previous reference's calibration
        prepared = ReferencePreparation(  # stages that cannot work on a reference step aside
            self.propagator, [(image, labels)], classes, calibrate=self.calibrate,
            adapt_steps=self.adapt_budget, refine_steps=self.refine_steps, cross_fit=self.cross_fit,
            refine_with_model=self.refine_with_model, refine_forest=self.refine_forest,
            colour_features=self.colour_features,
        ).run()
        self.stepped_aside.append(dict(prepared.stepped_aside))
        if prepared.scale_choice is not None:
            self.scale_choices.append(prepared.scale_choice.as_dict())
        if self.calibrate:
            self.calibrations.append(prepared.calibration)
        if prepared.adaptation is not None:
            self.adapt_steps.append(prepared.adaptation.steps)
        if prepared.refinement is not None:
            self.refine_fits.append(prepared.refinement)
        self._ref_ndim = np.ndim(image)
        self._floor = min_areas_by_class([np.asarray(labels)], defaultdict(lambda: 1))

    def _like_reference(self, image: np.ndarray) -> np.ndarray:
        # a gray image stored as RGB next to true gray ones: give the engine the reference's layout
        if image.ndim == 3 and self._ref_ndim == 2:
            return image.mean(-1).astype(image.dtype)
        if image.ndim == 2 and self._ref_ndim == 3:
            return np.repeat(image[..., None], 3, axis=-1)
        return image

    def predict(self, targets: Iterable[np.ndarray]) -> Iterator[Prediction]:
        images = [self._like_reference(np.asarray(t)) for t in targets]
        for result in self.propagator.propagate(images, modes=self.modes):
            pred = dict(result.labels)
            if self.variants:
                pred["instance@queries"] = pred["instance"]  # (refined instances when refining)
                steps = self.propagator.instance_steps()
                pred["instance@semantic"] = semantic_components(pred["semantic"], self._floor, steps=steps)[0]
                pred["instance@components"] = semantic_components(pred["semantic"], self._floor)[0]
            yield pred


def make_model(spec: str, device: str | None = None):
    """Build the model named by ``--model``: ``none``, ``random-tiny``, a preset name or a file.

    Returns
    -------
    tuple
        ``(model or None, default pad)``.
    """
    if spec == "none":
        return None, None
    if spec == "random-tiny":
        import torch

        from sine_model import EncoderConfig, build_sine

        torch.manual_seed(0)
        return build_sine(EncoderConfig("tiny", 32, 2, 2), dim=32, num_heads=4, ffn_dim=64,
                          num_decoder_layers=3, num_queries=10).eval(), 112
    from sine_model import from_pretrained

    model = from_pretrained(spec, device)
    return model, model.preset.input.pad_size

"""ReferencePreparation: calibrate → adapt → refine in that order, cross-fitting only before a refiner."""

from __future__ import annotations

import numpy as np
import pytest
from test_adapt import blob_pair, tiny_embedded

import sine_model.fitting.adaptation as adapt_module
import sine_model.fitting.calibration as calibration_module
import sine_model.fitting.refiner as refinement_module
from sine_model.engine.inputs import PropagationError
from sine_model.engine.propagator import Propagator
from sine_model.fitting.preparation import ReferencePreparation

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def spies(monkeypatch):
    """Replace the three stages with spies that record their order and arguments, and run the real ones."""
    calls: list[tuple[str, dict]] = []
    real = {"calibrate": calibration_module.calibrate, "adapt": adapt_module.adapt_propagator,
            "refine": refinement_module.fit_refiner}

    def spy(name):
        def stage(*args, **kwargs):
            calls.append((name, kwargs))
            return real[name](*args, **kwargs)
        return stage

    monkeypatch.setattr(calibration_module, "calibrate", spy("calibrate"))
    monkeypatch.setattr(adapt_module, "adapt_propagator", spy("adapt"))
    monkeypatch.setattr(refinement_module, "fit_refiner", spy("refine"))
    return calls


def engine() -> Propagator:
    return Propagator(tiny_embedded(), "cpu", pad=56)


def test_stages_run_in_order_and_announce_themselves(spies):
    propagator, pairs = engine(), [blob_pair(0)]
    preparation = ReferencePreparation(propagator, pairs, calibrate=True, adapt_steps=2, refine_steps=5)
    messages = []
    for message in preparation.stages():
        messages.append((message, [name for name, _ in spies]))  # what had run when it was announced
    assert [m.split()[0] for m, _ in messages] == ["encoding", "calibrating", "adapting", "fitting"]
    assert [ran for _, ran in messages] == [[], [], ["calibrate"], ["calibrate", "adapt"]]
    assert [name for name, _ in spies] == ["calibrate", "adapt", "refine"]
    adapt_kwargs, refine_kwargs = spies[1][1], spies[2][1]
    assert adapt_kwargs["cross_fit"] is True and adapt_kwargs["max_steps"] == 2
    # the refiner learns each half from the copy adapted on the other half
    assert preparation.fold_models is not None and len(preparation.fold_models) == 2
    assert refine_kwargs["fold_models"] is preparation.fold_models
    assert preparation.adaptation.steps <= 4  # two copies, two steps each
    assert propagator.model is preparation.adaptation.model and propagator.refiner is not None
    assert set(preparation.seconds) == {"calibrate", "adapt", "refine"}
    assert preparation.calibration.scale == propagator.scale


def test_adaptation_is_plain_without_a_refiner_and_ablations_pass_through(spies):
    preparation = ReferencePreparation(engine(), [blob_pair(0)], adapt_steps=1).run()
    assert [name for name, _ in spies] == ["adapt"] and spies[0][1]["cross_fit"] is False
    assert preparation.fold_models is None and preparation.calibration is None
    assert preparation.refinement is None and preparation.propagator.refiner is None
    spies.clear()
    ReferencePreparation(engine(), [blob_pair(0)], adapt_steps=1, refine_steps=2,
                         cross_fit=False, refine_with_model=False, colour_features=False).run()
    (_, adapt_kwargs), (_, refine_kwargs) = spies
    assert adapt_kwargs["cross_fit"] is False and refine_kwargs["fold_models"] is None
    assert refine_kwargs["use_model_maps"] is False and refine_kwargs["colour_features"] is False
    assert refine_kwargs["forest"] is False  # a model without a preset: the recipe's default, the MLP


def test_nothing_asked_sets_the_references_only(spies):
    propagator = engine()
    preparation = ReferencePreparation(propagator, [blob_pair(0)]).run()
    assert spies == [] and preparation.seconds == {}
    result = next(propagator.propagate([blob_pair(1)[0]], modes=("semantic",)))
    assert result.labels["semantic"].shape == (72, 72)


def test_references_are_checked_before_any_stage(spies):
    image, labels = blob_pair(0)
    with pytest.raises(PropagationError):
        ReferencePreparation(engine(), [(image, labels[:40])], calibrate=True, adapt_steps=5).run()
    assert spies == []
    with pytest.raises(ValueError, match="adapt_steps=-1"):
        ReferencePreparation(engine(), [(image, labels)], adapt_steps=-1)


def test_an_uncalibratable_reference_steps_aside_and_the_run_goes_on():
    image, _ = blob_pair(0)
    corner = np.zeros(image.shape, np.int32)
    corner[2:8, 2:8] = 1  # objects in one quarter only: no halves to score a choice on
    propagator = engine()
    preparation = ReferencePreparation(propagator, [(image, corner)], calibrate=True, refine_steps=3).run()
    assert preparation.calibration is None and propagator.scale == 1.0
    assert "too few objects" in preparation.stepped_aside["calibrate"]
    assert preparation.refinement is not None  # the later stages still run
    lines = preparation.report()
    assert lines[0].startswith("calibration stepped aside: too few objects") and len(lines) == 2
    record = preparation.provenance()
    assert record["calibrate"] == {"ran": False, "stepped_aside": preparation.stepped_aside["calibrate"]}
    assert record["refine"]["ran"] is True
    assert record["recipe"] == "calibrate + refine 3 steps (MLP on image features and the model's maps)"
    assert record["refine"]["model_maps"] is True and record["refine"]["forest"] is False


def test_the_recipe_comes_from_the_models_preset_and_arguments_change_it(spies):
    from sine_model.fitting.preparation import recipe_of
    from sine_model.hub.presets import EMBEDDED_PRESET, FittingRecipe, get_preset

    propagator = engine()
    assert recipe_of(propagator) == FittingRecipe()  # a model without a preset: no fitting
    propagator.model.preset = get_preset(EMBEDDED_PRESET)
    embedded = get_preset(EMBEDDED_PRESET).recipe
    assert recipe_of(propagator) == embedded and embedded.refine_steps > 0
    # measured best on the shared sets (docs/quality.md): MLP + forest on image features, no calibration
    assert not embedded.calibrate and embedded.refiner_forest and not embedded.refiner_maps
    preparation = ReferencePreparation(propagator, [blob_pair(0)], calibrate=False, refine_steps=2)
    assert preparation.recipe.describe() == "refine 2 steps (MLP + forest on image features)"
    changed = ReferencePreparation(propagator, [blob_pair(0)], refine_with_model=True, refine_forest=False)
    assert changed.recipe.describe().endswith("(MLP on image features and the model's maps)")
    assert ReferencePreparation(propagator, [blob_pair(0)]).recipe.describe() == embedded.describe()
    preparation.run()
    assert [name for name, _ in spies] == ["refine"] and preparation.refinement.steps == 2
    assert spies[0][1]["seed"] == 0  # seeded
    assert spies[0][1]["forest"] is True and spies[0][1]["use_model_maps"] is False
    assert preparation.propagator.refiner.forest is not None
    assert "refiner (MLP + random forest)" in preparation.report()[-1]

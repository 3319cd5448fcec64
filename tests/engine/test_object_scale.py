"""The automatic working scale: chosen from the reference objects' size, given scales kept, capped."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from conftest import build_tiny

from sine_model import EMBEDDED_PRESET, get_preset
from sine_model.engine.object_scale import ScaleChoice, choose_object_scale, median_object_diameter
from sine_model.engine.propagator import Propagator
from sine_model.engine.resources import automatic_scale_cap
from sine_model.hub.presets import InputSpec

BAND = (28.0, 128.0)


def discs(radius: int, count: int = 4, side: int = 200, first_id: int = 1) -> np.ndarray:
    """``count`` discs of ``radius`` along the diagonal, ids from ``first_id``."""
    labels = np.zeros((side, side), np.int64)
    yy, xx = np.mgrid[:side, :side]
    step = side // (count + 1)
    for k in range(count):
        centre = step * (k + 1)
        labels[(yy - centre) ** 2 + (xx - centre) ** 2 <= radius**2] = first_id + k
    return labels


def test_median_diameter_of_discs_and_huge_ids():
    """Equivalent diameter 2√(area/π) of discs is about twice their radius; ids of 2**40 are not indices."""
    assert median_object_diameter([discs(10)]) == pytest.approx(20, abs=1)
    assert median_object_diameter([discs(10, first_id=2**40)]) == pytest.approx(20, abs=1)
    assert median_object_diameter([np.zeros((5, 5), int)]) is None


@pytest.mark.parametrize(("radius", "expected"), [(17, 1.0), (4, 3.5), (100, 0.64)])
def test_scale_brings_the_median_into_the_band(radius, expected):
    """Inside the band: 1 (the sample's nuclei are 34 px); below: to the low end; above: to the high end."""
    choice = choose_object_scale([discs(radius, count=1, side=300)], BAND, cap=8.0)
    assert choice.automatic and not choice.capped
    assert choice.scale == pytest.approx(expected, rel=0.05)
    assert f"scale {choice.scale:g} (automatic" in choice.describe()


def test_no_band_or_no_object_keeps_native_pixels():
    assert choose_object_scale([discs(3)], None, cap=8.0).scale == 1.0
    choice = choose_object_scale([np.zeros((9, 9), int)], BAND, cap=8.0)
    assert choice.scale == 1.0 and "no object" in choice.describe()


def test_a_huge_upscale_is_capped_with_a_line():
    """1-px objects would need scale 28: capped, and the line says so and what to do."""
    labels = np.zeros((50, 50), int)
    labels[::5, ::5] = np.arange(1, 101).reshape(10, 10)
    choice = choose_object_scale([labels], BAND, cap=8.0)
    assert choice.capped and choice.scale == 8.0
    assert "capped by the resource guard" in choice.describe() and "--scale" in choice.describe()


def test_cap_is_half_the_scale_limit_and_shrinks_with_free_memory():
    """224 / 14 = 16 is the largest scale accepted; automatic ones take at most half, less when memory
    is short."""
    assert automatic_scale_cap(224, 14, 56, [(100, 100)], 60, free=1 << 40) == 8.0
    short = automatic_scale_cap(224, 14, 56, [(2000, 2000)], 60, free=1 << 30)
    assert 1.0 <= short < 8.0
    assert automatic_scale_cap(224, 14, 56, [(20000, 20000)], 60, free=1 << 20) == 1.0


@pytest.fixture(scope="module")
def banded_model():
    """The tiny model with a preset that records the embedded model's object sizes."""
    model = build_tiny()
    model.preset = types.SimpleNamespace(input=InputSpec(pad_size=112, object_diameter_px=BAND),
                                         instance_source="queries", id_source="queries")
    return model


def _pair(radius: int):
    labels = discs(radius, count=3, side=120)
    image = np.where(labels > 0, 200, 30).astype(np.uint8)
    return image, labels


def test_propagator_chooses_the_scale_when_none_is_given(banded_model):
    """No scale: small objects (median 8 px) are enlarged 3.5 times, and scale_choice says why; a given
    scale is kept; set_scale(None) returns to automatic."""
    propagator = Propagator(banded_model, "cpu")
    propagator.set_references([_pair(4)])
    assert propagator.scale == pytest.approx(28 / median_object_diameter([_pair(4)[1]]), rel=0.05)
    assert propagator.scale_choice.automatic and propagator.scale_choice.as_dict()["median_diameter"] < 10
    assert propagator.tile_extent == int(112 / propagator.scale)
    given = Propagator(banded_model, "cpu", scale=1.0)
    given.set_references([_pair(4)])
    assert given.scale == 1.0 and given.scale_choice.describe() == "scale 1 (given)"
    given.set_scale(None)
    given.set_references([_pair(4)])
    assert given.scale == propagator.scale


def test_large_enough_objects_keep_native_pixels(banded_model):
    propagator = Propagator(banded_model, "cpu")
    propagator.set_references([_pair(17)])
    assert propagator.scale == 1.0 and "within the 28-128 px" in propagator.scale_choice.describe()


def test_models_without_a_band_keep_native_pixels():
    """The official model (no object_diameter_px) and models without a preset: scale 1."""
    assert dataclasses.fields(InputSpec)  # (the field exists with a default of None)
    assert InputSpec().object_diameter_px is None
    assert get_preset(EMBEDDED_PRESET).input.object_diameter_px == BAND
    propagator = Propagator(build_tiny(), "cpu", pad=112)
    propagator.set_references([_pair(4)])
    assert propagator.scale == 1.0


def test_preset_refuses_a_bad_band():
    with pytest.raises(ValueError, match="object_diameter_px"):
        InputSpec(object_diameter_px=(30.0, 10.0))


def test_scale_choice_record_is_plain():
    record = ScaleChoice(2.0, automatic=True, median_diameter=14.0, band=BAND).as_dict()
    assert record == {"scale": 2.0, "automatic": True, "median_diameter": 14.0, "band": [28.0, 128.0],
                      "capped": False}


def test_the_fitting_report_and_provenance_say_the_scale(banded_model):
    """An automatic working scale is in the preparation's provenance, and a report line when it is not
    1; a given one is neither (the caller records its own parameters)."""
    from sine_model.fitting.preparation import ReferencePreparation

    propagator = Propagator(banded_model, "cpu")
    prepared = ReferencePreparation(propagator, [_pair(4)], calibrate=False, adapt_steps=0,
                                    refine_steps=0).run()
    assert prepared.provenance()["scale"]["automatic"] and prepared.provenance()["scale"]["scale"] > 3
    assert prepared.report()[0].startswith("working scale 3.5 (automatic: reference objects' median")
    native = ReferencePreparation(propagator, [_pair(17)], calibrate=False, adapt_steps=0,
                                  refine_steps=0).run()
    assert native.report() == [] and native.provenance()["scale"]["scale"] == 1.0
    given = ReferencePreparation(Propagator(banded_model, "cpu", scale=2.0), [_pair(4)], calibrate=False,
                                 adapt_steps=0, refine_steps=0).run()
    assert "scale" not in given.provenance() and given.report() == []  # a parameter the caller knows

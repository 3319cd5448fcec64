"""``napari-sine propagate`` end to end with a tiny random model: outputs, options, overwrite, Ctrl-C.

Bad input is in test_cli_bad_input.py.
"""

from __future__ import annotations

import os
import signal

import cli_helpers
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from cli_helpers import H, W, propagate, run, scores

from sine_model.engine.propagator import Propagator
from sine_model.fitting.preparation import MAX_STAGE_SECONDS

tiny_model, data = cli_helpers.tiny_model, cli_helpers.data  # the shared fixtures (tiny_model: autouse)

# ------------------------------------------------------------------------------------ happy paths


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.startswith("napari-sine ")
    code, out, _ = run(capsys)
    assert code == 0 and "propagate" in out
    code, out, _ = run(capsys, "propagate", "--help")
    assert code == 0 and "--stack-axis" in out and "--ref-labels" in out


def test_tiff_stack_end_to_end(capsys, data):
    code, stdout, err = propagate(capsys, data, "--stack-axis", "0", "--threshold-id", "0")
    assert code == 0, err
    out = data / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "labels_id.tif", "labels_instance.tif", "labels_semantic.tif", "scores.csv"]
    for mode in ("id", "instance", "semantic"):
        stack = tifffile.imread(out / f"labels_{mode}.tif")
        assert stack.shape == (3, H, W) and stack.dtype == np.uint32
    ids = tifffile.imread(out / "labels_id.tif")
    assert set(np.unique(ids)) <= {0, 3, 7}  # ID proposals keep the reference's label values
    rows = scores(out)
    assert rows and list(rows[0]) == ["target", "label", "mode", "score", "source"]
    assert {int(r["target"]) for r in rows} <= {0, 1, 2}
    assert "Wrote 3 target(s)" in stdout and "target" in err  # the progress bar is on stderr


def test_png_list_with_rgb_and_mode_subset(capsys, data):
    rng = np.random.default_rng(1)
    iio.imwrite(data / "ref.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    iio.imwrite(data / "labels.png", tifffile.imread(data / "labels.tif").astype(np.uint8))
    for name in ("a.png", "b.jpg"):
        iio.imwrite(data / name, rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    code, _, err = propagate(capsys, data, "--modes", "id,semantic", "--classes", "3:1,7:2",
                             targets=("a.png", "b.jpg"), ref="ref.png", labels="labels.png")
    assert code == 0, err
    out = data / "out"
    assert sorted(p.name for p in out.iterdir()) == ["labels_id.tif", "labels_semantic.tif", "scores.csv"]
    semantic = tifffile.imread(out / "labels_semantic.tif")
    assert semantic.shape == (2, H, W) and set(np.unique(semantic)) <= {0, 1, 2}
    assert {r["mode"] for r in scores(out)} <= {"id", "semantic"}


@pytest.fixture
def made(monkeypatch) -> list[Propagator]:
    """Every Propagator the command builds, in order."""
    built: list[Propagator] = []
    init = Propagator.__init__

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Propagator, "__init__", recording_init)
    return built


def test_instances_option_picks_the_instance_source(capsys, data, made):
    from sine_model.postprocess.components import (
        instance_steps_by_class,
        min_areas_by_class,
        semantic_components,
    )

    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--instances", "semantic",
                             "--threshold-semantic", "0.2")
    assert code == 0, err
    assert made[-1].instance_source == "semantic"
    out = data / "out"
    semantic = tifffile.imread(out / "labels_semantic.tif")
    instance = tifffile.imread(out / "labels_instance.tif")
    floor = min_areas_by_class([tifffile.imread(data / "labels.tif")], {3: 1, 7: 1})
    steps = instance_steps_by_class([tifffile.imread(data / "labels.tif")], {3: 1, 7: 1})
    for plane in range(3):
        expected = semantic_components(semantic[plane], floor, steps=steps)[0]
        np.testing.assert_array_equal(instance[plane], expected)
    assert propagate(capsys, data, "--stack-axis", "0", "--overwrite")[0] == 0
    assert made[-1].instance_source == "queries"  # the tiny model has no preference: official
    code, _, err = run(capsys, "propagate", "--instances", "watershed")
    assert code == 2 and "invalid choice" in err


def test_calibrate_option_chooses_the_scale_on_the_references(capsys, data, made):
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--calibrate", "--instances", "semantic")
    assert code == 0, err
    assert "calibrated on the references" in err and "held-out instance F1" in err
    chosen = float(err.split("scale ")[1].split(",")[0])
    assert made[-1].scale == chosen and made[-1]._calibrated_steps is not None
    assert tifffile.imread(data / "out" / "labels_instance.tif").shape == (3, H, W)
    corner = np.zeros((H, W), np.uint16)
    corner[2:6, 2:6] = 1  # objects in one quarter only: no halves to cross-validate on
    tifffile.imwrite(data / "corner.tif", corner)
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--calibrate", "--overwrite",
                             labels="corner.tif")
    # calibration steps aside with one line saying why, and the run goes on with the defaults
    assert code == 0 and "Traceback" not in err, err
    assert "calibration stepped aside: too few objects (1 labelled" in err and made[-1].scale == 1.0
    assert tifffile.imread(data / "out" / "labels_instance.tif").shape == (3, H, W)


def test_refine_option_fits_the_refiner_on_the_references(capsys, data, made):
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--refine", "2")
    assert code == 0, err
    assert "refiner (MLP) fitted on the references" in err and "halves predicted from each other" in err
    refiner = made[-1].refiner
    assert refiner is not None and refiner.class_ids == (1,)
    semantic = tifffile.imread(data / "out" / "labels_semantic.tif")
    instance = tifffile.imread(data / "out" / "labels_instance.tif")
    assert semantic.shape == instance.shape == (3, H, W)
    # the instances are the refined map's objects: each lies inside the refined semantic region
    assert not np.any((instance > 0) & (semantic == 0))
    assert ": 2 steps on" in err
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--refine", "0", "--overwrite")
    assert code == 2 and "--refine: needs a positive number of steps" in err and "--no-refine" in err
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--refine", "1.5", "--overwrite")
    assert code == 2 and "whole number of steps" in err  # a budget in steps, not seconds


def test_zarr_targets_and_zarr_output(capsys, data):
    zarr = pytest.importorskip("zarr")
    stack = np.random.default_rng(2).random((2, H, W)).astype(np.float32)
    z = zarr.open_array(str(data / "t.zarr"), mode="w", shape=stack.shape, chunks=(1, H, W), dtype="f4")
    z[:] = stack
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--format", "zarr", "--modes", "instance",
                             targets=("t.zarr",))
    assert code == 0, err
    result = zarr.open(str(data / "out" / "labels_instance.zarr"), mode="r")
    assert result.shape == (2, H, W) and result.dtype == np.uint32


def test_several_stack_files_are_chained(capsys, data):
    tifffile.imwrite(data / "two.tif", np.zeros((2, H, W), np.uint8), photometric="minisblack")
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--modes", "id",
                             targets=("stack.tif", "two.tif"))
    assert code == 0, err
    assert tifffile.imread(data / "out" / "labels_id.tif").shape == (5, H, W)


def test_targets_of_different_sizes_get_one_file_each(capsys, data):
    rng = np.random.default_rng(3)
    tifffile.imwrite(data / "small.tif", rng.integers(0, 255, (30, 40), dtype=np.uint8))
    tifffile.imwrite(data / "wide.tif", rng.integers(0, 255, (40, 90), dtype=np.uint8))
    code, _, err = propagate(capsys, data, "--modes", "semantic", targets=("small.tif", "wide.tif"))
    assert code == 0, err
    folder = data / "out" / "labels_semantic"
    shapes = [tifffile.imread(folder / name).shape for name in ("00000.tif", "00001.tif")]
    assert shapes == [(30, 40), (40, 90)]


def test_channel_axis(capsys, data):
    rng = np.random.default_rng(4)
    tifffile.imwrite(data / "ref.tif", rng.integers(0, 255, (H, W, 2), dtype=np.uint8))
    tifffile.imwrite(data / "two_channels.tif", rng.integers(0, 255, (H, W, 2), dtype=np.uint8))
    code, _, err = propagate(capsys, data, "--channel-axis", "2", "--modes", "id",
                             targets=("two_channels.tif",))
    assert code == 0, err
    assert tifffile.imread(data / "out" / "labels_id.tif").shape == (H, W)


def test_overwrite(capsys, data):
    assert propagate(capsys, data, "--stack-axis", "0")[0] == 0
    out = data / "out"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--modes", "id", "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # other modes' files stay
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []


# ------------------------------------------------------------------------------------- Ctrl-C


def stop_after(n: int, how: str):
    original = Propagator.propagate

    def patched(self, *args, **kwargs):
        for i, item in enumerate(original(self, *args, **kwargs)):
            if i == n:
                if how == "raise":
                    raise KeyboardInterrupt
                os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C while target n is computed
            yield item

    return patched


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_ctrl_c_keeps_finished_targets(capsys, data, monkeypatch, how):
    tifffile.imwrite(data / "stack.tif", np.zeros((5, H, W), np.uint8), photometric="minisblack")
    monkeypatch.setattr(Propagator, "propagate", stop_after(2, how))
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    kept = 2 if how == "raise" else 3  # a signal lets the current target finish
    assert code == 130, err
    assert f"after {kept} of 5 targets" in err and "labels_id.tif" in err
    out = data / "out"
    for mode in ("id", "instance", "semantic"):
        assert tifffile.imread(out / f"labels_{mode}.tif").shape == (kept, H, W)
    assert {int(r["target"]) for r in scores(out)} <= set(range(kept))
    assert [p for p in out.iterdir() if p.name.startswith(".")] == []


def test_ctrl_c_before_first_target_writes_nothing(capsys, data, monkeypatch):
    monkeypatch.setattr(Propagator, "propagate", stop_after(0, "raise"))
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert code == 130 and "nothing was written" in err
    assert not (data / "out").exists()


def test_adapt_option_fine_tunes_before_propagating(capsys, data, monkeypatch):
    import sine_model.fitting.adaptation as adapt_module

    calls = []
    real = adapt_module.adapt_propagator

    def spy(propagator, pairs, seconds, classes=None, cross_fit=False, max_steps=None, seed=0):
        calls.append((max_steps, cross_fit))
        assert seconds == MAX_STAGE_SECONDS  # a budget in steps; the time is only a safety cap
        return real(propagator, pairs, seconds, classes=classes, cross_fit=cross_fit, max_steps=max_steps)

    monkeypatch.setattr(adapt_module, "adapt_propagator", spy)
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--modes", "id", "--adapt", "1")
    assert code == 0, err
    assert calls == [(1, False)] and "adapted neck + decoder: 1 steps" in err
    assert tifffile.imread(data / "out" / "labels_id.tif").shape == (3, H, W)
    # with a refiner next, adapted per reference half (held-out answers for the refiner)
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--modes", "semantic", "--adapt", "1",
                             "--refine", "1", "--overwrite")
    assert code == 0, err
    assert calls[-1] == (1, True) and "refiner (MLP) fitted on the references" in err
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--adapt", "-2", "--overwrite")
    assert code == 2 and "--adapt: needs a positive number of steps" in err


def test_the_presets_recipe_runs_unless_told_otherwise(capsys, data, made, monkeypatch):
    import sine_model.fitting.preparation as preparation_module
    from sine_model.hub.presets import FittingRecipe

    recipe = FittingRecipe(calibrate=True, refine_steps=2)
    monkeypatch.setattr(preparation_module, "recipe_of", lambda propagator: recipe)
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert code == 0, err
    assert "fitting recipe: calibrate + refine 2 steps (MLP on image features and the model's maps)" in err
    assert "calibrated on the references" in err and ": 2 steps on" in err and made[-1].refiner is not None
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--no-calibrate", "--no-refine",
                             "--overwrite")
    assert code == 0, err
    assert "fitting recipe: none" in err and made[-1].refiner is None and "calibrated" not in err
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--no-calibrate", "--refine", "3",
                             "--refine-without-model", "--refine-forest", "--overwrite")
    assert code == 0, err
    assert "fitting recipe: refine 3 steps (MLP + forest on image features)" in err and ": 3 steps on" in err
    assert made[-1].refiner.forest is not None and not made[-1].refiner.use_model_maps

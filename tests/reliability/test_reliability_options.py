"""Reliability, surface "options": odd option values on the command line and in the Python API.

A bad value must be refused before any model work with one message that names the flag (``--scale``,
not ``scale``) on the command line, or the parameter in Python, and the fix; odd but valid values work.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import build_tiny
from reliability_helpers import (
    assert_message,
    assert_refused,
    note,
    propagate_cli,
    reference_pair,
    write_inputs,
)
from reliability_helpers import tiny_cli_model_fixture as tiny_cli_model_fixture  # fixture `tiny_cli_model`

from sine_model.engine import resources
from sine_model.engine.propagator import Propagator
from sine_model.errors import InputError, PropagationError


@pytest.fixture
def data(tmp_path) -> Path:
    return write_inputs(tmp_path / "in")


@pytest.mark.usefixtures("tiny_cli_model")
def test_unknown_modes(capsys, data, record_property):
    """Did: --modes id,everything; and propagate(modes=["everything"]) in Python. Must: exit 2 / an
    InputError naming the unknown mode and the known ones."""
    code, _, err = propagate_cli(capsys, data, "--modes", "id,everything")
    assert_refused(record_property, code, err, "everything", "id,instance,semantic", out=data / "out")
    propagator = Propagator(build_tiny(), "cpu", pad=112)
    propagator.set_references([reference_pair()])
    with pytest.raises(InputError, match="everything"):
        propagator.propagate(np.zeros((8, 8), np.uint8), ["everything"])


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize("text", ["1-1", "1:x", "0:1", ":"])
def test_malformed_classes(capsys, data, record_property, text):
    """Did: --classes 1-1, 1:x, 0:1 and ':'. Must: exit 2 with 'LABEL:CLASS' or 'positive'; no --out."""
    code, _, err = propagate_cli(capsys, data, "--classes", text)
    assert_refused(record_property, code, err, "--classes", out=data / "out")
    assert "LABEL:CLASS" in err or "positive" in err


def test_classes_missing_a_label_in_python(record_property):
    """Did: set_references with classes={3: 1} though label 7 exists. Must: names label 7 and the fix."""
    propagator = Propagator(build_tiny(), "cpu", pad=112)
    with pytest.raises(PropagationError) as err:
        propagator.set_references([reference_pair()], classes={3: 1})
    assert_message(record_property, err.value, "[7]", "give every labelled object a class")


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize("mode", ["id", "instance", "semantic"])
def test_nan_threshold_on_the_command_line(capsys, data, record_property, mode):
    """Did: --threshold-MODE nan. Must: exit 2 naming --threshold-MODE and 'finite' (was accepted: exit 0
    with empty maps)."""
    code, _, err = propagate_cli(capsys, data, f"--threshold-{mode}", "nan")
    assert_refused(record_property, code, err, f"--threshold-{mode}", "finite", out=data / "out")


@pytest.mark.parametrize("mode", ["id", "instance", "semantic"])
@pytest.mark.parametrize("value", [math.nan, math.inf, "high"])
def test_bad_threshold_in_python(record_property, mode, value):
    """Did: Propagator(score_thresholds={MODE: nan / inf / "high"}). Must: an InputError naming the mode
    (the instance threshold was silently ignored)."""
    with pytest.raises(InputError) as err:
        Propagator(build_tiny(), "cpu", pad=112, score_thresholds={mode: value})
    assert_message(record_property, err.value, mode, "score threshold")


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize("value", ["-1", "2"])
def test_extreme_but_valid_thresholds(capsys, data, record_property, value):
    """Did: --threshold-id/-instance/-semantic -1 (keep everything) and 2 (drop everything). Must: exit 0;
    with 2 every map is empty."""
    flags = [x for m in ("id", "instance", "semantic") for x in (f"--threshold-{m}", value)]
    code, out, err = propagate_cli(capsys, data, *flags)
    note(record_property, out or err)
    assert code == 0, err
    if value == "2":
        for mode in ("id", "instance", "semantic"):
            assert not tifffile.imread(data / "out" / f"labels_{mode}.tif").any(), mode


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf", "1e9"])
def test_bad_scale(capsys, data, record_property, value):
    """Did: --scale 0, -0.5, nan, inf and 1e9 (on 48×64 images). Must: exit 2 naming --scale and the
    allowed range, before any tile is planned (1e9 planned thousands of one-pixel tiles)."""
    code, _, err = propagate_cli(capsys, data, "--scale", value)
    assert_refused(record_property, code, err, "--scale", out=data / "out")


def test_huge_scale_in_python_is_refused_before_tiling(record_property):
    """Did: Propagator(scale=1e9). Must: PropagationError naming the largest usable scale (pad/patch)."""
    with pytest.raises(PropagationError) as err:
        Propagator(build_tiny(), "cpu", pad=112, scale=1e9)
    assert_message(record_property, err.value, "at most 8")


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize("value", ["100", "0", "-14"])
def test_pad_not_a_multiple_of_14(capsys, data, record_property, value):
    """Did: --pad 100, 0 and -14. Must: exit 2, '--pad must be a positive multiple of 14'."""
    code, _, err = run_with_pad(capsys, data, value)
    assert_refused(record_property, code, err, "--pad must be a positive multiple of 14", out=data / "out")


def run_with_pad(capsys, data: Path, pad: str):
    from reliability_helpers import run_cli

    return run_cli(capsys, "propagate", "--ref", data / "ref.tif", "--ref-labels", data / "labels.tif",
                   "--targets", data / "stack.tif", "--out", data / "out", "--device", "cpu", "--pad", pad)


@pytest.mark.usefixtures("tiny_cli_model")
@pytest.mark.parametrize(("flag", "value", "words"), [
    ("--adapt", "-1", "--adapt: needs a positive number of steps, got -1"),
    ("--refine", "0", "--refine: needs a positive number of steps, got 0"),
    ("--batch-size", "0", "--batch-size must be >= 1"),
    ("--batch-size", "-3", "--batch-size must be >= 1"),
])
def test_negative_budgets(capsys, data, record_property, flag, value, words):
    """Did: --adapt -1, --refine 0, --batch-size 0 and -3. Must: exit 2 naming the flag (not the
    parameter name) and what is allowed; no --out."""
    code, _, err = propagate_cli(capsys, data, flag, value)
    assert_refused(record_property, code, err, words, out=data / "out")


def test_memory_guard_refuses_what_cannot_fit(monkeypatch, record_property):
    """Did: a 2000×2000 target with the free memory reported as 64 MiB. Must: refused before the model
    call with the estimate in GiB, the free memory and a remedy (lower the scale)."""
    monkeypatch.setattr(resources, "available_bytes", lambda: 64 * 1024**2)
    propagator = Propagator(build_tiny(), "cpu", pad=112, cache_bytes=0)
    propagator.set_references([reference_pair()])
    calls = []
    monkeypatch.setattr(propagator, "_encode", lambda images: calls.append(images) or pytest.fail("ran"))
    with pytest.raises(PropagationError) as err:
        next(propagator.propagate(np.zeros((2000, 2000), np.uint8), ["semantic"]))
    assert_message(record_property, err.value, "GiB", "0.1 GiB are free", "lower the scale")
    assert not calls


@pytest.mark.usefixtures("tiny_cli_model")
def test_memory_guard_on_the_command_line(capsys, data, monkeypatch, record_property):
    """Did: napari-sine propagate with the free memory reported as 1 MiB. Must: exit 2 with the estimate
    and '--scale' as the remedy; nothing left in --out."""
    monkeypatch.setattr(resources, "available_bytes", lambda: 1024**2)
    code, _, err = propagate_cli(capsys, data)
    assert_refused(record_property, code, err, "GiB", "--scale", out=data / "out")


@pytest.mark.usefixtures("tiny_cli_model")
def test_stack_axis_on_a_single_image_on_the_command_line(capsys, data, record_property):
    """Did: --stack-axis 0 with a single 2D target file. Must: exit 2 saying to leave --stack-axis out,
    with the flag's name, not the parameter's (was 'target 0 has 1 dimensions (96,)')."""
    code, _, err = propagate_cli(capsys, data, "--stack-axis", "0", targets=("ref.tif",))
    assert_refused(record_property, code, err, "leave --stack-axis out", out=data / "out")
    assert "stack_axis" not in err

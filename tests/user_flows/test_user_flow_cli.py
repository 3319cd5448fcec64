"""The ``napari-sine`` command as a user runs it: a fresh process, the bundled sample, no napari.

``tests/test_cli*.py`` call ``sine_model.cli.main`` inside the test runner (torch, Qt and the triton
guard already imported, the environment monkeypatched); here the installed console script runs in a
process of its own, so its exit status, its output and the modules it imports are the user's.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import tifffile
from user_flow_helpers import (
    SAMPLE_DIR,
    assert_exit_ok,
    flow_result,
    napari_sine_command,
    run_flow,
    run_script,
    sample_targets,
)

MODES = ("id", "instance", "semantic")
OUTPUTS = tuple(f"labels_{mode}.tif" for mode in MODES) + ("scores.csv",)
TABLE_ROW = re.compile(r"^(target_\d+)\s+\d+\s+\d+\s+[\d.]+\s+\d+\s+[\d.]+\s+[\d.]+$", re.M)


@pytest.fixture(scope="module")
def headless_demo(tmp_path_factory) -> dict:
    """``napari-sine demo`` run in-process by a fresh interpreter without napari (once per module)."""
    tmp_path = tmp_path_factory.mktemp("headless-demo")
    process = run_script("headless_demo_modules.py", tmp_path, str(tmp_path / "out"))
    assert_exit_ok(process)
    return flow_result(process)


def test_headless_inference_imports_neither_napari_nor_timm(headless_demo):
    """The default model's inference needs none of the optional stacks (timm brings torchvision)."""
    assert headless_demo["status"] == 0
    loaded = set(headless_demo["loaded"])
    print(f"\nheavy modules after `napari-sine demo`: {sorted(loaded)}")
    assert not loaded & {"timm", "torchvision", "napari", "qtpy"}, sorted(loaded)


def test_headless_inference_imports_neither_dynamo_nor_triton(headless_demo):
    """Neither torch._dynamo nor triton is imported by loading and running the default model."""
    loaded = set(headless_demo["loaded"])
    assert not loaded & {"torch._dynamo", "triton"}, sorted(loaded)


def test_demo_command_writes_results_and_one_row_per_target(tmp_path):
    out = tmp_path / "demo"
    process = run_flow([*napari_sine_command(), "demo", "--out", str(out), "--device", "cpu"], tmp_path)
    assert_exit_ok(process)
    names = [path.stem for path in sample_targets()]
    rows = TABLE_ROW.findall(process.stdout)
    assert rows == names, process.stdout  # one row per target, in order
    _check_outputs(out, len(names), id_targets=())  # other fields of view: no ID answer is right


def test_propagate_command_on_the_sample_files(tmp_path):
    """The sample's targets, then the reference image itself: ID answers come back on the reference."""
    out = tmp_path / "propagated"
    targets = [*sample_targets(), SAMPLE_DIR / "reference.png"]
    process = run_flow([*napari_sine_command(), "propagate", "--ref", str(SAMPLE_DIR / "reference.png"),
                        "--ref-labels", str(SAMPLE_DIR / "reference_labels.tif"),
                        "--targets", *map(str, targets), "--out", str(out), "--device", "cpu"], tmp_path)
    assert_exit_ok(process)
    assert f"Wrote {len(targets)} target(s)" in process.stdout, process.stdout
    _check_outputs(out, len(targets), id_targets=(len(targets) - 1,))


def test_propagate_command_with_a_missing_file_says_so_in_one_line(tmp_path):
    missing = tmp_path / "no_such_target.png"
    out = tmp_path / "never"
    process = run_flow([*napari_sine_command(), "propagate", "--ref", str(SAMPLE_DIR / "reference.png"),
                        "--ref-labels", str(SAMPLE_DIR / "reference_labels.tif"),
                        "--targets", str(missing), "--out", str(out), "--device", "cpu"], tmp_path)
    assert process.returncode == 2, process.returncode  # bad input (an uncaught exception would be 1)
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in process.stderr, process.stderr
    assert lines[0].startswith("napari-sine propagate: error:") and str(missing) in lines[0], lines[0]
    assert not out.exists()  # checked before anything is written


def _check_outputs(out: Path, n_targets: int, id_targets: tuple[int, ...]) -> None:
    """The three label stacks (one page per target) and a scores table: instance and semantic proposals
    on every target, ID proposals on ``id_targets`` (views of the reference's scene)."""
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS)
    for mode in MODES:
        labels = tifffile.imread(out / f"labels_{mode}.tif")
        assert labels.shape[0] == n_targets and labels.dtype.kind == "u", (mode, labels.shape, labels.dtype)
        expected = id_targets if mode == "id" else range(n_targets)
        assert all(labels[index].any() for index in expected), f"a target without {mode} proposals"
    with open(out / "scores.csv", newline="", encoding="utf-8") as table:
        rows = list(csv.DictReader(table))
    expected_modes = set(MODES) if id_targets else set(MODES) - {"id"}
    assert rows and {row["mode"] for row in rows} >= expected_modes, rows[:3]
    assert {int(row["target"]) for row in rows} == set(range(n_targets))

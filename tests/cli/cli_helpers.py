"""Shared set-up of the ``napari-sine propagate`` tests: a tiny reference, labels and a 3-target stack,
the command runner, the bad-input check and the fixtures both modules use (imported by test_cli.py and
test_cli_bad_input.py; a tests/cli/conftest.py would shadow the ``conftest`` they import from)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import build_tiny, run_cli

from sine_model.cli import common

H, W = 48, 64
FAST = ["--pad", "112", "--device", "cpu"]


@pytest.fixture(autouse=True)
def tiny_model(monkeypatch):
    """Every ``load_model`` of the CLI gives the tiny model (autouse where imported)."""
    monkeypatch.setattr(common, "load_model", lambda args: build_tiny())


@pytest.fixture
def data(tmp_path) -> Path:
    return make_data(tmp_path)


def make_data(folder: Path) -> Path:
    """``ref.tif``, ``labels.tif`` (objects 3 and 7) and ``stack.tif`` (3 targets) in ``folder``."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W), dtype=np.uint8)
    labels = np.zeros((H, W), dtype=np.uint16)
    labels[5:20, 5:25] = 3
    labels[25:45, 30:60] = 7
    tifffile.imwrite(folder / "ref.tif", image)
    tifffile.imwrite(folder / "labels.tif", labels)
    tifffile.imwrite(folder / "stack.tif", rng.integers(0, 255, (3, H, W), dtype=np.uint8),
                     photometric="minisblack")
    return folder


run = run_cli  # (the CLI tests' short name)


def propagate(capsys, data: Path, *extra: str, targets=("stack.tif",), ref="ref.tif",
              labels="labels.tif") -> tuple[int, str, str]:
    target_paths = [str(data / t) for t in targets]
    return run(capsys, "propagate", "--ref", data / ref, "--ref-labels", data / labels,
               "--targets", *target_paths, "--out", data / "out", *FAST, *extra)


def scores(out: Path) -> list[dict[str, str]]:
    with open(out / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_bad_input(code: int, err: str, out: Path, *words: str) -> None:
    assert code == 2, err
    assert "error:" in err and "Traceback" not in err
    for word in words:
        assert word in err, err
    assert not out.exists(), sorted(p.name for p in out.iterdir())

"""Shared set-up of the ``napari-sine propagate`` tests: a tiny reference, labels and a 3-target stack,
the command runner and the bad-input check (imported by test_cli.py and test_cli_bad_input.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile

from sine_model import cli

H, W = 48, 64
FAST = ["--pad", "112", "--device", "cpu"]


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


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


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

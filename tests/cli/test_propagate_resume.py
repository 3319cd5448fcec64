"""``napari-sine propagate --format ome-zarr`` survives ``kill -9`` and Ctrl-C: the same command resumes.

Each run is a real process (``python -m sine_model.cli``). The kill comes once the manifest shows a few
finished targets (polled, bounded by a count); the resumed output must equal an uninterrupted run's,
file for file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tifffile

pytest.importorskip("ome_zarr")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scaleout"))
from scale_helpers import PAD, sample_pair, small_targets, tree  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N = 40
POLLS, POLL_SECONDS = 6000, 0.05  # at most 5 minutes of waiting for the first finished targets


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    image, labels = sample_pair()
    tifffile.imwrite(folder / "ref.tif", image)
    tifffile.imwrite(folder / "ref_labels.tif", labels.astype("uint16"))
    tifffile.imwrite(folder / "stack.tif", small_targets(N))
    return folder


def command(inputs: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sine_model.cli", "propagate", "--ref", str(inputs / "ref.tif"),
            "--ref-labels", str(inputs / "ref_labels.tif"), "--targets", str(inputs / "stack.tif"),
            "--stack-axis", "0", "--format", "ome-zarr", "--model", "sine-embedded", "--pad", str(PAD),
            "--no-calibrate", "--no-refine",  # resuming is the point here, not the preset's fitting recipe
            "--device", "cpu", "--out", str(out)]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def finished_count(out: Path) -> int:
    try:
        ranges = json.loads((out / "sine-run.json").read_text())["finished"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(b - a for a, b in ranges)


def start_and_stop(inputs: Path, out: Path, sig: int, after: int) -> subprocess.CompletedProcess:
    """Start a run and send ``sig`` once ``after`` more targets than now are finished."""
    before = finished_count(out)
    process = subprocess.Popen(command(inputs, out), env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for _ in range(POLLS):
        if finished_count(out) >= before + after or process.poll() is not None:
            break
        time.sleep(POLL_SECONDS)
    process.send_signal(sig)
    stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, inputs):
    """The output directory of an uninterrupted run."""
    out = tmp_path_factory.mktemp("whole") / "out"
    done = subprocess.run(command(inputs, out), env=environment(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def whole(whole_run):
    """The files of an uninterrupted run."""
    return tree(whole_run)


def test_kill_9_then_ctrl_c_then_resume_equals_uninterrupted_run(tmp_path, inputs, whole):
    out = tmp_path / "out"
    killed = start_and_stop(inputs, out, signal.SIGKILL, after=3)
    assert killed.returncode == -signal.SIGKILL
    after_kill = finished_count(out)
    assert 3 <= after_kill < N  # killed mid-run
    assert not (out / "scores.csv").exists()

    interrupted = start_and_stop(inputs, out, signal.SIGINT, after=2)
    assert interrupted.returncode == 130, interrupted.stderr
    assert "Run the same command again to resume" in interrupted.stderr
    assert after_kill + 2 <= finished_count(out) < N

    resumed = subprocess.run(command(inputs, out), env=environment(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "finished earlier" in resumed.stdout
    assert tree(out) == whole


def test_scheduler_local_writes_the_same_files(tmp_path, inputs, whole, one_thread, capsys):
    from sine_model.cli import main

    distributed = pytest.importorskip("distributed")
    assert distributed
    out = tmp_path / "out"
    assert main(command(inputs, out)[3:] + ["--scheduler", "local:2"]) == 0
    assert f"Wrote {N} target(s)" in capsys.readouterr().out
    assert tree(out) == whole  # two worker processes, same files as one process


def test_changed_option_is_refused_and_nothing_changes(tmp_path, inputs, whole_run, whole, capsys):
    import shutil

    from sine_model.cli import main

    out = tmp_path / "out"
    shutil.copytree(whole_run, out)
    assert main(command(inputs, out)[3:] + ["--threshold-semantic", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "thresholds.semantic: 0.7 -> 0.5" in err and "--restart" in err
    assert tree(out) == whole

"""Reliability, surface "stops": a real ``napari-sine propagate`` process stopped by a signal mid-run.

Ctrl-C (SIGINT) and SIGTERM after the first result must keep the finished targets, readable, with no
half-written or temporary file left; SIGKILL cannot be cleaned up after, so what it leaves must be
clearly temporary (hidden ``.NAME.partial-PID`` files) and the next run in the folder removes them.

Each case runs the embedded model in a fresh process on 150 small targets cut from the bundled sample,
so a signal sent after the first result always lands mid-run. Slow: run by ``bench/reliability.py``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from reliability_helpers import note, slow

from sine_model.sample_data import load_sample

N_TARGETS = 150
PARTIAL = re.compile(r"^\..+\.partial-(\d+)$")
WAIT_S = 300  # a ceiling on waiting for the process, never a speed requirement

pytestmark = slow


def napari_sine() -> str:
    path = Path(sys.executable).parent / "napari-sine"
    if not path.is_file():
        pytest.fail(f"the napari-sine console script is not installed next to {sys.executable}")
    return str(path)


@pytest.fixture
def inputs(tmp_path) -> Path:
    sample = load_sample()
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "ref.tif", sample.reference)
    tifffile.imwrite(folder / "labels.tif", sample.reference_labels)
    image = np.asarray(sample.targets[0])
    crops = [image[(i * 7) % 400 : (i * 7) % 400 + 96, (i * 11) % 560 : (i * 11) % 560 + 96]
             for i in range(N_TARGETS)]
    tifffile.imwrite(folder / "stack.tif", np.stack(crops), photometric="minisblack")
    return folder


def start(inputs: Path, out: Path, tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "SINE_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    command = [napari_sine(), "propagate", "--ref", str(inputs / "ref.tif"), "--ref-labels",
               str(inputs / "labels.tif"), "--targets", str(inputs / "stack.tif"), "--stack-axis", "0",
               "--out", str(out), "--model", "sine-embedded", "--device", "cpu", "--modes",
               "instance,semantic", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_first_result(process: subprocess.Popen, out: Path) -> None:
    """Until the first target's labels are in the temporary stack file (it grows when a page is written)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before any result:\n"
                        f"{process.stderr.read()[-3000:]}")
        parts = list(out.glob(".labels_semantic.tif.partial-*")) if out.is_dir() else []
        if parts and parts[0].stat().st_size > 0:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    process.kill()
    pytest.fail("no result within the ceiling")


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=WAIT_S)
    return process.returncode, stdout, stderr


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_after_first_result_keeps_finished_targets(inputs, tmp_path, record_property, how):
    """Did: Ctrl-C (SIGINT) or SIGTERM to a running propagate after its first result. Must: exit 130,
    the finished targets kept and readable (labels pages = rows reported), scores.csv present, no
    temporary or half-written file left (SIGTERM used to leave .partial files)."""
    out = tmp_path / "out"
    process = start(inputs, out, tmp_path)
    wait_for_first_result(process, out)
    process.send_signal(how)
    code, _, stderr = finish(process)
    note(record_property, stderr)
    assert code == 130, stderr[-3000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["labels_instance.tif", "labels_semantic.tif", "scores.csv"], names
    kept = int(re.search(r"after (\d+) of", stderr).group(1))
    assert 1 <= kept < N_TARGETS
    pages = tifffile.imread(out / "labels_semantic.tif")
    assert (pages.shape[0] if pages.ndim == 3 else 1) == kept


def test_sigkill_leaves_only_temporaries_that_the_next_run_removes(inputs, tmp_path, record_property):
    """Did: SIGKILL to a running propagate after its first result, then the same command again. Must:
    after the kill only hidden .NAME.partial-PID files of the dead process are in --out (no file under a
    result's name); the next run succeeds and removes them."""
    out = tmp_path / "out"
    process = start(inputs, out, tmp_path)
    wait_for_first_result(process, out)
    process.kill()
    process.wait(timeout=WAIT_S)
    left = sorted(p.name for p in out.iterdir())
    assert left and all(PARTIAL.match(name) and PARTIAL.match(name).group(1) == str(process.pid)
                        for name in left), left
    small = tmp_path / "small"
    small.mkdir()
    tifffile.imwrite(small / "stack.tif", tifffile.imread(inputs / "stack.tif")[:2], photometric="minisblack")
    for name in ("ref.tif", "labels.tif"):
        (small / name).write_bytes((inputs / name).read_bytes())
    code, stdout, stderr = finish(start(small, out, tmp_path))
    note(record_property, f"left after SIGKILL: {left}; next run: {stdout.strip() or stderr[-300:]}")
    assert code == 0, stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["labels_instance.tif", "labels_semantic.tif",
                                                     "scores.csv"]

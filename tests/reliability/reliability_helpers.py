"""Helpers of the reliability cases (``tests/reliability/``): bad or odd input, stops, and what must hold.

Every case states in its docstring what was done and what must hold, and records the message the user
got (``record_property("message", ...)``) so that ``bench/reliability.py`` can write the table of
``docs/reliability.md`` (case, surface, outcome, message) from the same run.

Slow cases (real processes stopped by signals, the embedded model on the bundled sample) are marked
:data:`slow`: skipped in the default test run, run by ``bench/reliability.py``, which sets
``SINE_RELIABILITY_ALL=1`` (set it yourself to run them with pytest).

There is deliberately no ``conftest.py`` here (a second ``conftest`` module would shadow
``tests/conftest.py``); test modules import what they use.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import build_tiny, run_cli

from sine_model.cli import common

#: Set (to anything) to run the slow cases too; ``bench/reliability.py`` sets it.
ALL_ENV = "SINE_RELIABILITY_ALL"
slow = pytest.mark.skipif(not os.environ.get(ALL_ENV),
                          reason=f"slow reliability case: run by bench/reliability.py (or set {ALL_ENV}=1)")

H, W = 48, 64
FAST = ("--pad", "112", "--device", "cpu")


@pytest.fixture(name="tiny_cli_model")
def tiny_cli_model_fixture(monkeypatch):
    """The command line's model is the tiny random one (seconds on a CPU, nothing downloaded)."""
    monkeypatch.setattr(common, "load_model", lambda args: build_tiny())


def reference_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 48 × 64 uint8 reference image with two labelled objects (ids 3 and 7)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (H, W), dtype=np.uint8)
    labels = np.zeros((H, W), dtype=np.uint16)
    labels[5:20, 5:25] = 3
    labels[25:45, 30:60] = 7
    return image, labels


def write_inputs(folder: Path) -> Path:
    """``ref.tif``, ``labels.tif`` (:func:`reference_pair`) and a 3-target ``stack.tif`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = reference_pair()
    tifffile.imwrite(folder / "ref.tif", image)
    tifffile.imwrite(folder / "labels.tif", labels)
    rng = np.random.default_rng(1)
    tifffile.imwrite(folder / "stack.tif", rng.integers(0, 255, (3, H, W), dtype=np.uint8),
                     photometric="minisblack")
    return folder


def propagate_cli(capsys, folder: Path, *extra: object, targets: tuple[str, ...] = ("stack.tif",),
                  ref: str = "ref.tif", labels: str = "labels.tif", out: Path | None = None
                  ) -> tuple[int, str, str]:
    """``napari-sine propagate`` on files in ``folder`` (tiny model, pad 112, CPU; ``stack.tif`` is a stack
    along axis 0)."""
    given = "--stack-axis" in map(str, extra)
    stack = ("--stack-axis", "0") if targets == ("stack.tif",) and not given else ()
    return run_cli(capsys, "propagate", "--ref", folder / ref, "--ref-labels", folder / labels,
                   "--targets", *[folder / t for t in targets], "--out", out or folder / "out", *FAST,
                   *stack, *extra)


def note(record_property, message: str) -> None:
    """Record the message the user got (its last non-empty line, shortened) for the report."""
    lines = [line.strip() for line in str(message).replace("\r", "\n").splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]  # not argparse's usage or a progress bar
    text = errors[-1] if errors else " ".join(lines[-3:])
    text = re.sub(r"/\S*/pytest-\d+/[^/\s]+/", "TMP/", text)  # the test's temporary folder, shortened
    record_property("message", text[:400])


def assert_refused(record_property, code: int, err: str, *words: str, out: Path | None = None) -> None:
    """Exit status 2, one ``error:`` message without a traceback, holding ``words``; ``out`` not made."""
    note(record_property, err)
    assert code == 2, f"exit status {code}; stderr:\n{err}"
    assert "error:" in err and "Traceback" not in err, err
    for word in words:
        assert word in err, f"{word!r} not in: {err}"
    if out is not None:
        assert not out.exists(), sorted(p.name for p in out.iterdir())


def assert_message(record_property, exc: BaseException, *words: str) -> None:
    """The exception's message holds ``words`` (and is recorded for the report)."""
    text = str(exc)
    note(record_property, f"{type(exc).__name__}: {text}")
    for word in words:
        assert word in text, f"{word!r} not in: {text}"


def tiff_declaring(path: Path, height: int, width: int, bits: int = 16, strip_bytes: int = 4) -> Path:
    """A tiny classic TIFF whose header declares ``height × width`` pixels but holds ``strip_bytes``."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, 1),
               (273, 4, 0), (277, 3, 1), (278, 4, height), (279, 4, strip_bytes)]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    body = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3
                                                      else struct.pack("<I", value))
        body += packed
    body += struct.pack("<I", 0)
    path.write_bytes(b"II*\x00" + struct.pack("<I", ifd_offset) + body + b"\x00" * strip_bytes)
    return path


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name → bytes), to show nothing of the user's changed."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

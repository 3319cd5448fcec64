"""``napari-sine propagate`` on bad input, with a tiny random model.

Every bad input must give exit status 2, one message on stderr (no traceback) and leave ``--out``
absent (or exactly as it was).
"""

from __future__ import annotations

from pathlib import Path

import cli_helpers
import numpy as np
import pytest
import tifffile
from cli_helpers import H, W, assert_bad_input, propagate

from sine_model.cli import common
from sine_model.io import readers as io

REAL_LOAD_MODEL = common.load_model  # before the autouse fixture swaps in the tiny model

tiny_model, data = cli_helpers.tiny_model, cli_helpers.data  # the shared fixtures (tiny_model: autouse)


def write(path: Path, array: np.ndarray) -> None:
    tifffile.imwrite(path, array, photometric="minisblack" if array.ndim == 3 else None)


@pytest.mark.parametrize(
    ("setup", "extra", "words"),
    [
        ("labels_shape", (), ("labels have shape", "same height and width")),
        ("labels_empty", (), ("no objects",)),
        ("labels_negative", (), ("negative",)),
        ("labels_too_big", (), ("exceeds",)),
        ("ref_nan", (), ("NaN",)),
        ("target_nan", ("--stack-axis", "0"), ("target 2", "NaN")),
        ("target_inf", ("--stack-axis", "0"), ("NaN or inf",)),
        ("no_stack_axis", (), ("--stack-axis",)),
        ("channels", ("--stack-axis", "0"), ("channel",)),
        ("classes_missing", ("--stack-axis", "0", "--classes", "3:1"), ("no class",)),
    ],
)
def test_bad_references_and_targets(capsys, data, setup, extra, words):
    labels = tifffile.imread(data / "labels.tif")
    if setup == "labels_shape":
        write(data / "labels.tif", labels[:-1])
    elif setup == "labels_empty":
        write(data / "labels.tif", np.zeros_like(labels))
    elif setup == "labels_negative":
        write(data / "labels.tif", labels.astype(np.int16) - 1)
    elif setup == "labels_too_big":
        write(data / "labels.tif", labels.astype(np.uint64) * 2**32)
    elif setup == "ref_nan":
        image = np.ones((H, W), np.float32)
        image[3, 3] = np.nan
        write(data / "ref.tif", image)
    elif setup in ("target_nan", "target_inf"):
        stack = np.ones((3, H, W), np.float32)
        stack[2, 1, 1] = np.nan if setup == "target_nan" else np.inf
        write(data / "stack.tif", stack)
    elif setup == "channels":
        write(data / "ref.tif", np.zeros((H, W, 3), np.uint8))
    code, _, err = propagate(capsys, data, *extra)
    assert_bad_input(code, err, data / "out", *words)


@pytest.mark.parametrize(
    ("which", "content", "words"),
    [
        ("ref", None, ("File not found",)),
        ("labels", None, ("File not found",)),
        ("target", None, ("File not found",)),
        ("ref", b"garbage", ("not a valid TIFF", "Supported formats")),
        ("target", b"garbage", ("not a valid TIFF",)),
    ],
)
def test_missing_and_unreadable_files(capsys, data, which, content, words):
    name = {"ref": "ref.tif", "labels": "labels.tif", "target": "stack.tif"}[which]
    (data / name).unlink()
    if content is not None:
        (data / name).write_bytes(content)
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert_bad_input(code, err, data / "out", name, *words)


def test_unsupported_format(capsys, data):
    (data / "photo.bmp").write_bytes(b"BM")
    code, _, err = propagate(capsys, data, targets=("photo.bmp",))
    assert_bad_input(code, err, data / "out", "unsupported file type '.bmp'", "PNG")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--modes", "id,bogus"), ("unknown mode",)),
        (("--classes", "3-1"), ("LABEL:CLASS",)),
        (("--device", "tpu"), ("invalid choice",)),
        (("--stack-axis", "5"), ("out of range",)),
        (("--stack-axis", "0", "--pad", "100"), ("multiple of 14",)),
        (("--stack-axis", "0", "--ref-labels", "labels.tif"), ("--ref-labels",)),
        (("--format", "tiff", "--stack-axis", "0"), ()),  # valid: control case below
    ],
)
def test_bad_arguments(capsys, data, argv, words):
    argv = tuple(str(data / a) if a.endswith(".tif") else a for a in argv)
    code, _, err = propagate(capsys, data, *argv)
    if not words:
        assert code == 0, err
        return
    assert code == 2, err
    assert "Traceback" not in err and all(w in err for w in words), err
    assert not (data / "out").exists()


def test_mixed_sizes_refuse_a_stack_format(capsys, data):
    tifffile.imwrite(data / "small.tif", np.zeros((30, 40), np.uint8))
    tifffile.imwrite(data / "big.tif", np.zeros((H, W), np.uint8))
    code, _, err = propagate(capsys, data, "--format", "tiff", targets=("small.tif", "big.tif"))
    assert_bad_input(code, err, data / "out", "--format files")


def test_error_found_while_running_leaves_nothing(capsys, data):
    tifffile.imwrite(data / "large.tif", np.zeros((300, 300), np.uint8))  # needs several 112 px tiles
    code, _, err = propagate(capsys, data, "--memory", "--modes", "id", targets=("large.tif",))
    assert_bad_input(code, err, data / "out", "memory mode")


def test_format_zarr_needs_zarr(capsys, data, monkeypatch):
    monkeypatch.setattr(io, "zarr_available", lambda: False)
    code, _, err = propagate(capsys, data, "--stack-axis", "0", "--format", "zarr")
    assert_bad_input(code, err, data / "out", "pip install zarr")


def test_out_is_a_file(capsys, data):
    (data / "out").write_text("not a folder")
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert code == 2 and "is a file" in err
    assert (data / "out").read_text() == "not a folder"


def test_existing_results_without_overwrite(capsys, data):
    out = data / "out"
    out.mkdir()
    (out / "labels_semantic.tif").write_bytes(b"previous run")
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert code == 2 and "--overwrite" in err and "labels_semantic.tif" in err
    assert [p.name for p in out.iterdir()] == ["labels_semantic.tif"]
    assert (out / "labels_semantic.tif").read_bytes() == b"previous run"


def test_no_model_installed_says_how_to_import(capsys, data, monkeypatch):
    from sine_model.hub import pretrained as weights

    def missing(name, device=None):
        raise weights.WeightsNotFoundError(f"preset {name!r} is not installed")

    monkeypatch.setattr(weights, "from_pretrained", missing, raising=False)
    monkeypatch.setattr(common, "load_model", REAL_LOAD_MODEL)
    code, _, err = propagate(capsys, data, "--stack-axis", "0")
    assert_bad_input(code, err, data / "out", "napari-sine weights import", "--model")

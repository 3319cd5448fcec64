"""Reliability, surface "files": what ``napari-sine propagate`` does with odd files and output folders.

Each bad file must be refused with exit status 2 and one message naming the file, the problem and the
fix, before anything is written; odd but valid files (big-endian, unicode paths, odd zarr chunks) work.
"""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from reliability_helpers import (
    H,
    W,
    assert_refused,
    note,
    propagate_cli,
    reference_pair,
    tiff_declaring,
    tree,
    write_inputs,
)
from reliability_helpers import tiny_cli_model_fixture as tiny_cli_model_fixture  # fixture `tiny_cli_model`

from sine_model.io import readers

pytestmark = pytest.mark.usefixtures("tiny_cli_model")


@pytest.fixture
def data(tmp_path) -> Path:
    return write_inputs(tmp_path / "in")


def test_missing_reference_file(capsys, data, record_property):
    """Did: --ref a file that does not exist. Must: exit 2, 'File not found' with the path; no --out."""
    code, _, err = propagate_cli(capsys, data, ref="nope.tif")
    assert_refused(record_property, code, err, "File not found", "nope.tif", out=data / "out")


def test_directory_as_target(capsys, data, record_property):
    """Did: --targets a plain folder. Must: exit 2, says it is a folder, not a zarr store; no --out."""
    (data / "folder").mkdir()
    code, _, err = propagate_cli(capsys, data, targets=("folder",))
    assert_refused(record_property, code, err, "directory that is not a zarr store", out=data / "out")


def test_zero_byte_tiff(capsys, data, record_property):
    """Did: --ref-labels a 0-byte .tif. Must: exit 2, 'the file is empty (0 bytes)'; no --out."""
    (data / "empty.tif").write_bytes(b"")
    code, _, err = propagate_cli(capsys, data, labels="empty.tif")
    assert_refused(record_property, code, err, "empty (0 bytes)", out=data / "out")


@pytest.mark.parametrize("role", ["ref", "targets"])
def test_truncated_tiff(capsys, data, record_property, role):
    """Did: a real TIFF cut to half its bytes, as --ref and as --targets. Must: exit 2, 'truncated or
    damaged'; no --out, no tifffile jargon as the whole message."""
    image = np.random.default_rng(2).integers(0, 255, (3, H, W), dtype=np.uint8)
    full = data / "full.tif"
    tifffile.imwrite(full, image if role == "targets" else image[0], photometric="minisblack")
    (data / "cut.tif").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    code, _, err = propagate_cli(capsys, data, **({"ref": "cut.tif"} if role == "ref" else
                                                 {"targets": ("cut.tif",)}))
    assert_refused(record_property, code, err, "cut.tif", "truncated or damaged", out=data / "out")


def test_corrupt_tiff_header(capsys, data, record_property):
    """Did: a file with a TIFF signature followed by garbage. Must: exit 2, names it damaged; no --out."""
    (data / "bad.tif").write_bytes(b"II*\x00" + b"\xff\xee" * 40)
    code, _, err = propagate_cli(capsys, data, targets=("bad.tif",))
    assert_refused(record_property, code, err, "bad.tif", "damaged", out=data / "out")


def test_text_file_named_tif(capsys, data, record_property):
    """Did: a text file named notes.tif as --ref. Must: exit 2, 'it is a text file, not a valid TIFF'."""
    (data / "notes.tif").write_text("these are my notes, not an image\n")
    code, _, err = propagate_cli(capsys, data, ref="notes.tif")
    assert_refused(record_property, code, err, "text file", "not a valid TIFF", out=data / "out")


def test_png_named_tif(capsys, data, record_property):
    """Did: a PNG saved as picture.tif as --ref. Must: exit 2, says it is a PNG and to rename it .png."""
    iio.imwrite(data / "picture.tif", reference_pair()[0], extension=".png")
    code, _, err = propagate_cli(capsys, data, ref="picture.tif")
    assert_refused(record_property, code, err, "PNG file", "picture.png", out=data / "out")


@pytest.mark.parametrize("role", ["ref", "targets"])
def test_huge_declared_dimensions_in_a_tiny_file(capsys, data, record_property, role):
    """Did: a 130-byte TIFF declaring 100000 × 100000 uint16 (18.6 GiB) as --ref and as --targets.
    Must: exit 2 before allocating, with the declared size and 'truncated or damaged' (was a MemoryError
    traceback as --targets)."""
    tiff_declaring(data / "huge.tif", 100_000, 100_000)
    code, _, err = propagate_cli(capsys, data, **({"ref": "huge.tif"} if role == "ref" else
                                                 {"targets": ("huge.tif",)}))
    assert_refused(record_property, code, err, "100000 × 100000", "GiB", "truncated or damaged",
                   out=data / "out")


def test_big_endian_tiff_works(capsys, tmp_path, record_property):
    """Did: reference, labels and targets saved as big-endian TIFF. Must: read as the same numbers and the
    run succeeds (exit 0, labels written)."""
    image, labels = reference_pair()
    folder = tmp_path / "be"
    folder.mkdir()
    tifffile.imwrite(folder / "ref.tif", image.astype(">u2") * 200, byteorder=">")
    tifffile.imwrite(folder / "labels.tif", labels.astype(">u2"), byteorder=">")
    tifffile.imwrite(folder / "stack.tif", np.stack([image] * 2).astype(">u2"), byteorder=">",
                     photometric="minisblack")
    assert np.array_equal(readers.read_image(folder / "labels.tif"), labels)
    code, out, err = propagate_cli(capsys, folder)
    note(record_property, out or err)
    assert code == 0, err
    assert tifffile.imread(folder / "out" / "labels_semantic.tif").shape == (2, H, W)


def test_unicode_and_spaces_in_paths(capsys, tmp_path, record_property):
    """Did: inputs and --out in folders named with spaces, accents and CJK characters. Must: exit 0 and
    the results are where asked."""
    folder = write_inputs(tmp_path / "my data é 空 白")
    out = tmp_path / "résultats 結果 x"
    code, stdout, err = propagate_cli(capsys, folder, out=out)
    note(record_property, stdout or err)
    assert code == 0, err
    assert (out / "labels_id.tif").is_file() and (out / "scores.csv").is_file()


def test_out_is_an_existing_file(capsys, data, record_property):
    """Did: --out an existing file. Must: exit 2, 'is a file'; the file is unchanged."""
    target = data / "notes.txt"
    target.write_text("keep me")
    code, _, err = propagate_cli(capsys, data, out=target)
    assert_refused(record_property, code, err, "is a file")
    assert target.read_text() == "keep me"


def test_file_as_parent_of_out(capsys, data, record_property):
    """Did: --out notes.txt/results where notes.txt is a file. Must: exit 2 naming notes.txt as a file
    (was a NotADirectoryError traceback); notes.txt unchanged."""
    (data / "notes.txt").write_text("keep me")
    code, _, err = propagate_cli(capsys, data, out=data / "notes.txt" / "results")
    assert_refused(record_property, code, err, "notes.txt is a file")
    assert (data / "notes.txt").read_text() == "keep me"


def _read_only_folder(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o500)
        return folder
    for candidate in (Path("/sys"), Path("/proc")):  # root writes anywhere else, whatever the mode
        if candidate.is_dir() and not _can_write(candidate):
            return candidate
    pytest.skip("running as root with no read-only folder to try")


def _can_write(folder: Path) -> bool:
    try:
        (folder / ".sine-probe").touch()
        (folder / ".sine-probe").unlink()
    except OSError:
        return False
    return True


def test_read_only_out(capsys, data, tmp_path, record_property):
    """Did: --out inside a folder that cannot be written (chmod 500, or /sys as root). Must: exit 2,
    'cannot write' with a remedy (was an OSError [Errno 30] traceback); nothing made."""
    locked = _read_only_folder(tmp_path)
    code, _, err = propagate_cli(capsys, data, out=locked / "results")
    assert_refused(record_property, code, err, "cannot write", "Choose a folder you can write to",
                   out=locked / "results")


def test_results_present_without_overwrite(capsys, data, record_property):
    """Did: run twice into the same --out, the second time without --overwrite. Must: exit 2, names the
    existing results and --overwrite; the first run's files byte-for-byte unchanged."""
    assert propagate_cli(capsys, data)[0] == 0
    before = tree(data / "out")
    code, _, err = propagate_cli(capsys, data)
    assert_refused(record_property, code, err, "already holds results", "--overwrite")
    assert tree(data / "out") == before


def test_zarr_target_with_odd_chunks(capsys, data, record_property):
    """Did: --targets a zarr stack (3, 48, 64) chunked (2, 7, 13) with --stack-axis 0. Must: exit 0, one
    result page per target."""
    zarr = pytest.importorskip("zarr")
    stack = tifffile.imread(data / "stack.tif")
    array = zarr.open_array(str(data / "odd.zarr"), mode="w", shape=stack.shape, chunks=(2, 7, 13),
                            dtype=stack.dtype)
    array[:] = stack
    code, out, err = propagate_cli(capsys, data, "--stack-axis", "0", targets=("odd.zarr",))
    note(record_property, out or err)
    assert code == 0, err
    assert tifffile.imread(data / "out" / "labels_instance.tif").shape == (3, H, W)

"""Result writing: TIFF / zarr / per-file layouts, scores.csv, interruption and overwrite safety."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sine_model.engine.propagator import ObjectScore, TargetResult
from sine_model.io import result_writer


def result(index: int, shape=(6, 7), dtype=np.uint8, modes=("id", "semantic")) -> TargetResult:
    labels = {m: np.full(shape, index + 1, dtype=dtype) for m in modes}
    scores = [ObjectScore(index, index + 1, m, 0.5 + index / 10, "ref:0") for m in modes]
    return TargetResult(index, labels, scores, shape)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))



def test_tiff_stack_streams_uint32_and_csv(tmp_path):
    out = tmp_path / "out"
    writer = result_writer.ResultWriter(out, ("id", "semantic"), 3)
    writer.write(result(0, dtype=np.uint8))
    partial = [p for p in out.iterdir() if p.name.startswith(".labels_id.tif")]
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # written as it goes
    writer.write(result(1, dtype=np.uint16))
    writer.write(result(2, dtype=np.uint32))
    kept = writer.finish()
    assert {p.name for p in kept} == {"labels_id.tif", "labels_semantic.tif", "scores.csv"}
    assert leftovers(out) == []
    stack = tifffile.imread(out / "labels_id.tif")
    assert stack.shape == (3, 6, 7) and stack.dtype == np.uint32
    assert [int(stack[i, 0, 0]) for i in range(3)] == [1, 2, 3]
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(result_writer.SCORE_COLUMNS)
    assert [(r["target"], r["mode"]) for r in rows][:2] == [("0", "id"), ("0", "semantic")]
    assert len(rows) == 6 and float(rows[-1]["score"]) == pytest.approx(0.7)


def test_single_target_tiff_is_2d(tmp_path):
    writer = result_writer.ResultWriter(tmp_path, ("id",), 1)
    writer.write(result(0, modes=("id",)))
    writer.finish()
    assert tifffile.imread(tmp_path / "labels_id.tif").shape == (6, 7)


def test_zarr_layout_and_interruption_shrinks_stack(tmp_path):
    zarr = pytest.importorskip("zarr")
    writer = result_writer.ResultWriter(tmp_path, ("id",), 5, layout="zarr")
    writer.write(result(0, modes=("id",)))
    writer.write(result(1, modes=("id",)))
    writer.finish()  # as after Ctrl-C: only the finished targets remain
    stack = zarr.open(str(tmp_path / "labels_id.zarr"), mode="r")
    assert stack.shape == (2, 6, 7) and stack.dtype == np.uint32
    assert int(stack[1][0, 0]) == 2


def test_auto_layout_picks_zarr_for_big_stacks(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    monkeypatch.setattr(result_writer, "ZARR_AUTO_BYTES", 100)
    writer = result_writer.ResultWriter(tmp_path, ("id",), 3)
    writer.write(result(0, modes=("id",)))
    assert [p.name for p in writer.finish()] == ["labels_id.zarr", "scores.csv"]


def test_files_layout_for_mixed_sizes_keeps_dtypes(tmp_path):
    writer = result_writer.ResultWriter(tmp_path, ("id",), 2, layout="files")
    writer.write(result(0, shape=(4, 5), dtype=np.uint8, modes=("id",)))
    writer.write(result(1, shape=(8, 3), dtype=np.uint16, modes=("id",)))
    writer.finish()
    first = tifffile.imread(tmp_path / "labels_id" / "00000.tif")
    second = tifffile.imread(tmp_path / "labels_id" / "00001.tif")
    assert (first.shape, first.dtype, second.shape, second.dtype) == ((4, 5), np.uint8, (8, 3), np.uint16)


def test_stack_refuses_a_second_size(tmp_path):
    writer = result_writer.ResultWriter(tmp_path, ("id",), 2)
    writer.write(result(0, shape=(4, 5), modes=("id",)))
    with pytest.raises(ValueError, match="different sizes"):
        writer.write(result(1, shape=(5, 5), modes=("id",)))
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_values_outside_uint32_are_refused(tmp_path):
    writer = result_writer.ResultWriter(tmp_path / "out", ("id",), 1)
    big = TargetResult(0, {"id": np.full((2, 2), 2**33, dtype=np.uint64)}, [], (2, 2))
    with pytest.raises(ValueError, match="uint32"):
        writer.write(big)
    writer.discard()
    assert not (tmp_path / "out").exists()


def test_existing_results_need_overwrite(tmp_path):
    (tmp_path / "labels_id.tif").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        result_writer.ResultWriter(tmp_path, ("id",), 1)
    assert (tmp_path / "labels_id.tif").read_bytes() == b"old"
    result_writer.ResultWriter(tmp_path, ("semantic",), 1).discard()  # another mode does not clash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_id.tif", "notes.txt"]


def test_overwrite_replaces_results_of_any_layout(tmp_path):
    (tmp_path / "labels_id.zarr").mkdir()
    (tmp_path / "labels_id.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "scores.csv").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    writer = result_writer.ResultWriter(tmp_path, ("id",), 1, overwrite=True)
    assert (tmp_path / "scores.csv").read_text() == "old"  # nothing replaced before the end
    writer.write(result(0, modes=("id",)))
    writer.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_id.tif", "notes.txt", "scores.csv"]
    assert (tmp_path / "scores.csv").read_text().startswith("target,label,mode,score,source")


def test_nothing_finished_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    writer = result_writer.ResultWriter(out, ("id", "instance"), 4)
    assert writer.finish() == []
    assert not out.exists()


def test_bad_layout_and_output_file(tmp_path):
    with pytest.raises(ValueError, match="Unknown layout"):
        result_writer.ResultWriter(tmp_path, ("id",), 1, layout="png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        result_writer.ResultWriter(tmp_path / "file", ("id",), 1)

"""Reading images and streaming results to disk (sine_model.io): formats, laziness, errors, layouts."""

from __future__ import annotations

import csv
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sine_model import io
from sine_model.propagate import ObjectScore, TargetResult


def result(index: int, shape=(6, 7), dtype=np.uint8, modes=("id", "semantic")) -> TargetResult:
    labels = {m: np.full(shape, index + 1, dtype=dtype) for m in modes}
    scores = [ObjectScore(index, index + 1, m, 0.5 + index / 10, "ref:0") for m in modes]
    return TargetResult(index, labels, scores, shape)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------------------- reading


def test_tiff_2d_and_multipage(tmp_path):
    image = np.arange(20 * 30, dtype=np.uint16).reshape(20, 30)
    tifffile.imwrite(tmp_path / "a.tif", image)
    with tifffile.TiffWriter(tmp_path / "pages.tiff") as tw:
        for i in range(3):
            tw.write(image + i)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.tif"), image)
    stack = io.read_image(tmp_path / "pages.tiff")
    assert stack.shape == (3, 20, 30) and stack.dtype == np.uint16
    np.testing.assert_array_equal(stack[2], image + 2)
    with tifffile.TiffWriter(tmp_path / "mixed.tif") as tw:
        tw.write(image)
        tw.write(image[:5])
    with pytest.raises(io.InputFileError, match="differ in shape"):
        io.read_image(tmp_path / "mixed.tif")


def test_png_and_jpeg_eager_and_lazy(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    iio.imwrite(tmp_path / "b.jpg", rgb)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgb)
    assert io.read_image(tmp_path / "b.jpg").shape == (16, 24, 3)
    lazy = io.open_image(tmp_path / "a.png", lazy=True)
    assert isinstance(lazy, io.LazyImage)
    assert lazy.shape == (16, 24, 3) and lazy.ndim == 3 and lazy.dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(lazy), rgb)
    np.testing.assert_array_equal(lazy[1], rgb[1])


def test_png_16bit_labels(tmp_path):
    labels = np.zeros((10, 12), dtype=np.uint16)
    labels[2:5, 3:7] = 1000
    iio.imwrite(tmp_path / "labels.png", labels)
    out = io.read_image(tmp_path / "labels.png")
    assert out.dtype == np.uint16 and out.max() == 1000


def test_zarr_store_is_lazy(tmp_path):
    zarr = pytest.importorskip("zarr")
    data = np.random.default_rng(1).random((4, 10, 12)).astype(np.float32)
    z = zarr.open_array(str(tmp_path / "s.zarr"), mode="w", shape=data.shape, chunks=(1, 10, 12),
                        dtype=data.dtype)
    z[:] = data
    opened = io.open_image(tmp_path / "s.zarr")
    assert not isinstance(opened, np.ndarray)
    assert opened.shape == (4, 10, 12)
    np.testing.assert_array_equal(np.asarray(opened[3]), data[3])
    np.testing.assert_array_equal(io.read_image(tmp_path / "s.zarr"), data)


def test_zarr_groups(tmp_path):
    zarr = pytest.importorskip("zarr")
    zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    zarr.open_array(str(tmp_path / "one.zarr" / "raw"), mode="w", shape=(5, 6), dtype="uint8")
    assert io.open_image(tmp_path / "one.zarr").shape == (5, 6)
    zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    for name in ("a", "b"):
        zarr.open_array(str(tmp_path / "two.zarr" / name), mode="w", shape=(5, 6), dtype="uint8")
    with pytest.raises(io.InputFileError, match="several arrays.*a, b"):
        io.open_image(tmp_path / "two.zarr")
    assert io.open_image(tmp_path / "two.zarr" / "b").shape == (5, 6)


def test_big_tiff_opened_lazily(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "LAZY_TIFF_BYTES", 0)
    data = np.random.default_rng(2).integers(0, 1000, (3, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")
    mapped = io.open_image(tmp_path / "plain.tif")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, data)


def test_big_compressed_tiff_is_a_zarr_view(tmp_path, monkeypatch):
    zarr = pytest.importorskip("zarr")
    if int(zarr.__version__.split(".")[0]) < 3:
        pytest.skip("tifffile's zarr view needs zarr 3")
    monkeypatch.setattr(io, "LAZY_TIFF_BYTES", 0)
    data = np.random.default_rng(2).integers(0, 1000, (3, 20, 30), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "packed.tif", data, compression="zlib", photometric="minisblack")
    view = io.open_image(tmp_path / "packed.tif")
    assert not isinstance(view, np.ndarray) and view.shape == data.shape
    np.testing.assert_array_equal(np.asarray(view[1]), data[1])


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("missing.tif", None, "File not found"),
        ("image.bmp", b"BM....", "unsupported file type '.bmp'"),
        ("broken.tif", b"not a tiff at all", "not a valid TIFF"),
        ("broken.png", b"not a png", "not a valid PNG"),
        ("broken.jpeg", b"not a jpeg", "not a valid JPEG"),
    ],
)
def test_unreadable_files_name_the_problem(tmp_path, name, content, match):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(io.InputFileError, match=match) as info:
        io.read_image(path)
    assert str(path) in str(info.value)
    assert "TIFF" in str(info.value) and "zarr" in str(info.value)  # lists the supported formats


def test_plain_directory_is_refused(tmp_path):
    with pytest.raises(io.InputFileError, match="not a zarr store"):
        io.open_image(tmp_path)


def test_plane_views_and_lazy_planes():
    data = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    view = io.plane(data, 1, 2)
    assert view.base is not None and view.shape == (2, 4)
    np.testing.assert_array_equal(view, data[:, 2])
    calls = []

    class Lazy:
        shape, ndim, dtype = data.shape, data.ndim, data.dtype

        def __getitem__(self, key):
            calls.append(key)
            return data[key]

    lazy = io.plane(Lazy(), 0, 1)
    assert isinstance(lazy, io.LazyImage) and lazy.shape == (3, 4) and not calls
    np.testing.assert_array_equal(np.asarray(lazy), data[1])


# ----------------------------------------------------------------------------------------- writing


def test_tiff_stack_streams_uint32_and_csv(tmp_path):
    out = tmp_path / "out"
    writer = io.ResultWriter(out, ("id", "semantic"), 3)
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
    assert list(rows[0]) == list(io.SCORE_COLUMNS)
    assert [(r["target"], r["mode"]) for r in rows][:2] == [("0", "id"), ("0", "semantic")]
    assert len(rows) == 6 and float(rows[-1]["score"]) == pytest.approx(0.7)


def test_single_target_tiff_is_2d(tmp_path):
    writer = io.ResultWriter(tmp_path, ("id",), 1)
    writer.write(result(0, modes=("id",)))
    writer.finish()
    assert tifffile.imread(tmp_path / "labels_id.tif").shape == (6, 7)


def test_zarr_layout_and_interruption_shrinks_stack(tmp_path):
    zarr = pytest.importorskip("zarr")
    writer = io.ResultWriter(tmp_path, ("id",), 5, layout="zarr")
    writer.write(result(0, modes=("id",)))
    writer.write(result(1, modes=("id",)))
    writer.finish()  # as after Ctrl-C: only the finished targets remain
    stack = zarr.open(str(tmp_path / "labels_id.zarr"), mode="r")
    assert stack.shape == (2, 6, 7) and stack.dtype == np.uint32
    assert int(stack[1][0, 0]) == 2


def test_auto_layout_picks_zarr_for_big_stacks(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    monkeypatch.setattr(io, "ZARR_AUTO_BYTES", 100)
    writer = io.ResultWriter(tmp_path, ("id",), 3)
    writer.write(result(0, modes=("id",)))
    assert [p.name for p in writer.finish()] == ["labels_id.zarr", "scores.csv"]


def test_files_layout_for_mixed_sizes_keeps_dtypes(tmp_path):
    writer = io.ResultWriter(tmp_path, ("id",), 2, layout="files")
    writer.write(result(0, shape=(4, 5), dtype=np.uint8, modes=("id",)))
    writer.write(result(1, shape=(8, 3), dtype=np.uint16, modes=("id",)))
    writer.finish()
    first = tifffile.imread(tmp_path / "labels_id" / "00000.tif")
    second = tifffile.imread(tmp_path / "labels_id" / "00001.tif")
    assert (first.shape, first.dtype, second.shape, second.dtype) == ((4, 5), np.uint8, (8, 3), np.uint16)


def test_stack_refuses_a_second_size(tmp_path):
    writer = io.ResultWriter(tmp_path, ("id",), 2)
    writer.write(result(0, shape=(4, 5), modes=("id",)))
    with pytest.raises(ValueError, match="different sizes"):
        writer.write(result(1, shape=(5, 5), modes=("id",)))
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def test_values_outside_uint32_are_refused(tmp_path):
    writer = io.ResultWriter(tmp_path / "out", ("id",), 1)
    big = TargetResult(0, {"id": np.full((2, 2), 2**33, dtype=np.uint64)}, [], (2, 2))
    with pytest.raises(ValueError, match="uint32"):
        writer.write(big)
    writer.discard()
    assert not (tmp_path / "out").exists()


def test_existing_results_need_overwrite(tmp_path):
    (tmp_path / "labels_id.tif").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        io.ResultWriter(tmp_path, ("id",), 1)
    assert (tmp_path / "labels_id.tif").read_bytes() == b"old"
    io.ResultWriter(tmp_path, ("semantic",), 1).discard()  # another mode does not clash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_id.tif", "notes.txt"]


def test_overwrite_replaces_results_of_any_layout(tmp_path):
    (tmp_path / "labels_id.zarr").mkdir()
    (tmp_path / "labels_id.zarr" / "zarr.json").write_text("{}")
    (tmp_path / "scores.csv").write_text("old")
    (tmp_path / "notes.txt").write_text("mine")
    writer = io.ResultWriter(tmp_path, ("id",), 1, overwrite=True)
    assert (tmp_path / "scores.csv").read_text() == "old"  # nothing replaced before the end
    writer.write(result(0, modes=("id",)))
    writer.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels_id.tif", "notes.txt", "scores.csv"]
    assert (tmp_path / "scores.csv").read_text().startswith("target,label,mode,score,source")


def test_nothing_finished_leaves_nothing(tmp_path):
    out = tmp_path / "new" / "out"
    writer = io.ResultWriter(out, ("id", "instance"), 4)
    assert writer.finish() == []
    assert not out.exists()


def test_bad_layout_and_output_file(tmp_path):
    with pytest.raises(ValueError, match="Unknown layout"):
        io.ResultWriter(tmp_path, ("id",), 1, layout="png")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        io.ResultWriter(tmp_path / "file", ("id",), 1)

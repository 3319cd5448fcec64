"""Reading images and label images (sine_model.io.readers): formats, laziness, errors."""

from __future__ import annotations

import gc

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sine_model.io import readers as io


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
    # close the TIFF the view reads from now: left to the garbage collector, its ResourceWarning surfaced
    # in whichever later test happened to collect it
    view.store.close()
    gc.collect()


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

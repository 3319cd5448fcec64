"""File input of the command line: read images and label images.

Reading
-------
* TIFF (``.tif``, ``.tiff``) through tifffile; a multi-page file is a stack. Files whose pixel data
  exceed :data:`LAZY_TIFF_BYTES` are opened lazily: memory-mapped when the data are stored
  uncompressed and contiguously, otherwise as a zarr view (tifffile ``aszarr``) when a zarr that
  tifffile supports is installed, otherwise read whole.
* PNG and JPEG (``.png``, ``.jpg``, ``.jpeg``) through imageio's pillow plugin.
* zarr directory stores (zarr v2 or v3 format, whatever the installed ``zarr`` reads), opened lazily:
  nothing is loaded until a plane is indexed. A group is accepted when it holds exactly one array or
  is an OME-Zarr image (:mod:`sine_model.io.ome_zarr_reader`: level 0, or the ``level`` asked for, as a
  dask array without its length-1 axes); otherwise name the array, e.g. ``data.zarr/raw``.

Every failure raises :class:`InputFileError` (a ``ValueError``) naming the file, the problem and the
supported formats.

Writing is :mod:`sine_model.io.result_writer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sine_model.errors import InputFileError
from sine_model.io.ome_zarr_reader import multiscales_of, open_multiscale_level
from sine_model.io.tiff_checks import SUPPORTED_FORMATS, check_tiff_file, check_tiff_series

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")

#: TIFF files with more pixel data than this (bytes) are opened lazily instead of read whole.
LAZY_TIFF_BYTES: int = 512 * 1024**2

__all__ = ["InputFileError", "LAZY_TIFF_BYTES", "LazyImage", "SUPPORTED_FORMATS", "open_image", "plane",
           "read_image", "zarr_available"]


def zarr_available() -> bool:
    """Return whether the optional ``zarr`` package can be imported."""
    try:
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def _is_zarr_dir(path: Path) -> bool:
    markers = ("zarr.json", ".zarray", ".zgroup")
    return path.is_dir() and any((path / name).is_file() for name in markers)


def _fail(path: Path, problem: str) -> InputFileError:
    return InputFileError(f"Cannot read {path}: {problem}. Supported formats: {SUPPORTED_FORMATS}.")


def _open_zarr(path: Path, level: int | None = None) -> Any:
    try:
        import zarr
    except ImportError:
        raise InputFileError(
            f"{path} is a zarr store but the 'zarr' package is not installed; run `pip install zarr`."
        ) from None
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:  # zarr raises many types for damaged stores
        raise _fail(path, f"not a readable zarr store ({exc})") from exc
    if level not in (None, 0) and (hasattr(node, "shape") or not multiscales_of(node)):
        raise InputFileError(f"{path} is not an OME-Zarr multiscale image: it has one level, so --level "
                             f"{level} does not apply (leave it out).")
    if hasattr(node, "shape"):
        return node
    if multiscales_of(node):
        return open_multiscale_level(path, node, level)
    arrays = dict(node.arrays())
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    names = ", ".join(sorted(arrays)) or "none"
    raise InputFileError(
        f"{path} is a zarr group with several arrays (or none): {names}. Name the array to read, "
        f"e.g. {path / (sorted(arrays)[0] if arrays else 'NAME')}."
    )


def _stack_series(path: Path, series: Sequence[Any]) -> np.ndarray:
    layouts = {(tuple(s.shape), np.dtype(s.dtype)) for s in series}
    if len(layouts) > 1:
        raise _fail(path, f"its {len(series)} images differ in shape or dtype; save them as separate files")
    return np.stack([s.asarray() for s in series])


def _open_tiff(path: Path) -> Any:
    check_tiff_file(path)  # empty, not a TIFF, or declaring more data than it holds: refused before reading
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.series) > 1:  # pages written one by one: one series each
                return _stack_series(path, tif.series)
            series = tif.series[0]
            check_tiff_series(path, series)
            nbytes = int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize
            if nbytes <= LAZY_TIFF_BYTES:
                return series.asarray()
        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or not contiguous
            pass
        try:
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        except ImportError:  # no zarr, or a version tifffile cannot use: read it whole
            return tifffile.imread(path)
    except InputFileError:
        raise
    except (tifffile.TiffFileError, IndexError, ValueError, OSError, KeyError) as exc:
        raise _fail(path, f"the TIFF file is truncated or damaged ({type(exc).__name__}: {exc})") from exc


class LazyImage:
    """An image whose pixels are read (by ``load()``, of ``shape`` and ``dtype``) only when needed."""

    def __init__(self, load: Callable[[], Any], shape: Sequence[int], dtype: Any) -> None:
        self._load, self.shape, self.dtype = load, tuple(int(s) for s in shape), np.dtype(dtype)
        self.ndim = len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = np.asarray(self._load())
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self)[key]


def plane(array: Any, axis: int, index: int) -> Any:
    """Return ``array`` indexed at ``index`` along ``axis``: a view for numpy, lazy otherwise."""
    key = tuple(index if i == axis else slice(None) for i in range(array.ndim))
    if isinstance(array, np.ndarray):
        return array[key]
    shape = [s for i, s in enumerate(array.shape) if i != axis]
    return LazyImage(lambda: np.asarray(array[key]), shape, array.dtype)


def _open_picture(path: Path, lazy: bool) -> Any:
    import imageio.v3 as iio

    try:
        if not lazy:
            return np.asarray(iio.imread(path, plugin="pillow"))
        props = iio.improps(path, plugin="pillow")
        return LazyImage(lambda: iio.imread(path, plugin="pillow"), props.shape, props.dtype)
    except Exception as exc:  # imageio raises OSError, ValueError or plugin-specific errors
        raise _fail(path, f"not a valid {path.suffix[1:].upper()} file") from exc


def open_image(path: str | os.PathLike[str], lazy: bool = False, level: int | None = None) -> Any:
    """Open an image, label image or stack, lazily where the format allows.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, PNG or JPEG file, or a zarr directory store (see the module docstring).
    lazy : bool, optional
        Also defer reading PNG/JPEG pixels (only the header is read now).
    level : int, optional
        Resolution level of an OME-Zarr multiscale image (default 0, full resolution); other inputs
        have one level and refuse any other value.

    Returns
    -------
    numpy.ndarray, LazyImage, zarr.Array or dask.array.Array
        The pixel data; lazy results have ``shape``, ``ndim`` and ``dtype`` and read data only when
        indexed or converted with ``numpy.asarray``.

    Raises
    ------
    InputFileError
        When the path does not exist, has an unsupported format or cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"File not found: {path}. Check the path (supported: {SUPPORTED_FORMATS}).")
    if path.is_dir():
        if _is_zarr_dir(path) or path.suffix.lower() == ".zarr":
            return _open_zarr(path, level)
        raise _fail(path, "a directory that is not a zarr store (pass image files, not a folder)")
    if level not in (None, 0):
        raise InputFileError(f"--level {level} applies to OME-Zarr multiscale images; {path} has one level.")
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(path)
    if suffix in PICTURE_SUFFIXES:
        return _open_picture(path, lazy)
    raise _fail(path, f"unsupported file type '{suffix or path.name}'")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image or label image fully into memory.

    Parameters
    ----------
    path : str or os.PathLike
        As for :func:`open_image`.

    Returns
    -------
    numpy.ndarray
        The pixel data.

    Raises
    ------
    InputFileError
        As for :func:`open_image`.
    """
    data = open_image(path)
    try:
        return np.asarray(data[...])
    except Exception as exc:  # lazy stores fail only when the data are read
        raise _fail(Path(path), f"the pixel data cannot be read ({exc})") from exc

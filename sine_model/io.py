"""File input and output of the command line: read images and label images, stream results to disk.

Reading
-------
* TIFF (``.tif``, ``.tiff``) through tifffile; a multi-page file is a stack. Files whose pixel data
  exceed :data:`LAZY_TIFF_BYTES` are opened lazily: memory-mapped when the data are stored
  uncompressed and contiguously, otherwise as a zarr view (tifffile ``aszarr``) when a zarr that
  tifffile supports is installed, otherwise read whole.
* PNG and JPEG (``.png``, ``.jpg``, ``.jpeg``) through imageio's pillow plugin.
* zarr directory stores (zarr v2 or v3 format, whatever the installed ``zarr`` reads), opened lazily:
  nothing is loaded until a plane is indexed. A group is accepted when it holds exactly one array or
  is an OME-Zarr image (its first multiscale level is used); otherwise name the array, e.g.
  ``data.zarr/raw``.

Every failure raises :class:`InputFileError` (a ``ValueError``) naming the file, the problem and the
supported formats.

Writing
-------
:class:`ResultWriter` writes one label file per mode plus ``scores.csv`` into an output directory,
target by target, so memory use does not grow with the number of targets:

* ``labels_<mode>.tif``: one page per target, in target order (tifffile ``TiffWriter`` appending
  pages; BigTIFF only above 2 GiB). A stack has a single dtype, so stacks are always ``uint32``
  (every label value the engine produces fits; a value that does not raises instead of wrapping).
  A file holding one target reads back as ``(H, W)``, otherwise as ``(N, H, W)``.
* ``labels_<mode>.zarr``: the same ``(N, H, W)`` ``uint32`` stack as a chunked zarr array (one chunk
  row per target), chosen with ``layout="zarr"`` or, with ``layout="auto"``, when the stack would
  exceed :data:`ZARR_AUTO_BYTES` and zarr is installed.
* ``labels_<mode>/`` with one ``NNNNN.tif`` per target (``layout="files"``): for targets of
  different sizes, which cannot share a stack. Each file keeps the dtype the engine gave it.
* ``scores.csv`` with the columns ``target,label,mode,score,source``, one row per object and mode.

Everything is first written under hidden temporary names (``.<name>.partial-<pid>``) in the output
directory and renamed into place by :meth:`ResultWriter.finish`, which also works after an
interruption: the finished targets are kept and readable. :meth:`ResultWriter.discard` removes the
temporaries instead. Existing results are only replaced when ``overwrite=True``.
"""

from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
PICTURE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
SUPPORTED_FORMATS = "TIFF (.tif, .tiff), PNG (.png), JPEG (.jpg, .jpeg), zarr (directory store)"

#: TIFF files with more pixel data than this (bytes) are opened lazily instead of read whole.
LAZY_TIFF_BYTES: int = 512 * 1024**2
#: With ``layout="auto"`` a label stack bigger than this (bytes, at ``uint32``) is written as zarr.
ZARR_AUTO_BYTES: int = 2 * 1024**3
#: dtype of every label stack (TIFF or zarr); per-target files keep the engine's dtype.
STACK_DTYPE = np.dtype(np.uint32)
SCORES_NAME = "scores.csv"
SCORE_COLUMNS: tuple[str, ...] = ("target", "label", "mode", "score", "source")
LAYOUTS: tuple[str, ...] = ("auto", "tiff", "zarr", "files")

__all__ = [
    "InputFileError", "LAZY_TIFF_BYTES", "LAYOUTS", "LazyImage", "ResultWriter", "SCORES_NAME",
    "SCORE_COLUMNS", "STACK_DTYPE", "SUPPORTED_FORMATS", "ZARR_AUTO_BYTES", "existing_outputs",
    "open_image", "output_names", "plane", "read_image", "zarr_available",
]


class InputFileError(ValueError):
    """An input file is missing, of an unsupported format or unreadable."""


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


def _open_zarr(path: Path) -> Any:
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
    if hasattr(node, "shape"):
        return node
    arrays = dict(node.arrays())
    multiscales = node.attrs.get("multiscales")
    if multiscales:
        try:
            return node[multiscales[0]["datasets"][0]["path"]]
        except (KeyError, IndexError, TypeError):
            pass
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
    try:
        with tifffile.TiffFile(path) as tif:
            if len(tif.series) > 1:  # pages written one by one: one series each
                return _stack_series(path, tif.series)
            series = tif.series[0]
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
    except (tifffile.TiffFileError, IndexError, ValueError, OSError) as exc:
        raise _fail(path, f"not a valid TIFF file ({exc})") from exc


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


def open_image(path: str | os.PathLike[str], lazy: bool = False) -> Any:
    """Open an image, label image or stack, lazily where the format allows.

    Parameters
    ----------
    path : str or os.PathLike
        A TIFF, PNG or JPEG file, or a zarr directory store (see the module docstring).
    lazy : bool, optional
        Also defer reading PNG/JPEG pixels (only the header is read now).

    Returns
    -------
    numpy.ndarray, LazyImage or zarr.Array
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
            return _open_zarr(path)
        raise _fail(path, "a directory that is not a zarr store (pass image files, not a folder)")
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


def output_names(mode: str) -> tuple[str, str, str]:
    """Return the names a mode's labels may be written under: TIFF stack, zarr stack, folder."""
    return f"labels_{mode}.tif", f"labels_{mode}.zarr", f"labels_{mode}"


def existing_outputs(out_dir: str | os.PathLike[str], modes: Iterable[str]) -> list[Path]:
    """Return the results of earlier runs in ``out_dir`` that writing ``modes`` would replace."""
    out_dir = Path(out_dir)
    names = [name for mode in modes for name in output_names(mode)] + [SCORES_NAME]
    return [out_dir / name for name in names if (out_dir / name).exists()]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _as_stack_dtype(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != STACK_DTYPE and labels.size:
        if labels.min() < 0 or labels.max() > np.iinfo(STACK_DTYPE).max:
            raise ValueError("Label values outside the uint32 range cannot be written to a label stack.")
    return labels.astype(STACK_DTYPE, copy=False)


class _ModeWriter:
    """Writes the label maps of one mode, target by target, to a temporary name."""

    def __init__(self, out_dir: Path, mode: str, n_targets: int, layout: str) -> None:
        self.out_dir, self.mode, self.n_targets, self.layout = out_dir, mode, n_targets, layout
        self.count = 0
        self._shape: tuple[int, ...] | None = None
        self._tiff: tifffile.TiffWriter | None = None
        self._zarr: Any = None
        self.tmp: Path | None = None
        self.final: Path | None = None

    def _open(self, shape: tuple[int, ...]) -> None:
        layout = self.layout
        nbytes = self.n_targets * int(np.prod(shape)) * STACK_DTYPE.itemsize
        if layout == "auto":
            layout = "zarr" if nbytes > ZARR_AUTO_BYTES and zarr_available() else "tiff"
        tif_name, zarr_name, dir_name = output_names(self.mode)
        name = {"tiff": tif_name, "zarr": zarr_name, "files": dir_name}[layout]
        self.layout, self.final = layout, self.out_dir / name
        self.tmp = self.out_dir / f".{name}.partial-{os.getpid()}"
        _remove(self.tmp)
        if layout == "tiff":
            self._tiff = tifffile.TiffWriter(self.tmp, bigtiff=nbytes > 2**31)  # classic TIFF when it fits
        elif layout == "zarr":
            import zarr

            chunks = (1, *(min(s, 2048) for s in shape))
            self._zarr = zarr.open_array(
                str(self.tmp), mode="w", shape=(self.n_targets, *shape), chunks=chunks,
                dtype=STACK_DTYPE, fill_value=0,
            )
        else:
            self.tmp.mkdir()
        self._shape = shape

    def write(self, labels: np.ndarray) -> None:
        shape = tuple(labels.shape)
        if self._shape is None:
            self._open(shape)
        elif shape != self._shape and self.layout != "files":
            raise ValueError(
                f"Target {self.count} has size {shape}, the first target {self._shape}; targets of "
                "different sizes cannot share a stack (write one file per target instead)."
            )
        if self.layout == "tiff":
            self._tiff.write(_as_stack_dtype(labels), contiguous=True, metadata={})
        elif self.layout == "zarr":
            self._zarr[self.count] = _as_stack_dtype(labels)
        else:
            digits = max(5, len(str(self.n_targets - 1)))
            tifffile.imwrite(self.tmp / f"{self.count:0{digits}d}.tif", np.asarray(labels))
        self.count += 1

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
            self._tiff = None
        if self._zarr is not None and 0 < self.count < self.n_targets:
            self._zarr.resize((self.count, *self._zarr.shape[1:]))
        self._zarr = None


class ResultWriter:
    """Stream propagation results into an output directory (see the module docstring).

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory; created when missing.
    modes : sequence of str
        Modes whose label maps are written (``"id"``, ``"instance"``, ``"semantic"``).
    n_targets : int
        Number of targets that will be written at most (sizes a zarr stack).
    layout : {"auto", "tiff", "zarr", "files"}, optional
        Label file layout; ``"files"`` (one TIFF per target) is needed for targets of different sizes.
    overwrite : bool, optional
        Replace results of an earlier run. Without it, existing results raise ``FileExistsError``.

    Raises
    ------
    FileExistsError
        When ``out_dir`` already holds results of these modes and ``overwrite`` is False.
    ValueError
        For an unknown layout, or ``"zarr"`` without the zarr package.
    """

    def __init__(self, out_dir: str | os.PathLike[str], modes: Sequence[str], n_targets: int, *,
                 layout: str = "auto", overwrite: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
        if layout == "zarr" and not zarr_available():
            raise ValueError("Writing zarr needs the 'zarr' package; run `pip install zarr`.")
        self.out_dir = Path(out_dir)
        self.modes, self.overwrite = tuple(modes), overwrite
        clashes = existing_outputs(self.out_dir, self.modes)
        if clashes and not overwrite:
            names = ", ".join(str(p) for p in clashes)
            raise FileExistsError(f"Output exists: {names}. Pass --overwrite to replace it.")
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise FileExistsError(f"Output path {self.out_dir} exists and is not a directory.")
        self._created_dir = not self.out_dir.exists()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._writers = {mode: _ModeWriter(self.out_dir, mode, n_targets, layout) for mode in self.modes}
        self._scores_tmp = self.out_dir / f".{SCORES_NAME}.partial-{os.getpid()}"
        self._scores_file = open(self._scores_tmp, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._csv = csv.writer(self._scores_file)
        self._csv.writerow(SCORE_COLUMNS)
        self.count = 0

    def write(self, result: Any) -> None:
        """Append one target's label maps and scores.

        Parameters
        ----------
        result : TargetResult
            Has ``labels`` (mode → ``(H, W)`` unsigned integer array) and ``scores`` (objects with
            ``target``, ``label``, ``mode``, ``score`` and ``source``).
        """
        for mode, writer in self._writers.items():
            writer.write(result.labels[mode])
        for s in result.scores:
            if s.mode in self._writers:
                self._csv.writerow([int(s.target), int(s.label), s.mode, f"{float(s.score):.6g}", s.source])
        self._scores_file.flush()
        self.count += 1

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if not self._scores_file.closed:
            self._scores_file.close()

    def finish(self) -> list[Path]:
        """Close the files and rename the finished targets' results into place.

        Returns
        -------
        list of Path
            The files and folders written (empty when no target finished: nothing is kept).
        """
        self._close()
        if self.count == 0:
            self.discard()
            return []
        kept = []
        pairs = [(w.tmp, w.final, w.mode) for w in self._writers.values()]
        pairs.append((self._scores_tmp, self.out_dir / SCORES_NAME, None))
        for tmp, final, mode in pairs:
            stale = output_names(mode) if mode is not None else (SCORES_NAME,)
            if self.overwrite:  # without it, clashes were refused at construction time
                for name in stale:
                    _remove(self.out_dir / name)
            os.replace(tmp, final)
            kept.append(final)
        return kept

    def discard(self) -> None:
        """Close and delete the temporaries; remove the output directory if it was created empty."""
        self._close()
        for writer in self._writers.values():
            if writer.tmp is not None:
                _remove(writer.tmp)
        _remove(self._scores_tmp)
        if self._created_dir and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

"""Stream the engine's results to disk, target by target (the command line's output).

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
* ``labels.ome.zarr`` (``layout="ome-zarr"``): every mode as an OME-Zarr label image ``(N, H, W)``
  ``uint32``, one chunk per target plane (:mod:`sine_model.io.ome_zarr_labels`; needs the ``scale``
  extra). Resumable and distributed runs write this layout in place (:mod:`sine_model.engine.resume`).
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sine_model.errors import InputError
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME, OmeZarrLabels, ome_zarr_available
from sine_model.io.readers import zarr_available

#: With ``layout="auto"`` a label stack bigger than this (bytes, at ``uint32``) is written as zarr.
ZARR_AUTO_BYTES: int = 2 * 1024**3
#: dtype of every label stack (TIFF or zarr); per-target files keep the engine's dtype.
STACK_DTYPE = np.dtype(np.uint32)
SCORES_NAME = "scores.csv"
SCORE_COLUMNS: tuple[str, ...] = ("target", "label", "mode", "score", "source")
LAYOUTS: tuple[str, ...] = ("auto", "tiff", "zarr", "files", "ome-zarr")

__all__ = ["LAYOUTS", "OutputDirError", "ResultWriter", "SCORES_NAME", "SCORE_COLUMNS", "STACK_DTYPE",
           "ZARR_AUTO_BYTES", "check_output_dir", "existing_outputs", "output_names", "remove_stale_partials"]


class OutputDirError(InputError, FileExistsError):
    """The output folder cannot take the results: a file, under a file, not writable, or holds results."""


def check_output_dir(out_dir: str | os.PathLike[str], modes: Iterable[str], overwrite: bool,
                     flag: str = "--out") -> None:
    """The one check of an output folder, before any work: refuse what would fail or lose results.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The folder (made later when missing).
    modes : iterable of str
        The modes whose results will be written.
    overwrite : bool
        Whether existing results may be replaced.
    flag : str
        How the messages name the folder (the command line's ``--out``).

    Raises
    ------
    OutputDirError
        When ``out_dir`` is a file, lies under a file, cannot be written, or holds results of ``modes``
        and ``overwrite`` is False; the message says what to do.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputDirError(f"{flag} {out_dir} is a file, not a directory: give a folder (it is made when "
                             "missing)")
    existing = out_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputDirError(f"{flag} {out_dir} cannot be made: {existing} is a file, not a folder. "
                             "Choose a folder elsewhere")
    if not _writable(existing):
        raise OutputDirError(f"{flag} {out_dir}: cannot write in {existing} (read-only or no permission). "
                             "Choose a folder you can write to")
    clashes = existing_outputs(out_dir, modes)
    if clashes and not overwrite:
        raise OutputDirError(f"{out_dir} already holds results ({', '.join(p.name for p in clashes)}): "
                             f"pass --overwrite to replace them, or choose another {flag}")


def _writable(folder: Path) -> bool:
    """Whether a file can be made in ``folder`` (tried, since permissions alone miss read-only mounts)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    probe = folder / f".sine-write-test-{os.getpid()}"
    try:
        probe.touch()
        probe.unlink()
    except OSError:
        return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_partials(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove ``.<name>.partial-<pid>`` temporaries of runs whose process is gone (killed, crashed).

    A run killed with SIGKILL cannot clean up; its temporaries are hidden and clearly named, and the next
    run in the folder removes them here. Those of a live process (another run writing now) are kept.

    Returns
    -------
    list of Path
        What was removed.
    """
    out_dir = Path(out_dir)
    removed = []
    if not out_dir.is_dir():
        return removed
    for path in out_dir.glob(".*.partial-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            _remove(path)
            removed.append(path)
    return removed


def output_names(mode: str) -> tuple[str, str, str]:
    """Return the names a mode's labels may be written under: TIFF stack, zarr stack, folder."""
    return f"labels_{mode}.tif", f"labels_{mode}.zarr", f"labels_{mode}"


def existing_outputs(out_dir: str | os.PathLike[str], modes: Iterable[str]) -> list[Path]:
    """Return the results of earlier runs in ``out_dir`` that writing ``modes`` would replace."""
    out_dir = Path(out_dir)
    names = [name for mode in modes for name in output_names(mode)] + [OME_ZARR_NAME, SCORES_NAME]
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


class _StoreWriter:
    """Writes every mode's label maps, target by target, into one OME-Zarr store under a temporary name."""

    def __init__(self, out_dir: Path, modes: Sequence[str], n_targets: int) -> None:
        self.modes, self.n_targets, self.count = tuple(modes), n_targets, 0
        self.final = out_dir / OME_ZARR_NAME
        self.tmp: Path | None = out_dir / f".{OME_ZARR_NAME}.partial-{os.getpid()}"
        _remove(self.tmp)
        self._store: OmeZarrLabels | None = None

    def write(self, labels: dict[str, np.ndarray]) -> None:
        if self._store is None:
            shape = labels[self.modes[0]].shape
            self._store = OmeZarrLabels.create(self.tmp, self.modes, self.n_targets, shape)
        self._store.write(self.count, labels)
        self.count += 1

    def close(self) -> None:
        if self._store is not None and 0 < self.count < self.n_targets:
            self._store.truncate(self.count)
        self._store = None


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
    layout : {"auto", "tiff", "zarr", "files", "ome-zarr"}, optional
        Label file layout; ``"files"`` (one TIFF per target) is needed for targets of different sizes.
    overwrite : bool, optional
        Replace results of an earlier run. Without it, existing results raise ``FileExistsError``.

    Raises
    ------
    OutputDirError
        (a ``FileExistsError``) From :func:`check_output_dir`: ``out_dir`` is a file, lies under a file,
        cannot be written, or holds results of these modes and ``overwrite`` is False.
    ValueError
        For an unknown layout, or ``"zarr"`` without the zarr package.
    """

    def __init__(self, out_dir: str | os.PathLike[str], modes: Sequence[str], n_targets: int, *,
                 layout: str = "auto", overwrite: bool = False) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"Unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
        if layout == "zarr" and not zarr_available():
            raise ValueError("Writing zarr needs the 'zarr' package; run `pip install zarr`.")
        if layout == "ome-zarr" and not ome_zarr_available():
            raise ValueError("Writing OME-Zarr needs 'zarr' and 'ome-zarr': "
                             "pip install 'napari-sine[scale]'.")
        self.out_dir = Path(out_dir)
        self.modes, self.overwrite = tuple(modes), overwrite
        check_output_dir(self.out_dir, self.modes, overwrite, flag="output folder")
        self._created_dir = not self.out_dir.exists()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputDirError(f"cannot make the output folder {self.out_dir}: {exc.strerror or exc}") \
                from exc
        remove_stale_partials(self.out_dir)
        self._store = _StoreWriter(self.out_dir, self.modes, n_targets) if layout == "ome-zarr" else None
        self._writers = {} if self._store else {mode: _ModeWriter(self.out_dir, mode, n_targets, layout)
                                                 for mode in self.modes}
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
        if self._store is not None:
            self._store.write(result.labels)
        for s in result.scores:
            if s.mode in self.modes:
                self._csv.writerow([int(s.target), int(s.label), s.mode, f"{float(s.score):.6g}", s.source])
        self._scores_file.flush()
        self.count += 1

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        if self._store is not None:
            self._store.close()
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
        if self._store is not None:
            pairs.append((self._store.tmp, self._store.final, None))
        pairs.append((self._scores_tmp, self.out_dir / SCORES_NAME, None))
        for tmp, final, mode in pairs:
            stale = output_names(mode) if mode is not None else (final.name,)
            if self.overwrite:  # without it, clashes were refused at construction time
                for name in stale:
                    _remove(self.out_dir / name)
            os.replace(tmp, final)
            kept.append(final)
        return kept

    def discard(self) -> None:
        """Close and delete the temporaries; remove the output directory if it was created empty."""
        self._close()
        for writer in [*self._writers.values(), *([self._store] if self._store else [])]:
            if writer.tmp is not None:
                _remove(writer.tmp)
        _remove(self._scores_tmp)
        if self._created_dir and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

"""Targets stored in files, numbered 0 … N-1 across the files, opened lazily in whichever process reads them.

:class:`FileTargets` holds only paths and options, so it travels to other processes (dask workers) as a
few hundred bytes; each process opens the files on first use (:func:`~sine_model.io.readers.open_image`,
lazily: zarr, OME-Zarr levels, large TIFFs) and reads one target plane at a time.

:meth:`FileTargets.identity` describes the inputs for a run manifest: every file's size and sha256 (files
up to :data:`FULL_HASH_BYTES`; larger ones hash their first and last 16 MiB), for zarr stores the sha256
of their metadata documents; the per-target pixel checksums of :mod:`sine_model.io.target_records` catch
changed chunks.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.errors import InputFileError
from sine_model.io.readers import open_image, plane

__all__ = ["FULL_HASH_BYTES", "FileTargets", "read_plane"]

#: Files up to this size are hashed whole in a run's identity; larger ones by their two ends.
FULL_HASH_BYTES = 256 * 1024**2
_END_BYTES = 16 * 1024**2
_ZARR_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


def read_plane(view: Any) -> np.ndarray:
    """Read a lazy target (numpy, zarr, dask, :class:`~sine_model.io.readers.LazyImage`) into memory.

    dask arrays are computed on the calling thread: inside a dask worker this never submits tasks back to
    the cluster.
    """
    if hasattr(view, "compute"):
        view = view.compute(scheduler="synchronous")
    return np.asarray(view)


def _file_identity(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            how = "sha256"
        else:
            digest.update(handle.read(_END_BYTES))
            handle.seek(size - _END_BYTES)
            digest.update(handle.read(_END_BYTES))
            how = "sha256 of the first and last 16 MiB"
    return {"path": str(path.resolve()), "bytes": size, "hash": digest.hexdigest(), "hashed": how}


def _zarr_identity(path: Path) -> dict[str, Any]:
    """The metadata documents of the store's top two levels (the chunks are checked per target)."""
    digest = hashlib.sha256()
    documents = sorted(p for depth in ("*", "*/*", "*/*/*") for p in path.glob(depth)
                       if p.name in _ZARR_METADATA and p.is_file())
    for doc in documents:
        digest.update(str(doc.relative_to(path)).encode())
        digest.update(doc.read_bytes())
    return {"path": str(path.resolve()), "hash": digest.hexdigest(), "hashed": "sha256 of the metadata"}


class FileTargets:
    """The targets of a list of image files (each one target, or a stack along ``stack_axis``).

    Parameters
    ----------
    paths : sequence of str or Path
        TIFF, PNG, JPEG, zarr or OME-Zarr inputs, in order.
    stack_axis : int, optional
        Axis of the stack in every file (None: each file is one target).
    level : int, optional
        Resolution level of OME-Zarr multiscale inputs (0: full resolution).

    Raises
    ------
    InputFileError
        When a file cannot be opened or ``stack_axis`` does not fit it.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], stack_axis: int | None = None,
                 level: int | None = None) -> None:
        self.paths = [Path(p) for p in paths]
        self.stack_axis, self.level = stack_axis, level
        self._arrays: list[Any] | None = None
        counts = []
        for path, array in zip(self.paths, self._opened(), strict=True):
            if stack_axis is None:
                counts.append(1)
                continue
            if not -array.ndim <= stack_axis < array.ndim:
                raise InputFileError(f"stack axis {stack_axis} is out of range for {path} with shape "
                                     f"{tuple(array.shape)}")
            counts.append(int(array.shape[stack_axis % array.ndim]))
        self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}  # reopened where it lands

    def _opened(self) -> list[Any]:
        if self._arrays is None:
            self._arrays = [open_image(p, lazy=True, level=self.level) for p in self.paths]
        return self._arrays

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> Any:
        """Target ``index`` as a lazy view (no pixels read)."""
        if not 0 <= index < len(self):
            raise IndexError(f"target {index} out of range ({len(self)} targets)")
        file = int(np.searchsorted(self._starts, index, side="right") - 1)
        array = self._opened()[file]
        if self.stack_axis is None:
            return array
        axis, offset = self.stack_axis % array.ndim, int(index - self._starts[file])
        if hasattr(array, "compute"):  # dask: stays lazy, read by read_plane on the calling thread
            return array[tuple(offset if i == axis else slice(None) for i in range(array.ndim))]
        return plane(array, axis, offset)

    def read(self, index: int) -> np.ndarray:
        """Target ``index``'s pixels."""
        return read_plane(self[index])

    def identity(self) -> dict[str, Any]:
        """What a run manifest records about these inputs (see the module docstring)."""
        files = [_zarr_identity(p) if p.is_dir() else _file_identity(p) for p in self.paths]
        shapes = [list(map(int, a.shape)) for a in self._opened()]
        dtypes = [str(np.dtype(a.dtype)) for a in self._opened()]
        return {"files": files, "shapes": shapes, "dtypes": dtypes, "stack_axis": self.stack_axis,
                "level": self.level, "targets": len(self)}

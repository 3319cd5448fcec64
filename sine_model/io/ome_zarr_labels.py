"""Label proposals of many targets in one OME-Zarr store (NGFF image-label groups), written target by target.

Layout of ``labels.ome.zarr`` (OME-Zarr 0.5, zarr format 3; metadata written by ``ome-zarr``)::

    labels.ome.zarr/
        labels/                 "labels": [the modes]
            id/  instance/  semantic/
                                multiscales (one level, axes t, y, x) + image-label
                0               (N, H, W) uint32, axis 0 = target index

Every chunk belongs to one target plane (chunks ``(1, H, W)``, split in y and x only for planes larger
than :data:`MAX_CHUNK_SIDE`), so processes writing different targets never touch the same chunk; zarr's
local store writes each chunk through a temporary file. napari opens ``labels.ome.zarr/labels`` (or one
mode's group) with the napari-ome-zarr reader; ``ome_zarr.reader.Reader`` reads it as label images.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_CHUNK_SIDE", "OME_ZARR_NAME", "OmeZarrLabels", "ome_zarr_available"]

#: Name of the store inside an output directory.
OME_ZARR_NAME = "labels.ome.zarr"
#: Planes wider or taller than this are split into chunks of this side (still one target per chunk).
MAX_CHUNK_SIDE = 4096
LABEL_DTYPE = np.dtype(np.uint32)
_AXES = [{"name": "t", "type": "time"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
_LEVEL = "0"


def ome_zarr_available() -> bool:
    """Whether ``zarr`` and ``ome-zarr`` (the ``scale`` extra) can be imported."""
    try:
        import ome_zarr.writer  # noqa: F401
        import zarr  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not ome_zarr_available():
        raise ImportError("OME-Zarr output needs the 'zarr' and 'ome-zarr' packages: "
                          "pip install 'napari-sine[scale]'")


def _as_labels(labels: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype != LABEL_DTYPE and labels.size:
        if labels.min() < 0 or labels.max() > np.iinfo(LABEL_DTYPE).max:
            raise ValueError("Label values outside the uint32 range cannot be written to OME-Zarr labels.")
    return labels.astype(LABEL_DTYPE, copy=False)


class OmeZarrLabels:
    """One ``(N, H, W)`` uint32 label array per mode inside an OME-Zarr labels group.

    Use :meth:`create` for a new store and :meth:`open` for an existing one (e.g. in another process).

    Parameters
    ----------
    path : Path
        The store (``…/labels.ome.zarr``).
    arrays : mapping
        Mode → zarr array of that mode's labels.
    """

    def __init__(self, path: Path, arrays: Mapping[str, Any]) -> None:
        self.path, self.arrays = Path(path), dict(arrays)

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes held, in the order they were created."""
        return tuple(self.arrays)

    @property
    def n_targets(self) -> int:
        """Length of the target axis."""
        return int(next(iter(self.arrays.values())).shape[0])

    @property
    def plane_shape(self) -> tuple[int, int]:
        """Height and width of every target plane."""
        return tuple(int(s) for s in next(iter(self.arrays.values())).shape[1:])

    @classmethod
    def create(cls, path: str | os.PathLike[str], modes: Sequence[str], n_targets: int,
               plane_shape: Sequence[int]) -> OmeZarrLabels:
        """Create the store (replacing nothing: ``path`` must not exist) with zero-filled arrays.

        Parameters
        ----------
        path : str or os.PathLike
            Where the store goes.
        modes : sequence of str
            One label image per mode, named after it.
        n_targets : int
            Length of the target axis.
        plane_shape : (int, int)
            Height and width of every target.
        """
        _require()
        import zarr
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists; remove it or choose another output directory.")
        if len(plane_shape) != 2 or min(plane_shape) < 1 or n_targets < 1:
            raise ValueError(f"Need targets of a 2D size and at least one target, got {n_targets} of "
                             f"{tuple(plane_shape)}.")
        fmt = FormatV05()
        height, width = (int(s) for s in plane_shape)
        chunks = (1, min(height, MAX_CHUNK_SIDE), min(width, MAX_CHUNK_SIDE))
        root = zarr.open_group(str(path), mode="w-", zarr_format=3)
        labels_group = root.create_group("labels")
        arrays = {}
        for mode in modes:
            group = labels_group.create_group(mode)
            arrays[mode] = group.create_array(_LEVEL, shape=(int(n_targets), height, width), chunks=chunks,
                                              dtype=LABEL_DTYPE, fill_value=0)
            datasets = [{"path": _LEVEL, "coordinateTransformations": [{"type": "scale",
                                                                        "scale": [1.0, 1.0, 1.0]}]}]
            write_multiscales_metadata(group, datasets, fmt=fmt, axes=_AXES, name=mode)
            write_label_metadata(labels_group, mode, fmt=fmt)
        return cls(path, arrays)

    @classmethod
    def open(cls, path: str | os.PathLike[str], writable: bool = False) -> OmeZarrLabels:
        """Open an existing store (read-only unless ``writable``)."""
        _require()
        import zarr

        path = Path(path)
        try:
            labels_group = zarr.open_group(str(path / "labels"), mode="r+" if writable else "r")
            attrs = labels_group.attrs.asdict()
            modes = attrs.get("ome", attrs).get("labels", [])
            arrays = {mode: labels_group[f"{mode}/{_LEVEL}"] for mode in modes}
        except Exception as exc:  # zarr raises many types for damaged stores
            raise ValueError(f"{path} is not a napari-sine OME-Zarr labels store ({exc}).") from exc
        if not arrays:
            raise ValueError(f"{path} holds no label images.")
        return cls(path, arrays)

    def write(self, index: int, labels: Mapping[str, Any]) -> None:
        """Write one target's label map of every mode (each ``(H, W)``) at ``index``."""
        for mode, array in self.arrays.items():
            plane = _as_labels(labels[mode])
            if plane.shape != tuple(array.shape[1:]):
                raise ValueError(f"Target {index} has size {plane.shape}, the store holds targets of "
                                 f"{tuple(array.shape[1:])}; targets of different sizes cannot share a "
                                 "stack (write one file per target instead).")
            array[int(index)] = plane

    def read(self, mode: str, index: int) -> np.ndarray:
        """The label map of ``mode`` for target ``index``."""
        return np.asarray(self.arrays[mode][int(index)])

    def truncate(self, n_targets: int) -> None:
        """Shorten the target axis to ``n_targets`` (what an interrupted, non-resumable run keeps)."""
        for array in self.arrays.values():
            array.resize((int(n_targets), *array.shape[1:]))

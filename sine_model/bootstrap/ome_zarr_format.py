"""OME-Zarr export: one ``ome_zarr/<name>.ome.zarr`` per sample, image + ``labels/instances`` (NGFF labels).

Layout (OME-Zarr 0.5, zarr format 3; metadata written by ``ome-zarr``, as in
:mod:`sine_model.io.ome_zarr_labels`)::

    ome_zarr/<name>.ome.zarr/
        0                   the image, one level: (H, W) axes y, x or (C, H, W) axes c, y, x
        labels/             "labels": ["instances"]
            instances/      multiscales (axes y, x) + image-label
                0           (H, W) instance labels, uint32

The image keeps its dtype and values; channels are moved first (NGFF orders ``c`` before ``y``, ``x``).
napari-ome-zarr and ``ome_zarr.reader.Reader`` open it as an image with its label layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from sine_model.bootstrap.dataset import ExportError, ExportSample

__all__ = ["write_ome_zarr", "store_path", "LABEL_NAME"]

#: Folder of the stores inside the dataset.
STORES = "ome_zarr"

#: Name of the label image inside each store's ``labels`` group.
LABEL_NAME = "instances"
#: Longest chunk side (large images are stored in several chunks).
MAX_CHUNK = 2048
_AXIS = {
    "c": {"name": "c", "type": "channel"},
    "y": {"name": "y", "type": "space"},
    "x": {"name": "x", "type": "space"},
}


def _level(group: object, array: np.ndarray, axes: str, name: str) -> None:
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    chunks = tuple(min(int(side), MAX_CHUNK) for side in array.shape)
    stored = group.create_array(
        "0",
        shape=array.shape,
        chunks=chunks,
        dtype=array.dtype,  # type: ignore[attr-defined]
        fill_value=0,
    )
    stored[...] = array
    datasets = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * array.ndim}]}]
    write_multiscales_metadata(group, datasets, fmt=FormatV05(), axes=[_AXIS[a] for a in axes], name=name)


def store_path(out: Path, name: str) -> Path:
    """The OME-Zarr store of sample ``name`` in the dataset ``out``."""
    return out / STORES / f"{name}.ome.zarr"


def write_ome_zarr(out: Path, samples: Sequence[ExportSample], split: Mapping[str, str]) -> None:
    """One OME-Zarr image with its instance label image per sample (see the module docstring)."""
    try:
        import zarr
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata
    except ImportError:
        raise ExportError(
            "the OME-Zarr export needs zarr and ome-zarr: pip install 'napari-sine[scale]'"
        ) from None
    (out / STORES).mkdir()
    for s in samples:
        image, axes = s.spatial_channel_first()
        root = zarr.open_group(str(store_path(out, s.name)), mode="w-", zarr_format=3)
        _level(root, np.ascontiguousarray(image), axes, s.name)
        labels_group = root.create_group("labels")
        label_group = labels_group.create_group(LABEL_NAME)
        _level(label_group, np.asarray(s.labels).astype(np.uint32), "yx", LABEL_NAME)
        write_label_metadata(labels_group, LABEL_NAME, fmt=FormatV05())

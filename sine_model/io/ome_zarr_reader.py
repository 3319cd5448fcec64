"""OME-Zarr (NGFF) multiscale images as lazy targets: pick a resolution level, read one plane at a time.

The image is opened with ``ome-zarr``'s reader when it is installed (any NGFF version it knows, zarr
format 2 or 3), else through the ``multiscales`` metadata with zarr alone. Levels are dask arrays: nothing
is read until a plane is computed. Axes of length 1 (a single time point, channel or z plane) are
dropped, so a ``(1, 1, 1, Y, X)`` image is one 2D target and ``(T, 1, 1, Y, X)`` a stack of ``T``
(``--stack-axis 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sine_model.errors import InputFileError

__all__ = ["multiscales_of", "open_multiscale_level"]


def multiscales_of(node: Any) -> list | None:
    """The ``multiscales`` metadata of a zarr group (NGFF 0.4 top-level or 0.5 under ``ome``), or None."""
    attrs = node.attrs.asdict() if hasattr(node.attrs, "asdict") else dict(node.attrs)
    return attrs.get("ome", attrs).get("multiscales") or attrs.get("multiscales") or None


def _levels_with_ome_zarr(path: Path) -> tuple[list[Any], list[str]] | None:
    try:
        from ome_zarr.io import parse_url
        from ome_zarr.reader import Multiscales, Reader
    except ImportError:
        return None
    location = parse_url(str(path), mode="r")
    if location is None:
        return None
    for node in Reader(location)():
        if any(isinstance(spec, Multiscales) for spec in node.specs) and node.data:
            axes = [a["name"] if isinstance(a, dict) else str(a) for a in node.metadata.get("axes", [])]
            return list(node.data), axes
    return None


def _levels_with_zarr(group: Any, multiscales: list) -> tuple[list[Any], list[str]]:
    import dask.array as da

    first = multiscales[0]
    axes = [a["name"] if isinstance(a, dict) else str(a) for a in first.get("axes", [])]
    return [da.from_zarr(group[d["path"]]) for d in first["datasets"]], axes


def open_multiscale_level(path: str | Path, group: Any, level: int | None = None) -> Any:
    """One level of an OME-Zarr multiscale image, as a lazy dask array without its length-1 axes.

    Parameters
    ----------
    path : str or Path
        The image group (the folder whose metadata holds ``multiscales``).
    group : zarr.Group
        That group, opened.
    level : int, optional
        Resolution level, 0 = full resolution (the default).

    Raises
    ------
    InputFileError
        When the level does not exist (the message lists the levels and their shapes).
    """
    path = Path(path)
    try:
        found = _levels_with_ome_zarr(path) or _levels_with_zarr(group, multiscales_of(group))
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputFileError(f"Cannot read {path}: damaged OME-Zarr multiscales metadata ({exc}).") from exc
    levels, axes = found
    level = 0 if level is None else int(level)
    if not 0 <= level < len(levels):
        shapes = ", ".join(f"{i}: {tuple(a.shape)}" for i, a in enumerate(levels))
        raise InputFileError(f"{path} has no level {level}; its levels are {shapes} (--level N picks one).")
    array = levels[level]
    singletons = tuple(i for i, s in enumerate(array.shape) if s == 1 and i < array.ndim - 2)
    return array.squeeze(axis=singletons) if singletons else array

"""Groups of labelled images from a folder (DSB2018-like layout), loaded lazily.

Layout: ``root/images/<id>.png|tif|tiff|jpg|jpeg`` and ``root/labels/<id>.tif|tiff|png`` (instance
labels, 0 = background, same file stem), plus an optional ``manifest.csv`` with a group column.
Files are read (tifffile / imageio through :func:`sine_model.io.readers.read_image`) only when the pair
sampler first needs them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sine_model.io.readers import read_image
from sine_model.training.pairs import PairItem

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
LABEL_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class FileItem:
    """A lazily loaded image / label file pair; calling it reads both files.

    Parameters
    ----------
    image_path, label_path : pathlib.Path
        Image file and instance label file.
    channel_axis : int or None, optional
        Channel axis of a 3-D image.
    """

    image_path: Path
    label_path: Path
    channel_axis: int | None = None

    def __call__(self) -> PairItem:
        """Read the files into a :class:`PairItem` (all objects class 1)."""
        return PairItem(read_image(self.image_path), read_image(self.label_path),
                        channel_axis=self.channel_axis, name=self.image_path.name)


def _read_manifest(path: Path, id_column: str, group_column: str) -> list[tuple[str, str]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in (id_column, group_column):
            if column not in columns:
                raise ValueError(f"manifest {path} has no column {column!r} (columns: {columns})")
        return [(row[id_column], row[group_column]) for row in reader]


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def folder_groups(
    root: str | os.PathLike[str],
    manifest: str | os.PathLike[str] | None = None,
    *,
    group_column: str = "group",
    id_column: str = "image_id",
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    channel_axis: int | None = None,
) -> dict[str, list[FileItem]]:
    """Groups of lazily loaded items from a folder ``root/images`` + ``root/labels``.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding ``images/<id>.png|tif|tiff|jpg|jpeg`` and ``labels/<id>.tif|tiff|png``
        (instance labels with the same file stem).
    manifest : str or os.PathLike, optional
        CSV with one row per image (``id_column`` = file stem, ``group_column`` = group name), in
        the order wanted. Defaults to ``root/manifest.csv`` when it exists; without a manifest every
        image of ``images/`` forms one group named ``"all"``.
    group_column, id_column : str, optional
        Manifest column names.
    include : sequence of str, optional
        Keep only these groups.
    exclude : sequence of str, optional
        Drop these groups (e.g. held out for evaluation).
    channel_axis : int or None, optional
        Channel axis of 3-D images (None: 2-D, RGB or RGBA).

    Returns
    -------
    dict of str to list of FileItem
        Group name -> items in manifest (or file name) order; pass it to
        :class:`~sine_model.training.pairs.PairSampler`.

    Raises
    ------
    ValueError
        Missing folders, manifest columns, image or label files, unknown ``include`` names, or no
        group left.
    """
    root = Path(root)
    images_dir, labels_dir = root / "images", root / "labels"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder; expected {root}/images and {root}/labels")
    if manifest is None and (root / "manifest.csv").is_file():
        manifest = root / "manifest.csv"
    if manifest is not None:
        rows = _read_manifest(Path(manifest), id_column, group_column)
    else:
        files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        rows = [(p.stem, "all") for p in files]
    groups: dict[str, list[FileItem]] = {}
    missing = []
    for stem, group in rows:
        image_path = _find(images_dir, stem, IMAGE_SUFFIXES)
        label_path = _find(labels_dir, stem, LABEL_SUFFIXES)
        if image_path is None or label_path is None:
            missing.append(stem)
            continue
        groups.setdefault(group, []).append(FileItem(image_path, label_path, channel_axis))
    if missing:
        raise ValueError(f"{len(missing)} images lack an image or label file under {root}: {missing[:5]}")
    if include is not None:
        unknown = sorted(set(include) - set(groups))
        if unknown:
            raise ValueError(f"include names unknown groups {unknown}; known: {sorted(groups)}")
        groups = {k: v for k, v in groups.items() if k in set(include)}
    groups = {k: v for k, v in groups.items() if k not in set(exclude)}
    if not groups:
        raise ValueError(f"No labelled images found under {root} (after include/exclude)")
    return groups

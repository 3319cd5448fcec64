"""Reading back what ``napari-sine propagate`` wrote: label maps per mode and target, and ``scores.csv``.

Every layout of :mod:`sine_model.io.result_writer` is read: ``labels_<mode>.tif`` (a page per target),
``labels_<mode>.zarr``, ``labels_<mode>/NNNNN.tif`` and ``labels.ome.zarr``. Label maps are read one
target at a time (:meth:`ResultsFolder.labels`), so a long run is not loaded whole.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from sine_model.errors import InputFileError
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME, OmeZarrLabels
from sine_model.io.result_writer import SCORE_COLUMNS, SCORES_NAME, output_names
from sine_model.modes import MODES

__all__ = ["ScoreRow", "ResultsFolder", "read_results"]


@dataclass(frozen=True)
class ScoreRow:
    """One row of ``scores.csv`` (the fields of :class:`~sine_model.engine.stitching.ObjectScore`)."""

    target: int
    label: int
    mode: str
    score: float
    source: str


class _TiffStack:
    def __init__(self, path: Path) -> None:
        self.path = path
        with tifffile.TiffFile(path) as tif:
            self.n = len(tif.pages)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> np.ndarray:
        return tifffile.imread(self.path, key=int(index))


class _Files:
    def __init__(self, folder: Path) -> None:
        self.files = sorted(folder.glob("*.tif"))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return tifffile.imread(self.files[int(index)])


class _Zarr:
    def __init__(self, array: Any) -> None:
        self.array = array

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: int) -> np.ndarray:
        return np.asarray(self.array[int(index)])


class ResultsFolder:
    """A results folder of ``napari-sine propagate`` (see :func:`read_results`)."""

    def __init__(self, folder: Path, stacks: dict[str, Any], scores: dict[int, list[ScoreRow]]) -> None:
        self.folder, self._stacks, self._scores = folder, stacks, scores

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes found, in :data:`~sine_model.modes.MODES` order."""
        return tuple(self._stacks)

    @property
    def n_targets(self) -> int:
        """Number of targets (the shortest mode's, should an interrupted run differ)."""
        return min(len(s) for s in self._stacks.values())

    def labels(self, index: int) -> dict[str, np.ndarray]:
        """Mode → label map ``(H, W)`` of target ``index``."""
        if not 0 <= index < self.n_targets:
            raise IndexError(f"target {index} is not in {self.folder} (targets 0..{self.n_targets - 1})")
        return {mode: np.asarray(stack[index]) for mode, stack in self._stacks.items()}

    def scores(self, index: int) -> list[ScoreRow]:
        """The ``scores.csv`` rows of target ``index``."""
        return list(self._scores.get(int(index), []))


def _read_scores(path: Path) -> dict[int, list[ScoreRow]]:
    rows: dict[int, list[ScoreRow]] = defaultdict(list)
    if not path.is_file():
        return rows
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != SCORE_COLUMNS:
            raise InputFileError(
                f"{path} has columns {reader.fieldnames}, expected {list(SCORE_COLUMNS)}: "
                "is it a napari-sine scores.csv?"
            )
        for n, row in enumerate(reader, start=2):
            try:
                item = ScoreRow(
                    int(row["target"]),
                    int(row["label"]),
                    row["mode"],
                    float(row["score"]),
                    row["source"] or "",
                )
            except (TypeError, ValueError):
                raise InputFileError(f"{path} line {n} is not a valid score row: {row}") from None
            rows[item.target].append(item)
    return rows


def read_results(folder: str | os.PathLike[str]) -> ResultsFolder:
    """Open a results folder written by ``napari-sine propagate`` (any layout).

    Raises
    ------
    InputFileError
        The folder does not exist or holds no label maps.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder} is not a folder: give the --out folder of `napari-sine propagate`")
    stacks: dict[str, Any] = {}
    store = folder / OME_ZARR_NAME
    if store.is_dir():
        labels = OmeZarrLabels.open(store)
        stacks = {m: _Zarr(labels.arrays[m]) for m in MODES if m in labels.arrays}
    for mode in MODES:
        tif, zarr_path, files = (folder / n for n in output_names(mode))
        if mode in stacks:
            continue
        if tif.is_file():
            stacks[mode] = _TiffStack(tif)
        elif zarr_path.is_dir():
            import zarr

            stacks[mode] = _Zarr(zarr.open_array(str(zarr_path), mode="r"))
        elif files.is_dir():
            stacks[mode] = _Files(files)
    if not stacks:
        raise InputFileError(
            f"{folder} holds no label maps (labels_<mode>.tif, .zarr, folders or "
            f"{OME_ZARR_NAME}): give the --out folder of `napari-sine propagate`"
        )
    return ResultsFolder(folder, stacks, _read_scores(folder / SCORES_NAME))

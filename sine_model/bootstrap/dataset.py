"""What an export is made of: samples, their seeded train/val split, and the files every format shares.

* :class:`ExportSample` — one labelled image (a reference, or an accepted / corrected target) with the
  source it came from; images are kept as they are (dtype, channels).
* :func:`split_samples` — a seeded train/val split stratified by source file: every source gives about
  ``val_fraction`` of its samples to validation (sources with one sample are pooled into one stratum), so
  the same samples and seed give the same split on any machine.
* :func:`prepare_folder` — an export goes into an empty (or new) folder; a non-empty one is refused unless
  ``overwrite``, and then only the names an export writes are replaced. A folder holding a source file
  is always refused: an export never touches the user's files.
* :func:`write_common` — ``split.csv`` (the manifest), ``recipe.json`` (how the labels were made) and
  ``SHA256SUMS`` (``sha256sum -c`` format, every file of the export).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.errors import InputError

__all__ = [
    "ExportSample",
    "ExportError",
    "split_samples",
    "prepare_folder",
    "write_common",
    "sha256_file",
    "SPLIT_NAME",
    "RECIPE_NAME",
    "CHECKSUMS_NAME",
    "EXPORT_NAMES",
]

SPLIT_NAME = "split.csv"
RECIPE_NAME = "recipe.json"
CHECKSUMS_NAME = "SHA256SUMS"
#: Every top-level name an export may write (the only names ``overwrite=True`` replaces).
EXPORT_NAMES: tuple[str, ...] = (
    SPLIT_NAME,
    RECIPE_NAME,
    CHECKSUMS_NAME,
    "images",
    "masks",
    "labels",
    "annotations",
    "ome_zarr",
    "manifest.csv",
    "manifest_train.csv",
    "train.toml",
)
_SINGLES = "(sources with one sample)"


class ExportError(InputError):
    """An export that cannot be made as asked (folder, samples or options)."""


@dataclass(frozen=True)
class ExportSample:
    """One labelled image of an exported dataset.

    Parameters
    ----------
    name : str
        File stem in the dataset (unique; letters, digits, ``-``, ``_``, ``.``).
    image : ndarray
        The image as it is (2D, or 3D with channels; any dtype).
    labels : ndarray
        Instance labels ``(H, W)``, 0 = background.
    source : str
        The file (or layer) the image came from: the split's stratum.
    kind : {"reference", "target"}
        Whether it was a reference or a reviewed target.
    status : str
        Review state (``reference`` for references, ``accepted`` / ``corrected`` for targets).
    classes : mapping, optional
        Label value → class id (default: every object class 1).
    channel_axis : int, optional
        Channel axis of a 3D image (default: last when it has 3 or 4 channels, else first).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    source: str
    kind: str = "target"
    status: str = "accepted"
    classes: Mapping[int, int] = field(default_factory=dict)
    channel_axis: int | None = None

    def class_of(self, label: int) -> int:
        """Class id of object ``label``."""
        return int(self.classes.get(int(label), 1))

    def spatial_channel_first(self) -> tuple[np.ndarray, str]:
        """The image with channels first (``(C, H, W)``) and its NGFF axes ("yx" or "cyx")."""
        image = np.asarray(self.image)
        if image.ndim == 2:
            return image, "yx"
        axis = self.channel_axis
        if axis is None:
            axis = -1 if image.shape[-1] in (3, 4) else 0
        return np.moveaxis(image, axis, 0), "cyx"


def check_samples(samples: Sequence[ExportSample]) -> None:
    """Refuse an empty export, duplicate or unsafe names, and labels that do not fit their image."""
    if not samples:
        raise ExportError(
            "nothing to export: accept or correct some targets first (references alone "
            "are exported with them)"
        )
    names = [s.name for s in samples]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ExportError(f"sample names must be unique, these repeat: {duplicates[:5]}")
    for s in samples:
        if not s.name or any(c in s.name for c in '/\\:*?"<>|') or s.name.startswith("."):
            raise ExportError(f"sample name {s.name!r} cannot be a file name: use letters, digits, - _ .")
        image, labels = np.asarray(s.image), np.asarray(s.labels)
        spatial = image.shape if image.ndim == 2 else s.spatial_channel_first()[0].shape[1:]
        if labels.ndim != 2 or tuple(spatial) != labels.shape or labels.dtype.kind not in "iub":
            raise ExportError(
                f"sample {s.name}: labels {labels.shape} ({labels.dtype}) must be integer "
                f"and match the image's height and width {tuple(spatial)}"
            )


def split_samples(
    samples: Sequence[ExportSample],
    val_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, str]:
    """Name → "train" or "val": a seeded split stratified by ``source``.

    Each source with ``n >= 2`` samples gives ``round(val_fraction * n)`` of them (at least 1, at most
    ``n - 1``) to validation, chosen by a generator seeded with ``seed``; sources with one sample are
    pooled and split the same way. References always go to training (they are the user's own labels
    that every proposal was made from).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ExportError(f"val_fraction must be in [0, 1), got {val_fraction}")
    split = {s.name: "train" for s in samples}
    strata: dict[str, list[str]] = {}
    for s in samples:
        if s.kind != "reference":
            strata.setdefault(s.source, []).append(s.name)
    singles = sorted(n for names in strata.values() if len(names) == 1 for n in names)
    groups = {k: sorted(v) for k, v in strata.items() if len(v) > 1}
    if singles:
        groups[_SINGLES] = singles
    rng = np.random.default_rng(seed)
    for source in sorted(groups):
        names = groups[source]
        n_val = (
            0
            if val_fraction == 0 or len(names) < 2
            else min(len(names) - 1, max(1, round(val_fraction * len(names))))
        )
        for position in rng.permutation(len(names))[:n_val]:
            split[names[int(position)]] = "val"
    return split


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def prepare_folder(
    out: str | os.PathLike[str], overwrite: bool = False, sources: Iterable[str | os.PathLike[str]] = ()
) -> Path:
    """Make ``out`` ready for an export and return it.

    Raises
    ------
    ExportError
        ``out`` is a file, is not empty (without ``overwrite``), or holds one of ``sources``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file: choose a folder for the dataset")
    inside = [str(p) for p in sources if Path(p).exists() and _inside(Path(p), out)]
    if inside:
        raise ExportError(
            f"{out} holds source files ({inside[:3]}): export into another folder, an export "
            "never writes where its sources are"
        )
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(
                f"{out} is not empty: choose an empty or new folder, or overwrite (replaces "
                "only the files an export writes)"
            )
        for name in EXPORT_NAMES:
            _remove(out / name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _written_by_export(top: str) -> bool:
    return top in EXPORT_NAMES


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_common(
    out: Path, samples: Sequence[ExportSample], split: Mapping[str, str], recipe: Mapping[str, Any]
) -> None:
    """Write ``split.csv`` and ``recipe.json``, then ``SHA256SUMS`` over every file in ``out``."""
    with open(out / SPLIT_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "split", "source", "kind", "status"])
        for s in samples:
            writer.writerow([s.name, split[s.name], s.source, s.kind, s.status])
    (out / RECIPE_NAME).write_text(json.dumps(dict(recipe), indent=1, default=str), encoding="utf-8")
    files = sorted(
        p
        for p in out.rglob("*")
        if p.is_file() and p.name != CHECKSUMS_NAME and _written_by_export(p.relative_to(out).parts[0])
    )
    lines = [f"{sha256_file(p)}  {p.relative_to(out).as_posix()}" for p in files]
    (out / CHECKSUMS_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


def verify_checksums(out: str | os.PathLike[str]) -> list[str]:
    """Files of an export whose sha256 differs from ``SHA256SUMS`` (or that are missing)."""
    out = Path(out)
    bad = []
    for line in (out / CHECKSUMS_NAME).read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        path = out / name
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name)
    return bad

"""Per-target records of a resumable run: each finished target's scores and checksums, one small file each.

A record is written (atomically: a temporary file renamed into place) after the target's label maps are
in the OME-Zarr store, by whichever process ran the target, so writers never share a file. When every
target is finished, :func:`write_scores_table` joins the records, in target order, into ``scores.csv``
(the columns of :data:`~sine_model.io.result_writer.SCORE_COLUMNS`, the same rows the TIFF layouts write).

Records live under ``.sine-run/targets/<index // 1000>/<index>.json`` in the output directory, beside
the run manifest ``sine-run.json`` (:mod:`sine_model.engine.run_manifest`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.io.result_writer import SCORE_COLUMNS, SCORES_NAME

__all__ = ["MANIFEST_NAME", "RUN_DIR", "TargetRecord", "atomic_write_text", "checksum", "read_record",
           "record_path", "remove_records", "write_record", "write_scores_table"]

#: Hidden folder of a run's bookkeeping inside the output directory.
RUN_DIR = ".sine-run"
#: The run manifest, beside the results.
MANIFEST_NAME = "sine-run.json"
_PER_FOLDER = 1000


def checksum(array: Any) -> str:
    """A 128-bit BLAKE2b digest of an array's dtype, shape and values (C order)."""
    array = np.ascontiguousarray(np.asarray(array))
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class TargetRecord:
    """What a finished target left besides its label maps.

    Parameters
    ----------
    index : int
        Target index in the whole run.
    target_sha : str
        :func:`checksum` of the target's pixels as read (detects a changed input on resume).
    labels_sha : dict
        Mode → :func:`checksum` of the label map as stored (``uint32``; detects a damaged store on resume).
    scores : list of [label, mode, score, source]
        One row per object, the score already formatted as in ``scores.csv``.
    """

    index: int
    target_sha: str
    labels_sha: dict[str, str] = field(default_factory=dict)
    scores: list[list[Any]] = field(default_factory=list)

    @classmethod
    def from_result(cls, index: int, result: Any, modes: Iterable[str], target_sha: str) -> TargetRecord:
        """The record of an engine ``TargetResult`` (its own ``index`` is ignored: ``index`` is the run's)."""
        modes = tuple(modes)
        rows = [[int(s.label), s.mode, f"{float(s.score):.6g}", s.source] for s in result.scores
                if s.mode in modes]
        labels_sha = {m: checksum(np.asarray(result.labels[m]).astype(np.uint32, copy=False)) for m in modes}
        return cls(int(index), target_sha, labels_sha, rows)

    def to_json(self) -> str:
        return json.dumps({"index": self.index, "target_sha": self.target_sha, "labels_sha": self.labels_sha,
                           "scores": self.scores}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TargetRecord:
        data = json.loads(text)
        return cls(int(data["index"]), str(data["target_sha"]), dict(data["labels_sha"]),
                   list(data["scores"]))


def record_path(out_dir: str | os.PathLike[str], index: int) -> Path:
    """Where target ``index``'s record lives."""
    return Path(out_dir) / RUN_DIR / "targets" / f"{index // _PER_FOLDER:06d}" / f"{index:09d}.json"


def write_record(out_dir: str | os.PathLike[str], record: TargetRecord) -> None:
    """Write ``record`` atomically (a crash leaves the old file or none, never half of one)."""
    path = record_path(out_dir, record.index)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, record.to_json())


def read_record(out_dir: str | os.PathLike[str], index: int) -> TargetRecord | None:
    """Target ``index``'s record, or None when it is missing or damaged (the target must run again)."""
    try:
        record = TargetRecord.from_json(record_path(out_dir, index).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if record.index == index else None


def remove_records(out_dir: str | os.PathLike[str]) -> None:
    """Delete every record of the run in ``out_dir`` (starting over)."""
    import shutil

    folder = Path(out_dir) / RUN_DIR / "targets"
    if folder.is_dir():
        shutil.rmtree(folder)


def write_scores_table(out_dir: str | os.PathLike[str], indices: Iterable[int],
                       read: Callable[[int], TargetRecord | None] | None = None,
                       modes: Mapping[str, Any] | Iterable[str] | None = None) -> Path:
    """Join the records of ``indices`` (in that order) into ``scores.csv``, written atomically.

    Raises
    ------
    FileNotFoundError
        When a record is missing or damaged (that target is not finished).
    """
    out_dir = Path(out_dir)
    read = read or (lambda i: read_record(out_dir, i))
    wanted = None if modes is None else set(modes)
    final = out_dir / SCORES_NAME
    tmp = out_dir / f".{SCORES_NAME}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(SCORE_COLUMNS)
            for index in indices:
                record = read(index)
                if record is None:
                    raise FileNotFoundError(f"target {index} has no readable record in {out_dir / RUN_DIR}")
                writer.writerows([index, *row] for row in record.scores
                                 if wanted is None or row[1] in wanted)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final

"""Resumable runs: results written target by target into an OME-Zarr store, with a manifest of what is done.

An output directory of a resumable run holds ``labels.ome.zarr`` (:mod:`sine_model.io.ome_zarr_labels`),
``sine-run.json`` (:mod:`sine_model.engine.run_manifest`), the per-target records under ``.sine-run/``
(:mod:`sine_model.io.target_records`) and, once every target is finished, ``scores.csv``.

:class:`RunLedger` owns that bookkeeping. For each target, in this order: its label maps go into the
store (each chunk written through a temporary file), its record is written atomically, then the manifest
marks it finished. A crash at any point leaves a target either finished (all three done) or to be run
again, and running it again rewrites the same chunks and record, so a resumed run ends with the same
files as an uninterrupted one. On resume the ledger checks a sample of finished targets (first, last and
two between): their input pixels must have the recorded checksum (else the inputs changed and it refuses)
and their label maps too (else the target runs again, like a target whose record is missing).

:func:`propagate_pending` runs the unfinished targets in this process; the distributed runner
(:mod:`sine_model.scaleout`) runs them on dask workers through the same ledger.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.engine.inputs import check_target_layout, image_layout
from sine_model.engine.run_manifest import RunManifest, RunStateError, differences
from sine_model.errors import PropagationError
from sine_model.io.file_targets import FileTargets, read_plane
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME, OmeZarrLabels
from sine_model.io.result_writer import SCORES_NAME
from sine_model.io.target_records import (
    RUN_DIR,
    TargetRecord,
    checksum,
    read_record,
    record_path,
    write_record,
    write_scores_table,
)

__all__ = ["ArrayTargets", "RunLedger", "RunStateError", "TargetSink", "as_target_source", "checked_target",
           "plane_shape", "propagate_pending"]


class ArrayTargets:
    """In-memory or lazy targets (a list of images, or an array with a stack axis) indexed 0 … N-1."""

    def __init__(self, targets: Any, stack_axis: int | None = None) -> None:
        if isinstance(targets, (list, tuple)):
            if stack_axis is not None:
                raise PropagationError("stack_axis applies to one stacked array, not to a list of images")
            self._items, self._axis = list(targets), None
        elif hasattr(targets, "shape") and hasattr(targets, "__getitem__"):
            self._items = [targets] if stack_axis is None else targets
            if stack_axis is not None and not -targets.ndim <= stack_axis < targets.ndim:
                raise PropagationError(f"stack_axis {stack_axis} is out of range for {targets.ndim}-D "
                                       "targets")
            self._axis = None if stack_axis is None else stack_axis % targets.ndim
        else:
            raise PropagationError("a resumable or distributed run needs targets it can index (an array, a "
                                   f"stack or a list of arrays), not a {type(targets).__name__}")
        self.shape = None if self._axis is None else tuple(targets.shape)

    def __len__(self) -> int:
        return len(self._items) if self._axis is None else int(self.shape[self._axis])

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(f"target {index} out of range ({len(self)} targets)")
        if self._axis is None:
            return self._items[index]
        return self._items[tuple(index if i == self._axis else slice(None) for i in range(len(self.shape)))]

    def read(self, index: int) -> np.ndarray:
        return read_plane(self[index])

    def identity(self) -> dict[str, Any]:
        shapes = sorted({tuple(int(s) for s in self[i].shape) for i in range(len(self))})
        return {"kind": "arrays", "targets": len(self), "shapes": [list(s) for s in shapes[:8]]}


def as_target_source(targets: Any, stack_axis: int | None = None) -> Any:
    """``targets`` as an indexable source (a :class:`FileTargets` as is, anything else wrapped)."""
    if isinstance(targets, (FileTargets, ArrayTargets)):
        return targets
    return ArrayTargets(targets, stack_axis)


def plane_shape(source: Any, channel_axis: int | None) -> tuple[int, int]:
    """The one (height, width) of every target (a store holds targets of one size), without reading pixels.

    Raises
    ------
    PropagationError
        When the targets differ in size.
    """
    if isinstance(source, FileTargets):  # every file is one stack: one target per file tells its size
        probes = [int(s) for s in source._starts[:-1]]
    else:
        probes = range(len(source))
    sizes = {image_layout(source[i], channel_axis, f"target {i}")[0] for i in probes}
    if len(sizes) != 1:
        raise PropagationError(f"the targets differ in size ({sorted(sizes)[:4]}): an OME-Zarr store holds "
                               "targets of one size; run each size separately, or use --format files")
    return next(iter(sizes))


def checked_target(index: int, array: np.ndarray, propagator: Any) -> np.ndarray:
    """``array`` (target ``index``) checked against the references: layout and finite values."""
    check_target_layout(index, array, propagator._ref_ndim, propagator._ref_channels, propagator.channel_axis,
                        None)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise PropagationError(f"target {index} contains NaN or inf values; replace them first "
                               "(e.g. numpy.nan_to_num)")
    return array


class TargetSink:
    """Writes finished targets' label maps and records into a run's output directory (any process)."""

    def __init__(self, out_dir: str | Path, modes: Sequence[str]) -> None:
        self.out_dir, self.modes = Path(out_dir), tuple(modes)
        self._store: OmeZarrLabels | None = None

    def write(self, index: int, result: Any, target_sha: str) -> TargetRecord:
        """Store target ``index``'s label maps, then its record; return the record."""
        if self._store is None:
            self._store = OmeZarrLabels.open(self.out_dir / OME_ZARR_NAME, writable=True)
        self._store.write(index, result.labels)
        record = TargetRecord.from_result(index, result, self.modes, target_sha)
        write_record(self.out_dir, record)
        return record


class RunLedger:
    """The manifest, store and records of one resumable run in ``out_dir`` (see the module docstring).

    Parameters
    ----------
    out_dir : str or Path
        Output directory (created when missing).
    identity : mapping
        Everything that shapes the results (JSON values); a run resumes only into the same identity.
    modes : sequence of str
        The modes written.
    n_targets : int
        Number of targets.
    plane_shape : (int, int)
        Height and width of every target.
    restart : bool
        Discard an earlier run's results in ``out_dir`` and start over.
    checkpoint_every : int
        Rewrite the manifest after this many finished targets (1: after each). Larger values spare the
        disk a flushed write per target on fast runs; a crash then runs up to that many targets again.
    """

    def __init__(self, out_dir: str | Path, identity: Mapping[str, Any], modes: Sequence[str], n_targets: int,
                 plane_shape: tuple[int, int], *, restart: bool = False, checkpoint_every: int = 1) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every, self._unsaved = int(checkpoint_every), 0
        self.out_dir, self.identity = Path(out_dir), dict(identity)
        self.modes, self.n_targets, self.plane_shape = tuple(modes), n_targets, plane_shape
        self.restart = restart
        self.manifest: RunManifest | None = None
        self.resumed = 0
        self.sink = TargetSink(self.out_dir, self.modes)

    def _clear(self) -> None:
        for name in (OME_ZARR_NAME, RUN_DIR, SCORES_NAME, "sine-run.json"):
            path = self.out_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def open(self, read_target: Callable[[int], np.ndarray]) -> list[str]:
        """Start the run, or resume the one in ``out_dir``; return warnings about targets to run again.

        Raises
        ------
        RunStateError
            When ``out_dir`` holds a run with another identity, a damaged manifest, or results of a
            non-resumable run (unless ``restart``).
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            manifest = RunManifest.load(self.out_dir)
        except RunStateError:
            if not self.restart:
                raise
            manifest = None
        if self.restart:
            self._clear()
            manifest = None
        if manifest is None:
            if (self.out_dir / OME_ZARR_NAME).exists() or (self.out_dir / SCORES_NAME).exists():
                raise RunStateError(f"{self.out_dir} holds results without a run manifest (not a resumable "
                                    "run, or one whose manifest was deleted): pass --restart to replace them")
            self.manifest = RunManifest(self.identity, self.n_targets)
            self.manifest.save(self.out_dir)
            OmeZarrLabels.create(self.out_dir / OME_ZARR_NAME, self.modes, self.n_targets, self.plane_shape)
            return []
        changed = differences(manifest.identity, self.identity)
        if manifest.n_targets != self.n_targets:
            changed.insert(0, f"targets: {manifest.n_targets} -> {self.n_targets}")
        if changed:
            raise RunStateError(f"{self.out_dir} holds a run with other inputs or options; changed: "
                                f"{'; '.join(changed)}. Pass --restart to discard its results and start "
                                "over, or choose another --out")
        self.manifest = manifest
        store = self.out_dir / OME_ZARR_NAME
        if not len(manifest.finished) or not store.exists():  # nothing finished: (re)create the store
            if store.exists():
                shutil.rmtree(store)
            OmeZarrLabels.create(store, self.modes, self.n_targets, self.plane_shape)
            manifest.finished = type(manifest.finished)()
        self.resumed = len(manifest.finished)
        return self._check_finished(read_target)

    def _check_finished(self, read_target: Callable[[int], np.ndarray]) -> list[str]:
        finished = self.manifest.finished
        redo = [i for i in finished if not record_path(self.out_dir, i).is_file()]
        missing = set(redo)
        done = [i for i in finished if i not in missing]
        picks = (0, len(done) // 3, 2 * len(done) // 3, len(done) - 1)
        sample = sorted({done[k] for k in picks}) if done else []
        try:
            store = OmeZarrLabels.open(self.out_dir / OME_ZARR_NAME)
        except ValueError as exc:
            raise RunStateError(f"{exc} Pass --restart to discard the run in {self.out_dir} and start over"
                                ) from exc
        for index in sample:
            record = read_record(self.out_dir, index)
            if record is None:
                redo.append(index)
                continue
            if checksum(read_target(index)) != record.target_sha:
                raise RunStateError(f"target {index} is not what it was when the run in {self.out_dir} "
                                    "processed it: the inputs changed. Pass --restart to start over")
            try:
                intact = all(checksum(store.read(m, index)) == record.labels_sha.get(m) for m in self.modes)
            except Exception:  # a damaged chunk fails to decode
                intact = False
            if not intact:
                redo.append(index)
        for index in redo:
            finished.discard(index)
        if redo:
            self.manifest.complete = False
            self.manifest.save(self.out_dir)
        self.resumed = len(finished)
        return [f"target {i}: its record or label maps were damaged or missing; it runs again" for i in redo]

    def pending(self) -> list[int]:
        """The targets still to run, in order."""
        return self.manifest.finished.missing(self.n_targets)

    def mark(self, index: int) -> None:
        """Record target ``index`` as finished (its labels and record are written)."""
        self.manifest.finished.add(index)
        self._unsaved += 1
        if self._unsaved >= self.checkpoint_every:
            self.flush()

    def flush(self) -> None:
        """Write the manifest if targets were marked since it was last written."""
        if self._unsaved:
            self.manifest.save(self.out_dir)
            self._unsaved = 0

    @property
    def done(self) -> int:
        """How many targets are finished."""
        return len(self.manifest.finished)

    def finish(self) -> list[Path]:
        """Join the records into ``scores.csv`` and mark the run complete; return the result paths.

        Raises
        ------
        RunStateError
            When targets are still unfinished.
        """
        missing = self.pending()
        self.flush()
        if missing:
            raise RunStateError(f"{len(missing)} target(s) are not finished (first: {missing[0]})")
        if not self.manifest.complete or not (self.out_dir / SCORES_NAME).exists():
            write_scores_table(self.out_dir, range(self.n_targets), modes=self.modes)
            self.manifest.complete = True
            self.manifest.save(self.out_dir)
        return [self.out_dir / OME_ZARR_NAME, self.out_dir / SCORES_NAME]


def propagate_pending(propagator: Any, source: Any, ledger: RunLedger, modes: Sequence[str], *,
                      on_target: Callable[[int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> int:
    """Run the ledger's unfinished targets in this process, each written and marked as it finishes.

    Targets are read one at a time. Returns the number run; stops early (after a finished target) when
    ``should_stop()`` turns true.
    """
    pending = ledger.pending()
    shas: dict[int, str] = {}

    def stream() -> Iterator[np.ndarray]:
        for index in pending:
            array = checked_target(index, source.read(index), propagator)
            shas[index] = checksum(array)
            yield array

    results = propagator.propagate(stream(), modes)
    count = 0
    try:
        for position, result in enumerate(results):
            index = pending[position]
            ledger.sink.write(index, result, shas.pop(index))
            ledger.mark(index)
            count += 1
            if on_target is not None:
                on_target(index)
            if should_stop is not None and should_stop():
                break
    finally:
        results.close()
        ledger.flush()
    return count

"""Resumable, optionally distributed propagation into an OME-Zarr store: the Python entry point.

::

    from sine_model import Propagator, ReferencePreparation, from_pretrained, propagate_distributed

    propagator = Propagator(from_pretrained("sine-embedded"))
    ReferencePreparation(propagator, [(image, labels)], calibrate=True).run()
    summary = propagate_distributed(propagator, FileTargets(["plate.ome.zarr"], stack_axis=0), "out/",
                                    scheduler="local:2")        # or None (this process), "tcp://HOST:8786"

Running the same call again after a crash or an interruption resumes: finished targets are skipped and
the output ends identical to an uninterrupted run's. Other inputs or options are refused unless
``restart=True`` (layout and bookkeeping: :mod:`sine_model.engine.resume`; the cluster side:
:mod:`sine_model.scaleout.dask_runner`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sine_model.engine.reference_state import ReferenceState, capture, model_fingerprint, refiner_fingerprint
from sine_model.engine.resume import RunLedger, as_target_source, plane_shape, propagate_pending
from sine_model.errors import PropagationError
from sine_model.io.target_records import checksum
from sine_model.modes import MODES
from sine_model.scaleout.model_source import ModelSource

__all__ = ["RunSummary", "propagate_distributed", "run_identity"]


@dataclass
class RunSummary:
    """What a call did: targets in the run, finished before it (resumed) and by it, and the outputs."""

    out_dir: Path
    n_targets: int
    resumed: int
    ran: int
    complete: bool
    outputs: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _package_version() -> str:
    try:
        return version("napari-sine")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _rounded(value: Any, digits: int = 4) -> Any:
    """JSON values with floats to ``digits`` significant digits: the same on machines whose float sums differ
    in the last bits (thread counts, BLAS), different when the references differ."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double()
        return [list(value.shape), _rounded(float(value.sum())), _rounded(float((value * value).sum()))]
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _rounded(v, digits) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_rounded(v, digits) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {type(value).__name__: _rounded(dataclasses.asdict(value), digits)}
    if isinstance(value, np.ndarray):
        return checksum(value)
    return repr(value)


def run_identity(state: ReferenceState, source: Any, modes: Sequence[str], model: ModelSource,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything that shapes a run's results, as JSON values (a run resumes only into the same identity).

    The references enter through their label images (checksums) and what was made of them: the tokens'
    sums, the split rules, projection and area floors (floats to 4 significant digits, so that another
    thread count does not count as a change), the fitted refiner's fingerprint; the model through its
    weights' sha256 and the prepared model's fingerprint (an adapted model differs from its file).
    """
    derived = state.derived
    tokens = derived["_tokens"]
    label_images, class_of = derived["_ref_labels"]
    refiner = derived["refiner"]
    return {
        "version": _package_version(),
        "modes": list(modes),
        "inputs": source.identity(),
        "model": {**model.as_dict(), "prepared_fingerprint": state.model_fingerprint},
        "references": {
            "labels": [checksum(labels) for labels in label_images],
            "classes": _rounded(class_of),
            "tokens": _rounded([tokens.id_tokens, tokens.sem_tokens, tokens.ids.tolist(),
                                tokens.id_labels.tolist(), tokens.sem_labels.tolist()]),
            "instance_steps": _rounded(derived["_instance_steps"]),
            "calibrated_steps": _rounded(derived["_calibrated_steps"]),
            "projection": _rounded(derived["_projection"]),
            "min_area": _rounded(derived["_min_area"]),
            "refiner": None if refiner is None else refiner_fingerprint(refiner),
        },
        "engine": state.settings.as_dict(),
        "options": dict(extra or {}),
    }


def propagate_distributed(
    propagator: Any,
    targets: Any,
    out_dir: str | os.PathLike[str],
    modes: Sequence[str] = MODES,
    *,
    stack_axis: int | None = None,
    scheduler: Any = "local",
    model: str | os.PathLike[str] | ModelSource | None = None,
    restart: bool = False,
    options: Mapping[str, Any] | None = None,
    device: str | None = None,
    max_in_flight: int | None = None,
    checkpoint_every: int = 1,
    on_target: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_open: Callable[[RunLedger], None] | None = None,
) -> RunSummary:
    """Propagate a prepared propagator's references to every target, resumably, into ``out_dir``.

    Parameters
    ----------
    propagator : Propagator
        With its references set (and calibrated or given a refiner, if wanted).
    targets : FileTargets, array, stack or list of arrays
        The targets, all of one size (a generator cannot be resumed).
    out_dir : str or os.PathLike
        Output directory: ``labels.ome.zarr``, ``scores.csv``, ``sine-run.json``.
    modes : sequence of str
        Modes to write.
    stack_axis : int, optional
        Axis of the stack when ``targets`` is one array.
    scheduler : str, distributed.Client or None
        None runs in this process; ``"local"``/``"local:N"`` starts N worker processes here; an address
        (``"tcp://HOST:8786"``) uses a running cluster; a ``Client`` is used as is.
    model : str, path or ModelSource, optional
        The weights the propagator's model was loaded from (default: its preset), for the workers.
    restart : bool
        Discard a previous run in ``out_dir`` and start over.
    options : mapping, optional
        More values that shape the results (recorded in the manifest; the CLI passes its options).
    device : str, optional
        Workers' device (default: each picks CUDA, MPS, then CPU).
    max_in_flight : int, optional
        Targets submitted to the cluster and not yet finished, at most (default: twice its threads).
    checkpoint_every : int
        Rewrite the run manifest after this many finished targets (see
        :class:`~sine_model.engine.resume.RunLedger`; not part of the run's identity).
    on_target, should_stop, on_open : callable, optional
        Called with each finished target's index; asked after each whether to stop (the run stays
        resumable); called with the opened ledger before any target runs (progress displays).

    Returns
    -------
    RunSummary

    Raises
    ------
    RunStateError
        ``out_dir`` holds a run with other inputs or options (pass ``restart=True``), or is damaged.
    PropagationError
        Bad targets (different sizes, wrong channels, NaN: named by index).
    """
    source = as_target_source(targets, stack_axis)
    if len(source) == 0:
        raise PropagationError("no targets to propagate to")
    state = capture(propagator)
    if isinstance(model, ModelSource):
        source_of_model = model
    elif model is not None:
        source_of_model = ModelSource.resolve(model)
    elif scheduler is None and getattr(propagator.model, "preset", None) is None:
        source_of_model = ModelSource("(in memory)", model_fingerprint(propagator.model))
    else:
        source_of_model = ModelSource.of_model(propagator.model)
    shape = plane_shape(source, propagator.channel_axis)
    identity = run_identity(state, source, modes, source_of_model, options)
    ledger = RunLedger(out_dir, identity, modes, len(source), shape, restart=restart,
                       checkpoint_every=checkpoint_every)
    warnings = ledger.open(source.read)
    if on_open is not None:
        on_open(ledger)
    resumed = ledger.resumed
    if scheduler is None:
        ran = propagate_pending(propagator, source, ledger, modes, on_target=on_target,
                                should_stop=should_stop)
    else:
        ran = _run_distributed(scheduler, ledger, state, source, modes, source_of_model, device,
                               max_in_flight, on_target, should_stop)
    complete = not ledger.pending()
    outputs = ledger.finish() if complete else []
    return RunSummary(Path(out_dir), len(source), resumed, ran, complete, outputs, warnings)


def _run_distributed(scheduler: Any, ledger: RunLedger, state: ReferenceState, source: Any,
                     modes: Sequence[str], model: ModelSource, device: str | None, max_in_flight: int | None,
                     on_target: Callable[[int], None] | None, should_stop: Callable[[], bool] | None) -> int:
    try:
        from sine_model.scaleout import dask_runner
    except ImportError as exc:
        raise ImportError("distributed runs need dask.distributed: pip install 'napari-sine[scale]'") from exc
    if not ledger.pending():
        return 0
    client, cluster, threads = dask_runner.open_client(scheduler)
    try:
        return dask_runner.run_on_cluster(client, ledger, state, source, modes, model, device=device,
                                          torch_threads=threads, max_in_flight=max_in_flight,
                                          on_target=on_target, should_stop=should_stop)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()

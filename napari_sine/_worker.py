"""The work that runs off napari's main thread: load the model, encode references, propagate.

:func:`propagation_steps` is a plain generator (no Qt, no napari): the widget runs it in a
``napari.qt.threading`` generator worker. It yields a :class:`Status` while loading, one
:class:`Started` when the references are encoded, then one ``TargetResult`` per target. Cancelling the
worker stops at the next yield, that is within one target, and keeps what was yielded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the model code (torch) is imported by the worker thread, when a run loads the model
    from sine_model import Propagator, TargetResult

__all__ = ["RunRequest", "Status", "Started", "ModelHolder", "RunFailed", "propagation_steps"]


class RunFailed(Exception):
    """Any error of a run, wrapped.

    superqt's generator worker treats a ``RuntimeError`` raised by the generator as "the worker was
    deleted": it would swallow it and never emit ``finished``. Torch errors (out of memory, …) and
    the weights errors are ``RuntimeError`` subclasses, so every error leaves the generator wrapped.

    Parameters
    ----------
    error : Exception
        The original error (also ``__cause__``).
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class RunRequest:
    """Everything a run needs, gathered on the main thread.

    Parameters
    ----------
    preset : str
        Preset name (its weights must be installed).
    device : str
        ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
    modes : tuple of str
        Modes to propagate.
    thresholds : mapping
        Per-mode score thresholds.
    scale : float or None
        Resize factor before tiling; None: chosen from the reference objects' size.
    memory : bool
        Time-lapse memory for ID proposals.
    pairs : sequence of (image, labels)
        Reference pairs as 2D arrays.
    classes : mapping or None
        Label → class id.
    targets : sequence
        2D target images (numpy views or lazy arrays), in run order.
    channel_axis : int or None
        -1 for RGB images.
    precision : str
        Autocast precision (``auto``, ``fp32``, ``bf16``, ``fp16``).
    batch_size : int or None
        Tiles per model call; None (default): the engine's automatic batching (each target's tiles in
        calls of about a million input pixels, results still streamed target by target).
    calibrate : bool or None
        Choose the scale and the instance split rules on the references first
        (:func:`sine_model.fitting.calibration.calibrate`; the chosen scale replaces ``scale``).
    adapt_steps : int or None
        Test-time adaptation steps (0 = none): the neck and decoder of a copy of the model are
        fine-tuned on the references first (:func:`sine_model.fitting.adaptation.adapt_propagator`).
    refine_steps : int or None
        Training steps of the full-resolution refiner (0 = none), fitted on the references after any
        adaptation (:func:`sine_model.fitting.refiner.fit_refiner`).

    ``None`` for any of the last three: what the preset's fitting recipe says
    (:class:`sine_model.FittingRecipe`).
    """

    preset: str
    device: str
    modes: tuple[str, ...]
    thresholds: Mapping[str, float]
    scale: float | None
    memory: bool
    pairs: Sequence[tuple[np.ndarray, np.ndarray]]
    classes: Mapping[int, int] | None
    targets: Sequence[Any]
    channel_axis: int | None = None
    precision: str = "auto"
    batch_size: int | None = None
    calibrate: bool | None = None
    adapt_steps: int | None = None
    refine_steps: int | None = None


@dataclass(frozen=True)
class Status:
    """A progress message before the first target."""

    message: str


@dataclass(frozen=True)
class Started:
    """References are encoded; targets follow.

    Parameters
    ----------
    total : int
        Number of targets.
    device : str
        Device the model runs on.
    pad : int
        Model input side.
    weights_sha256 : str or None
        SHA-256 of the weights file used.
    adaptation : dict or None
        Summary of the test-time adaptation (``seconds``, ``steps``, ``final_loss``, ``cut_short``), if
        it ran.
    calibration : dict or None
        What the calibration chose (``scale``, ``projection``, ``rules`` per class, held-out ``f1``,
        ``folds``), if it ran.
    refinement : dict or None
        How the refiner was fitted (``seconds``, ``steps``, ``pixels``, ``held_out``, ``final_loss``,
        ``cut_short``), if it was.
    fitting : dict or None
        :meth:`ReferencePreparation.provenance`: the recipe that ran and, per stage asked for, what it
        did or why it stepped aside.
    notes : tuple of str
        :meth:`ReferencePreparation.report`: one line per fitting stage.
    """

    total: int
    device: str
    pad: int
    weights_sha256: str | None
    adaptation: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    refinement: dict[str, Any] | None = None
    fitting: dict[str, Any] | None = None
    notes: tuple[str, ...] = ()


@dataclass
class ModelHolder:
    """Keeps the last model and propagator, so that re-runs reuse the encoder's feature cache.

    Owned by one widget; only one run at a time uses it (the widget disables Run meanwhile).
    """

    key: tuple[Any, ...] | None = None
    propagator: Propagator | None = None
    base_model: Any = None  # the loaded model; a run with adaptation swaps in an adapted copy
    sha256: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, request: RunRequest) -> Propagator:
        """A propagator for the request's model, device, precision, scale and channels."""
        from sine_model import Propagator, from_pretrained, get_preset, installed_weights

        preset = get_preset(request.preset)
        installed = installed_weights(preset)
        sha = installed.sha256 if installed is not None else None
        key = (preset.name, sha, request.device, request.precision, request.scale, request.channel_axis,
               request.batch_size)
        with self._lock:
            if self.key != key or self.propagator is None:
                self.propagator = None  # free the old model before loading another
                model = from_pretrained(preset, device=None)
                self.propagator = Propagator(
                    model,
                    device=request.device,
                    precision=request.precision,
                    pad=preset.input.pad_size,
                    scale=request.scale,
                    batch_size=request.batch_size,
                    channel_axis=request.channel_axis,
                    reserve_cores=1,  # napari's GUI keeps a core (SINE_NUM_THREADS overrides)
                )
                self.key, self.sha256, self.base_model = key, sha, model
            elif self.propagator.model is not self.base_model:  # undo an earlier run's adaptation
                self.propagator.model = self.base_model
            self.propagator.clear_calibration(request.scale)  # undo an earlier run's calibration
            self.propagator.thresholds = {**self.propagator.thresholds, **request.thresholds}
            return self.propagator

    def clear(self) -> None:
        """Forget the model (frees its memory)."""
        with self._lock:
            self.key = self.propagator = self.sha256 = self.base_model = None


def propagation_steps(holder: ModelHolder, request: RunRequest) -> Iterator[Status | Started | TargetResult]:
    """Run one propagation, yielding progress and one result per target.

    Parameters
    ----------
    holder : ModelHolder
        Provides (and caches) the propagator.
    request : RunRequest
        What to run.

    Yields
    ------
    Status, Started or TargetResult

    Raises
    ------
    RunFailed
        Wrapping whatever went wrong.
    """
    try:
        yield Status(f"loading model {request.preset}")
        from sine_model import ReferencePreparation

        propagator = holder.get(request)
        preparation = ReferencePreparation(propagator, request.pairs, request.classes,
                                           calibrate=request.calibrate, adapt_steps=request.adapt_steps,
                                           refine_steps=request.refine_steps)
        for message in preparation.stages():  # checks the references before any adaptation
            yield Status(message)
        fitting = preparation.provenance()
        stages = {name: record for name, record in fitting.items() if isinstance(record, dict)
                  and record.pop("ran", False)}  # stages that stepped aside stay in `fitting` only
        total = propagator.validate_targets(list(request.targets), None, check_values=False)
        yield Started(total, str(propagator.device), propagator.pad, holder.sha256, stages.get("adapt"),
                      stages.get("calibrate"), stages.get("refine"), preparation.provenance(),
                      tuple(preparation.report()))
        yield from propagator.propagate(list(request.targets), request.modes, memory=request.memory)
    except Exception as error:
        raise RunFailed(error) from error

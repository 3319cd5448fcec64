"""One run at a time: start the generator worker, stream results into proposal layers, report.

The controller lives on napari's main thread. The model work happens in a ``napari.qt.threading``
generator worker (:func:`napari_sine._worker.propagation_steps`); each yielded target is written into
the proposal layers here, on the main thread, which is cheap (a copy into an array and a refresh).
The run's new proposal layers are added before the worker starts: napari's share of adding a layer
is the longest main-thread step of a run, and shorter without the model competing for the CPU.
Cancel asks the worker to stop at its next yield (within one target); finished targets stay.
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer

from sine_model import PropagationError, WeightsError

from .._inputs import InputError, ReferenceChoice, TargetPlane, spatial_shape
from .._layers import ProposalSink
from .._provenance import array_digest, cli_command, layer_source, now, versions
from .._worker import ModelHolder, RunFailed, RunRequest, Started, Status, propagation_steps
from .worker_exit import start_tracked

if TYPE_CHECKING:  # the model code (torch) loads in the run's worker, not when the widget opens
    from sine_model import TargetResult

__all__ = ["RunController", "run_records"]

logger = logging.getLogger(__name__)
USER_ERRORS = (PropagationError, InputError, WeightsError)


def run_records(references: Sequence[ReferenceChoice], pairs: Sequence[tuple[np.ndarray, np.ndarray]],
                planes: Sequence[TargetPlane], request: RunRequest,
                package_versions: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Provenance records for the run, one per target layer (JSON-compatible)."""
    from sine_model import get_preset

    preset = get_preset(request.preset)
    refs = [
        {
            "image": {"layer": ref.image.name, "source": layer_source(ref.image),
                      "sha256": array_digest(image)},
            "labels": {"layer": ref.labels.name, "source": layer_source(ref.labels),
                       "sha256": array_digest(labels)},
            "plane": ref.plane,
            "objects": int(len(np.unique(labels)) - (1 if (labels == 0).any() else 0)),
        }
        for ref, (image, labels) in zip(references, pairs, strict=True)
    ]
    parameters = {
        "modes": list(request.modes),
        "thresholds": dict(request.thresholds),
        "scale": request.scale,
        "pad": preset.input.pad_size,
        "instance_source": preset.instance_source,
        "precision": request.precision,
        "device_requested": request.device,
        "memory": request.memory,
        "classes": {str(k): int(v) for k, v in (request.classes or {}).items()},
        "batch_size": request.batch_size,
        "channel_axis": request.channel_axis,
        "calibrate": request.calibrate,  # None: the preset's recipe (the record's "fitting" says what ran)
        "adapt_steps": request.adapt_steps,
        "refine_steps": request.refine_steps,
    }
    base = {
        "created": now(),
        "model": {"preset": preset.name, "official": preset.official, "licence": preset.licence.name,
                  "weights_sha256": None},
        "references": refs,
        "parameters": parameters,
        "versions": dict(package_versions or versions()),
    }
    records: dict[str, dict[str, Any]] = {}
    for plane in planes:
        if plane.layer.name in records:
            continue
        record = copy.deepcopy(base)
        record["target"] = {"layer": plane.layer.name, "source": layer_source(plane.layer),
                            "stack_axis": plane.stack_axis, "shape": list(spatial_shape(plane.layer))}
        record["cli"], record["cli_missing"] = cli_command(record)
        records[plane.layer.name] = record
    return records


class RunController:
    """Starts, streams and cancels runs for one widget.

    Parameters
    ----------
    viewer : napari.Viewer
        Where proposal layers go.
    on_status : callable
        Receives short status messages for the widget.
    on_done : callable
        Called with ``(sink, cancelled, error)`` when a run ends (``sink`` is None if it never started).
    """

    def __init__(self, viewer: Any, on_status: Callable[[str], None],
                 on_done: Callable[[ProposalSink | None, bool, BaseException | None], None]) -> None:
        self.viewer = viewer
        self.holder = ModelHolder()
        self.versions = versions()  # read once: package metadata lookups are slow
        self._on_status = on_status
        self._on_done = on_done
        self.worker: Any = None
        self.sink: ProposalSink | None = None
        self._progress: progress | None = None
        self._total: int | None = None
        self._cancelled = False
        self._error: BaseException | None = None
        self._queue: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._draining = False
        # A timer object, not QTimer.singleShot(0): Qt 6 runs a zero singleShot as a posted event, and
        # posted events chain within one event-loop pass, so steps would not let other events in between.
        self._step_timer = QTimer()
        self._step_timer.setSingleShot(True)
        self._step_timer.setInterval(0)
        self._step_timer.timeout.connect(self._step)

    def _status(self, message: str) -> None:
        try:
            self._on_status(message)
        except RuntimeError:  # the widget was deleted during the run (viewer closed)
            pass

    @property
    def running(self) -> bool:
        """Whether a run is in progress."""
        return self.worker is not None

    def start(self, request: RunRequest, sink: ProposalSink) -> None:
        """Start a run whose results go into ``sink``'s layers."""
        if self.running:
            raise InputError("a run is already in progress: wait for it or press Cancel")
        self.sink, self._total = sink, len(request.targets)
        self._cancelled, self._error = False, None
        self._progress = progress(total=self._total, desc="SINE: loading")
        worker = create_worker(propagation_steps, self.holder, request, _ignore_errors=True,
                               _start_thread=False)
        worker.yielded.connect(self._on_yield)
        worker.errored.connect(self._on_error)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        for step in sink.creation_steps():  # new layers first, while the model is not competing for the CPU
            self._enqueue(self._create, step)
        self._enqueue(lambda: start_tracked(worker))  # a cancelled worker stops at once

    def cancel(self) -> None:
        """Stop after the target being processed; finished targets stay."""
        if self.worker is not None:
            self._cancelled = True
            self._status("cancelling after the current target…")
            self.worker.quit()

    # -- worker signals (main thread) -------------------------------------------------------------
    # Signals are queued and handled strictly in order, one short step per event-loop turn (one
    # layer update, or one part of making a layer), so napari stays responsive. The queue also
    # protects against re-entry: napari's progress bars and notifications call processEvents().

    def _on_yield(self, item: Status | Started | TargetResult) -> None:
        # Anything but the plugin's own Status and Started is a TargetResult. Not imported here to
        # check: the first item comes before the worker has loaded the model code, and importing it on
        # this thread (scipy, torch) would stall the event loop.
        sink = self.sink
        if not isinstance(item, (Status, Started)) and sink is not None:
            target = sink.planes[item.index].layer
            for mode in sink.modes:
                for step in sink.layer_steps(target, mode):  # making a layer takes steps of its own
                    self._enqueue(step)
                self._enqueue(self._write_mode, item, mode)
            self._enqueue(self._target_done, item)
        else:
            self._enqueue(self._handle_item, item)

    def _on_error(self, error: BaseException) -> None:
        self._enqueue(self._handle_error, error)

    def _on_aborted(self) -> None:
        self._enqueue(self._handle_aborted)

    def _on_finished(self) -> None:
        self._enqueue(self._flush_then_finish)

    def _flush_then_finish(self) -> None:
        if self.sink is not None:
            for layer in self.sink.dirty_layers():  # one features table per step
                self._enqueue(self.sink.flush_features, layer)
        self._enqueue(self._handle_finished)

    def _enqueue(self, handler: Callable[..., None], *args: Any) -> None:
        self._queue.append((handler, args))
        self._schedule()

    def _schedule(self) -> None:
        if self._queue and not self._step_timer.isActive():
            self._step_timer.start()

    def _step(self) -> None:
        if self._draining:  # re-entered through processEvents(): the outer step reschedules
            return
        self._draining = True
        try:
            handler, args = self._queue.popleft()
            handler(*args)
        finally:
            self._draining = False
            self._schedule()

    def _create(self, step: Callable[[], Any]) -> None:
        if not self._cancelled:  # cancelled before the model started: no more layers
            step()

    def _write_mode(self, result: TargetResult, mode: str) -> None:
        if self.sink is not None:
            self.sink.write_mode(result, mode)

    def _target_done(self, result: TargetResult) -> None:
        sink = self.sink
        if sink is None:
            return
        sink.mark_done(result)
        self._status(f"{sink.done} / {self._total} target(s) done")
        if self._progress is not None:
            self._progress.update(1)

    def _handle_item(self, item: Status | Started) -> None:
        sink = self.sink
        if sink is None:
            return
        if isinstance(item, Status):
            self._status(item.message)
            if self._progress is not None:
                self._progress.set_description(f"SINE: {item.message}")
        elif isinstance(item, Started):
            self._total = item.total
            sink.annotate(item.weights_sha256, item.device, item.adaptation, item.calibration,
                          item.refinement, item.fitting)
            aside = [note for note in item.notes if "stepped aside" in note]
            self._status(f"propagating to {item.total} target(s) on {item.device}"
                         + "".join(f"; {note}" for note in aside))
            if self._progress is not None:
                self._progress.set_description("SINE: propagating")

    def _handle_error(self, error: BaseException) -> None:
        error = error.error if isinstance(error, RunFailed) else error
        self._error = error
        if isinstance(error, USER_ERRORS):
            show_error(f"SINE: {error}")
        else:
            logger.error("napari-sine run failed", exc_info=error)
            show_error(f"SINE run failed ({type(error).__name__}: {error}). Details are in the log; "
                       "please report it if it persists.")

    def _handle_aborted(self) -> None:
        self._cancelled = True

    def _handle_finished(self) -> None:
        sink, error, cancelled = self.sink, self._error, self._cancelled
        self.worker, self.sink = None, None
        if self._progress is not None:
            self._progress.close()
            self._progress = None
        if sink is not None:
            sink.restore_active()  # a cancel skips the creation steps left, the restoring one too
            if sink.done == 0 and (error is not None or cancelled):
                sink.remove_created()
            else:
                sink.finish(self._total, cancelled or error is not None, now(),
                            {"error": None if error is None else f"{type(error).__name__}: {error}"})
        try:
            self._on_done(sink, cancelled, error)
        except RuntimeError:  # the widget was deleted during the run (viewer closed)
            pass
        if sink is not None and cancelled and error is None:
            show_info(f"SINE: cancelled; {sink.done} of {self._total} target(s) kept")

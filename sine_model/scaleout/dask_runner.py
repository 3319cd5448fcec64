"""Running a resumable run's targets on a ``dask.distributed`` cluster.

* The model is loaded once per worker, by :class:`SineWorkerPlugin` (registered on the cluster; it
  holds only a :class:`~sine_model.scaleout.model_source.ModelSource`: a name or path plus sha256). A worker
  that joins later (a restarted one) loads it when it starts.
* The prepared references (:class:`~sine_model.engine.reference_state.ReferenceState`) are scattered to
  every worker once; each worker installs them into its propagator on its first task.
* Targets are submitted in order, earlier ones first (priority), with at most ``max_in_flight`` submitted
  and unfinished, so neither the client nor the scheduler holds more than that many. A target stored in
  files travels as its index (the :class:`~sine_model.io.file_targets.FileTargets` is scattered once and
  read by the worker); an in-memory target travels as its pixels.
* Each worker writes its targets' label maps and records into the shared output directory
  (:class:`~sine_model.engine.resume.TargetSink`); the client alone writes the manifest, as each task
  reports back. A worker lost mid-run loses only its unfinished tasks, which the scheduler runs again
  elsewhere; a task is considered failed (and the run stops, resumable) after it has killed
  ``distributed.scheduler.allowed-failures`` workers.
* The plugin pauses each worker's statistical profiler while it is installed: dask samples the running
  task's stack every 10 ms and keeps one call tree per second for the last
  ``distributed.admin.low-level-log-length`` (1,000) seconds; the model's deep stacks made those trees
  about 40 KB a second (pickled) per worker, and a worker grew with the run's length, not with anything a
  target needs (+39 MB of RSS over 235 s of a run on this machine; flat with the profiler paused).
  Removing the plugin restarts the profiler; ``keep_profiler=True`` leaves it running.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sine_model.engine.reference_state import ReferenceState, restore
from sine_model.engine.resume import RunLedger, TargetSink, checked_target
from sine_model.io.file_targets import FileTargets
from sine_model.io.target_records import checksum
from sine_model.scaleout.model_source import ModelSource

__all__ = ["PLUGIN_NAME", "PROFILER_CALLBACKS", "SineWorkerPlugin", "open_client", "run_on_cluster",
           "run_target"]

PLUGIN_NAME = "napari-sine"
PROFILER_CALLBACKS = ("profile", "profile-cycle")  # the worker's periodic callbacks of its profiler


def _worker_plugin_base() -> type:
    from distributed.diagnostics.plugin import WorkerPlugin

    return WorkerPlugin


class SineWorkerPlugin(_worker_plugin_base()):
    """Loads the model once per worker and keeps a propagator with the run's references.

    Parameters
    ----------
    model : ModelSource
        The weights to load (checked against their sha256 on the worker).
    device : str, optional
        Device of the workers' model (None: CUDA, then MPS, then CPU).
    torch_threads : int, optional
        Intra-op threads of torch in each worker (None: torch's default).
    keep_profiler : bool
        Leave dask's statistical profiler running on the workers (the dashboard's "Profile" page); by
        default it is paused while the plugin is installed, so that a worker's memory stays flat.
    """

    name = PLUGIN_NAME

    def __init__(self, model: ModelSource, device: str | None = None,
                 torch_threads: int | None = None, keep_profiler: bool = False) -> None:
        self.model_source, self.device, self.torch_threads = model, device, torch_threads
        self.keep_profiler = keep_profiler
        self.loads = 0
        self._paused: list[str] = []  # the worker's profiler callbacks this plugin stopped
        self._model: Any = None
        self._propagator: Any = None
        self._state_key: str | None = None
        self._sinks: dict[tuple[str, tuple[str, ...], str], TargetSink] = {}
        self.lock = threading.Lock()  # one target at a time per worker: a propagator is not thread-safe

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "lock": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def setup(self, worker: Any) -> None:
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        if not self.keep_profiler:
            self._paused = _pause_profiler(worker)
        self._model = self.model_source.load()
        self.loads += 1

    def teardown(self, worker: Any) -> None:
        from distributed.core import Status

        # a closing worker stops every callback itself after its plugins' teardown
        if worker.status == Status.running:
            for name in self._paused:
                worker.periodic_callbacks[name].start()
        self._paused = []

    def propagator_for(self, state: ReferenceState, key: str) -> Any:
        """The worker's propagator with ``state``'s references (installed on the first task of a run)."""
        if self._state_key != key:
            # no feature cache: a run sees every target once, and a cache would only grow (to 1 GiB)
            propagator = state.settings.build(self._model, self.device, cache_bytes=0)
            restore(propagator, state)
            self._propagator, self._state_key = propagator, key
        return self._propagator

    def sink(self, out_dir: str, modes: Sequence[str], key: str) -> TargetSink:
        """The writer of the output directory ``out_dir`` in run ``key`` (opened once per worker and run)."""
        name = (out_dir, tuple(modes), key)
        if name not in self._sinks:
            self._sinks = {k: v for k, v in self._sinks.items() if k[2] == key}
            self._sinks[name] = TargetSink(out_dir, modes)
        return self._sinks[name]


def _pause_profiler(worker: Any) -> list[str]:
    """Stop ``worker``'s statistical profiler (sampling and the per-second history); return the callbacks
    stopped. The history it kept so far stays (it is the worker's, readable on its dashboard)."""
    stopped = []
    for name in PROFILER_CALLBACKS:
        callback = worker.periodic_callbacks.get(name)
        if callback is not None and callback.is_running():
            callback.stop()
            stopped.append(name)
    return stopped


def run_target(index: int, target: Any, state: ReferenceState, state_key: str, out_dir: str,
               modes: Sequence[str]) -> tuple[int, int]:
    """One task: read target ``index``, propagate, write its labels and record; return (index, objects)."""
    from distributed import get_worker

    plugin = get_worker().plugins[PLUGIN_NAME]
    pixels = target.read(index) if isinstance(target, FileTargets) else np.asarray(target)
    with plugin.lock:
        propagator = plugin.propagator_for(state, state_key)
        pixels = checked_target(index, pixels, propagator)
        result = next(iter(propagator.propagate([pixels], modes)))
    record = plugin.sink(out_dir, modes, state_key).write(index, result, checksum(pixels))
    return index, len(record.scores)


def open_client(scheduler: Any) -> tuple[Any, Any, int | None]:
    """A dask client for ``scheduler``: ``"local"``/``"local:N"`` (a new cluster of N worker processes, one
    thread each), an address such as ``"tcp://host:8786"``, or a ``distributed.Client``.

    Returns
    -------
    client, cluster, torch_threads
        ``cluster`` is the local cluster to close afterwards (None otherwise); ``torch_threads`` splits
        this machine's cores between local workers (None: leave torch's default).
    """
    from distributed import Client, LocalCluster

    if isinstance(scheduler, Client):
        return scheduler, None, None
    text = str(scheduler)
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2]
        if count and not (count.isdigit() and int(count) > 0):
            raise ValueError(f"scheduler {text!r}: write local or local:N with N a positive whole number")
        workers = int(count) if count else max(1, (os.cpu_count() or 1))
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        return Client(cluster), cluster, max(1, (os.cpu_count() or 1) // workers)
    if "://" not in text:
        raise ValueError(f"scheduler {text!r}: use local, local:N or an address such as tcp://HOST:8786")
    return Client(text), None, None


def run_on_cluster(client: Any, ledger: RunLedger, state: ReferenceState, source: Any, modes: Sequence[str],
                   model: ModelSource, *, device: str | None = None, torch_threads: int | None = None,
                   max_in_flight: int | None = None, on_target: Callable[[int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, keep_profiler: bool = False) -> int:
    """Run the ledger's unfinished targets on ``client``'s workers; return how many finished here.

    ``keep_profiler=True`` leaves dask's profiler running on the workers (see :class:`SineWorkerPlugin`).

    Raises
    ------
    Exception
        The first task's error (after which nothing more is submitted; finished targets stay finished).
    """
    from distributed import as_completed

    pending = ledger.pending()
    if not pending:
        return 0
    plugin = SineWorkerPlugin(model, device, torch_threads, keep_profiler)
    client.register_plugin(plugin, name=PLUGIN_NAME)
    state_key = f"{state.model_fingerprint}-{os.getpid()}-{id(state)}"
    [state_future] = client.scatter([state], broadcast=True, hash=False)
    files = isinstance(source, FileTargets)
    source_future = client.scatter([source], broadcast=True, hash=False)[0] if files else None
    threads = sum(client.nthreads().values()) or 1
    window = max_in_flight or 2 * threads
    out_dir, modes = str(Path(ledger.out_dir).resolve()), list(modes)

    def submit(index: int) -> Any:
        target = source_future if files else source.read(index)
        return client.submit(run_target, index, target, state_future, state_key, out_dir, modes,
                             priority=-index, pure=False)

    queue = iter(pending)
    running = as_completed([submit(i) for _, i in zip(range(window), queue, strict=False)])
    finished = 0
    try:
        for future in running:
            index, _ = future.result()  # a failed task raises here
            ledger.mark(index)
            finished += 1
            if on_target is not None:
                on_target(index)
            if should_stop is not None and should_stop():
                break
            following = next(queue, None)
            if following is not None:
                running.add(submit(following))
    finally:
        ledger.flush()
        for future in list(running.futures):
            future.cancel()
        running.clear()
    return finished

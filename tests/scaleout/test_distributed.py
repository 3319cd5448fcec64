"""Distributed runs on a LocalCluster of two worker processes (one thread each) on this machine.

The in-process runs compared against use one torch thread too, so both sides compute the same floats.
"""

from __future__ import annotations

import os
import signal

import pytest
from scale_helpers import prepared_propagator, small_targets, tree

from sine_model import propagate_distributed
from sine_model.engine.run_manifest import RunManifest
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME
from sine_model.scaleout.dask_runner import PLUGIN_NAME, PROFILER_CALLBACKS, SineWorkerPlugin
from sine_model.scaleout.model_source import ModelSource

distributed = pytest.importorskip("distributed")
pytest.importorskip("ome_zarr")

N = 10


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def propagator():
    return prepared_propagator()


@pytest.fixture(scope="module")
def targets():
    return small_targets(N)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, propagator, targets):
    out = tmp_path_factory.mktemp("local") / "out"
    propagate_distributed(propagator, targets, out, stack_axis=0, scheduler=None)
    return tree(out)


def plugin_loads(client):
    return client.run(lambda dask_worker: dask_worker.plugins["napari-sine"].loads)


def profiler_running(client) -> list[bool]:
    """Whether each worker's profiler callbacks run (sampling, per-second history), workers in order."""
    running = client.run(lambda dask_worker: [dask_worker.periodic_callbacks[name].is_running()
                                              for name in PROFILER_CALLBACKS])
    return [flag for _, flags in sorted(running.items()) for flag in flags]


def profile_lengths(client) -> list[int]:
    """How many per-second call trees each worker's profiler has kept, workers in order."""
    lengths = client.run(lambda dask_worker: (len(dask_worker.profile_history),
                                              len(dask_worker.profile_keys_history)))
    return [n for _, pair in sorted(lengths.items()) for n in pair]


def test_cluster_run_equals_in_process_run(tmp_path, client, propagator, targets, in_process):
    finished = []
    summary = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=client,
                                    on_target=finished.append, max_in_flight=3)
    assert summary.complete and summary.ran == N and sorted(finished) == list(range(N))
    assert tree(tmp_path) == in_process
    assert sorted(plugin_loads(client).values()) == [1, 1]  # the model loaded once per worker


def test_stopped_cluster_run_resumes_in_process(tmp_path, client, propagator, targets, in_process):
    finished = []
    summary = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=client,
                                    on_target=finished.append, should_stop=lambda: len(finished) >= 3,
                                    max_in_flight=2)
    assert not summary.complete and len(RunManifest.load(tmp_path).finished) == 3
    resumed = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert resumed.complete and resumed.resumed == 3
    assert tree(tmp_path) == in_process


def test_killed_worker_loses_nothing(tmp_path, client, propagator, targets, in_process):
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    finished, killed = [], []

    def kill_once(index):
        finished.append(index)
        if len(finished) == 2 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    summary = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=client,
                                    on_target=kill_once, max_in_flight=4)
    assert killed == [victim]
    assert victim not in client.run(os.getpid).values()  # that worker is gone (its nanny started another)
    assert summary.complete and sorted(finished) == list(range(N))
    assert tree(tmp_path) == in_process
    assert (tmp_path / OME_ZARR_NAME).is_dir()


def test_worker_profiler_is_paused_during_runs(tmp_path, client, propagator, targets):
    # the profiler kept a call tree of the model's stack per second: workers grew with the run's length
    propagate_distributed(propagator, targets, tmp_path / "a", stack_axis=0, scheduler=client)
    assert profiler_running(client) == [False] * 4
    kept = profile_lengths(client)
    summary = propagate_distributed(propagator, targets, tmp_path / "b", stack_axis=0, scheduler=client)
    assert summary.complete and profile_lengths(client) == kept  # nothing more kept over N targets
    assert profiler_running(client) == [False] * 4


def test_worker_profiler_runs_again_without_the_plugin(client):
    model = ModelSource.resolve("sine-embedded")
    client.register_plugin(SineWorkerPlugin(model), name=PLUGIN_NAME)
    assert profiler_running(client) == [False] * 4
    client.unregister_worker_plugin(PLUGIN_NAME)
    assert profiler_running(client) == [True] * 4
    client.register_plugin(SineWorkerPlugin(model, keep_profiler=True), name=PLUGIN_NAME)
    assert profiler_running(client) == [True] * 4

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

"""Resumable runs in this process: interrupted, damaged or changed runs, and what a resume makes of them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scale_helpers import prepared_propagator, small_targets, tree

from sine_model import propagate_distributed
from sine_model.engine.run_manifest import RunManifest, RunStateError
from sine_model.io.ome_zarr_labels import OME_ZARR_NAME
from sine_model.io.target_records import MANIFEST_NAME, record_path

pytest.importorskip("ome_zarr")

N = 8


@pytest.fixture(scope="module")
def propagator():
    return prepared_propagator()


@pytest.fixture(scope="module")
def targets():
    return small_targets(N)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, propagator, targets):
    out = tmp_path_factory.mktemp("whole") / "out"
    summary = propagate_distributed(propagator, targets, out, stack_axis=0, scheduler=None)
    assert (summary.complete, summary.ran, summary.resumed) == (True, N, 0)
    return tree(out)


def stop_after(count):
    seen = []
    return seen.append, lambda: len(seen) >= count


def test_stopped_run_resumes_to_identical_output(tmp_path, propagator, targets, uninterrupted):
    on_target, should_stop = stop_after(3)
    first = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None,
                                  on_target=on_target, should_stop=should_stop)
    assert (first.complete, first.ran) == (False, 3)
    assert not (tmp_path / "scores.csv").exists()  # written when every target is done
    assert sorted(RunManifest.load(tmp_path).finished) == [0, 1, 2]
    second = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert (second.complete, second.resumed, second.ran) == (True, 3, N - 3)
    assert tree(tmp_path) == uninterrupted  # labels, records, scores.csv and manifest, byte for byte
    again = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert (again.ran, again.resumed) == (0, N)


def test_checkpoints_every_few_targets_and_on_stop(tmp_path, propagator, targets, uninterrupted):
    saved = []
    on_target, should_stop = stop_after(5)

    def record(index):
        on_target(index)
        saved.append(len(RunManifest.load(tmp_path).finished))

    first = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None,
                                  checkpoint_every=3, on_target=record, should_stop=should_stop)
    assert saved == [0, 0, 3, 3, 3]  # written after every third target ...
    assert first.ran == 5 and len(RunManifest.load(tmp_path).finished) == 5  # ... and when stopping
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, checkpoint_every=3)
    assert tree(tmp_path) == uninterrupted


def test_changed_option_or_input_is_refused_unless_restart(tmp_path, propagator, targets, uninterrupted):
    on_target, should_stop = stop_after(2)
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, on_target=on_target,
                          should_stop=should_stop)
    with pytest.raises(RunStateError, match=r"modes: .*--restart"):
        propagate_distributed(propagator, targets, tmp_path, ("semantic",), stack_axis=0, scheduler=None)
    changed = targets.copy()
    changed[1] = 255 - changed[1]  # a finished target's pixels (same shape and dtype)
    with pytest.raises(RunStateError, match="target 1 .* inputs changed"):
        propagate_distributed(propagator, changed, tmp_path, stack_axis=0, scheduler=None)
    other = prepared_propagator(score_thresholds={"semantic": 0.5})
    with pytest.raises(RunStateError, match="thresholds.semantic: 0.7 -> 0.5"):
        propagate_distributed(other, targets, tmp_path, stack_axis=0, scheduler=None)
    before = tree(tmp_path)
    assert before  # the refusals changed nothing
    summary = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, restart=True)
    assert (summary.resumed, summary.ran) == (0, N)
    assert tree(tmp_path) == uninterrupted


def test_torn_writes_are_run_again(tmp_path, propagator, targets, uninterrupted):
    on_target, should_stop = stop_after(4)
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, on_target=on_target,
                          should_stop=should_stop)
    store = tmp_path / OME_ZARR_NAME / "labels" / "semantic" / "0" / "c"
    torn = 3
    assert all((store / str(i) / "0" / "0").is_file() for i in range(4))  # (an empty map has no chunk)
    chunk = store / str(torn) / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:7])  # a finished target's chunk, torn
    (store / "5" / "0").mkdir(parents=True, exist_ok=True)
    (store / "5" / "0" / "0").write_bytes(b"\x00garbage")  # an unfinished target's partial chunk
    lost = 1
    record_path(tmp_path, lost).write_text('{"index": 1, "target_')  # a finished target's record, torn
    summary = propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert sorted(w.split(":")[0] for w in summary.warnings) == sorted([f"target {torn}", f"target {lost}"])
    assert (summary.resumed, summary.ran) == (2, N - 2)
    assert tree(tmp_path) == uninterrupted


def test_damaged_manifest_needs_restart(tmp_path, propagator, targets, uninterrupted):
    on_target, should_stop = stop_after(2)
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, on_target=on_target,
                          should_stop=should_stop)
    manifest = tmp_path / MANIFEST_NAME
    manifest.write_bytes(manifest.read_bytes()[:40])
    with pytest.raises(RunStateError, match=r"sine-run.json is damaged.*--restart"):
        propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, restart=True)
    assert tree(tmp_path) == uninterrupted


def test_results_without_manifest_are_not_overwritten(tmp_path, propagator, targets):
    (tmp_path / OME_ZARR_NAME).mkdir()
    (tmp_path / OME_ZARR_NAME / "mine.txt").write_text("keep")
    with pytest.raises(RunStateError, match="without a run manifest"):
        propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert (tmp_path / OME_ZARR_NAME / "mine.txt").read_text() == "keep"


def test_targets_of_different_sizes_are_refused(tmp_path, propagator, targets):
    with pytest.raises(ValueError, match="differ in size"):
        propagate_distributed(propagator, [targets[0], targets[1][:32]], tmp_path, scheduler=None)
    assert not tmp_path.joinpath(MANIFEST_NAME).exists()


def test_manifest_is_small_and_has_no_run_specific_values(uninterrupted):
    manifest = json.loads(uninterrupted[MANIFEST_NAME])
    assert manifest["finished"] == [[0, N]] and manifest["complete"] is True
    text = uninterrupted[MANIFEST_NAME].decode()
    assert "pid" not in text and "time" not in text
    assert len(text) < 4000


def test_scores_table_matches_the_records(uninterrupted):
    rows = uninterrupted["scores.csv"].decode().splitlines()
    assert rows[0] == "target,label,mode,score,source"
    targets_seen = [int(r.split(",")[0]) for r in rows[1:]]
    assert targets_seen == sorted(targets_seen) and set(targets_seen) <= set(range(N))
    assert np.unique(targets_seen).size >= 2


def test_store_torn_before_any_target_finished_is_made_again(tmp_path, propagator, targets, uninterrupted):
    on_target, should_stop = stop_after(1)
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None, on_target=on_target,
                          should_stop=should_stop)
    manifest = RunManifest.load(tmp_path)
    manifest.finished.discard(0)  # as if killed while the store was being created
    manifest.save(tmp_path)
    (tmp_path / OME_ZARR_NAME / "labels" / "zarr.json").write_text("{")
    propagate_distributed(propagator, targets, tmp_path, stack_axis=0, scheduler=None)
    assert tree(tmp_path) == uninterrupted

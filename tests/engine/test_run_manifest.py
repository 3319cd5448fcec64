"""The run manifest of resumable runs: the finished set, saving, damage, differences of identities."""

from __future__ import annotations

import random

import pytest

from sine_model.engine.run_manifest import FinishedTargets, RunManifest, RunStateError, differences


def test_finished_targets_match_a_set():
    finished, expected = FinishedTargets(), set()
    rng = random.Random(0)
    for _ in range(1500):
        index = rng.randrange(60)
        if rng.random() < 0.7:
            finished.add(index)
            expected.add(index)
        else:
            finished.discard(index)
            expected.discard(index)
        assert set(finished) == expected and len(finished) == len(expected)
    assert finished.missing(60) == [i for i in range(60) if i not in expected]
    assert FinishedTargets(finished.ranges()).ranges() == finished.ranges()


def test_manifest_round_trip_and_damage(tmp_path):
    manifest = RunManifest({"modes": ["instance"]}, 10)
    for index in (0, 1, 2, 5):
        manifest.finished.add(index)
    manifest.save(tmp_path)
    loaded = RunManifest.load(tmp_path)
    assert loaded.finished.ranges() == [[0, 3], [5, 6]] and loaded.identity == {"modes": ["instance"]}
    (tmp_path / "sine-run.json").write_text('{"format": 1, "n_targets": 10, "finished": [[0, 3]], "comp')
    with pytest.raises(RunStateError, match="damaged.*--restart"):
        RunManifest.load(tmp_path)
    assert differences({"a": {"b": 1}}, {"a": {"b": 2}, "c": 3}) == ["a.b: 1 -> 2", "c: '(absent)' -> 3"]

"""Review state: decisions with history, the JSON sidecar (atomic, checked when read)."""

from __future__ import annotations

import json

import pytest

from sine_model.bootstrap.review import (
    REVIEW_NAME,
    ReviewError,
    ReviewFileError,
    ReviewState,
    read_review,
    write_review,
)


def test_decisions_keep_history_and_round_trip(tmp_path):
    state = ReviewState(["a", "b", "c"], run={"results": "somewhere"})
    state.set(0, "accepted", who="ann", when="2026-01-01T00:00:00+00:00")
    state.set(1, "corrected", who="bob", labels="/data/b_fixed.tif")
    state.set(1, "skipped", who="bob")
    assert [t.status for t in state.targets] == ["accepted", "skipped", "proposed"]
    assert state[1].labels is None  # only a corrected target names its labels
    assert [e.status for e in state[1].history] == ["corrected", "skipped"]
    assert state.indices() == [0] and state.counts()["skipped"] == 1
    path = write_review(state, tmp_path)
    assert path == tmp_path / REVIEW_NAME
    assert not [p for p in tmp_path.iterdir() if p.name != REVIEW_NAME]  # no temporary left behind
    back = read_review(tmp_path)
    assert back.to_dict() == state.to_dict()
    assert back[0].history[0].who == "ann" and back.run == {"results": "somewhere"}


def test_unknown_state_or_target_is_refused():
    state = ReviewState(["a"])
    with pytest.raises(ReviewError, match="unknown review state"):
        state.set(0, "maybe")
    with pytest.raises(ReviewError, match="does not exist"):
        state.set(3, "accepted")
    assert state[0].history == []


@pytest.mark.parametrize(
    "content, problem",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "other"}), "expected format"),
        (
            json.dumps(
                {"format": "napari-sine-review/1", "targets": [{"index": 0, "name": "a", "status": "done"}]}
            ),
            "state 'done'",
        ),
        (
            json.dumps(
                {
                    "format": "napari-sine-review/1",
                    "targets": [{"index": 1, "name": "a", "status": "accepted"}],
                }
            ),
            "index 0",
        ),
        (
            json.dumps(
                {
                    "format": "napari-sine-review/1",
                    "targets": [
                        {"index": 0, "name": "a", "status": "accepted", "history": [{"status": "x"}]}
                    ],
                }
            ),
            "history",
        ),
    ],
)
def test_damaged_sidecar_gives_a_clear_error(tmp_path, content, problem):
    path = tmp_path / REVIEW_NAME
    path.write_text(content)
    with pytest.raises(ReviewFileError, match=problem):
        read_review(path)
    assert path.read_text() == content  # nothing of the user's is changed


def test_missing_sidecar_says_what_to_run(tmp_path):
    with pytest.raises(ReviewFileError, match="napari-sine rank"):
        read_review(tmp_path)

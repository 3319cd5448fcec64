"""Review: score filter, accept without overwriting (and undo), promote to reference."""

from __future__ import annotations

import numpy as np
import pytest
from sine_plugin_helpers import WARNINGS_AS_ERRORS, collect_notifications, wait_for_run
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # fixture `sample_viewer`
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # fixture `tiny_preset`

from napari_sine._inputs import InputError, TargetPlane
from napari_sine._layers import ProposalSink
from napari_sine._qt.review_panel import NEW_LAYER
from napari_sine._qt.widget import SineWidget
from napari_sine._review import ScoreFilter, accept
from sine_model.engine.propagator import ObjectScore, TargetResult

pytestmark = WARNINGS_AS_ERRORS


def box(shape, top, left, size, value, out=None):
    out = np.zeros(shape, np.uint8) if out is None else out
    out[top : top + size, left : left + size] = value
    return out


def fake_run(viewer, modes=("id", "instance")):
    """A 2-plane target with made-up proposals written through a ProposalSink."""
    stack = viewer.add_image(np.zeros((2, 20, 20), np.uint8), name="stack")
    record = {"target": {"layer": "stack", "source": None, "stack_axis": 0, "shape": [2, 20, 20]}}
    sink = ProposalSink(viewer, [TargetPlane(stack, 0, 0), TargetPlane(stack, 1, 0)], modes, 9, 1,
                        {"stack": record})
    plane0 = box((20, 20), 2, 2, 4, 1, box((20, 20), 10, 10, 4, 2))
    plane1 = box((20, 20), 0, 0, 4, 1)
    id0 = box((20, 20), 2, 2, 4, 3, box((20, 20), 10, 10, 4, 5))
    results = [
        TargetResult(0, {"instance": plane0, "id": id0}, [
            ObjectScore(0, 1, "instance", 0.9, "class:1"), ObjectScore(0, 2, "instance", 0.3, "class:1"),
            ObjectScore(0, 3, "id", 0.8, "ref:0"), ObjectScore(0, 5, "id", 0.2, "ref:0")], (20, 20)),
        TargetResult(1, {"instance": plane1, "id": np.zeros((20, 20), np.uint8)}, [
            ObjectScore(1, 1, "instance", 0.8, "class:1")], (20, 20)),
    ]
    for result in results:
        sink.write(result)
    return stack, sink


def test_accept_keeps_existing_labels_and_undoes(make_napari_viewer):
    viewer = make_napari_viewer()
    stack, sink = fake_run(viewer)
    instance = viewer.layers["stack [SINE instance]"]
    assert list(instance.features["index"]) == [1, 2, 3]  # plane 1's object is shifted above plane 0's
    mine = viewer.add_labels(np.zeros((2, 20, 20), np.uint16), name="mine")
    mine.data[0, 4:8, 4:8] = 7  # an existing object overlapping proposal 1
    before = mine.data.copy()

    result = accept(instance, mine)
    assert result.objects == 3 and result.skipped_pixels == 4
    after = mine.data
    assert (after[before > 0] == 7).all()  # existing labels untouched
    assert after[0, 2, 2] == 8 and after[0, 10, 10] == 9 and after[1, 0, 0] == 10  # above the max (7)
    assert after[0, 5, 5] == 7
    mine.undo()  # one napari undo step
    np.testing.assert_array_equal(mine.data, before)

    identity = viewer.layers["stack [SINE id]"]
    accept(identity, mine)
    assert mine.data[0, 2, 2] == 3 and mine.data[0, 10, 10] == 5  # ID proposals keep reference ids
    assert mine.data[0, 5, 5] == 7


def test_score_filter_hides_and_restores(make_napari_viewer):
    viewer = make_napari_viewer()
    stack, sink = fake_run(viewer)
    instance = viewer.layers["stack [SINE instance]"]
    score_filter = ScoreFilter()
    assert score_filter.apply(instance, 0.5) == (2, 1)
    assert not (instance.data == 2).any()  # the 0.3 object is hidden
    mine = viewer.add_labels(np.zeros((2, 20, 20), np.uint8), name="mine")
    accept(instance, mine)
    assert sorted(np.unique(mine.data)) == [0, 1, 2]  # two objects accepted, ids from 1
    assert score_filter.apply(instance, 0.0) == (3, 0)
    assert instance.data[0, 10, 10] == 2  # restored


def test_accept_refuses_bad_destinations(make_napari_viewer):
    viewer = make_napari_viewer()
    stack, sink = fake_run(viewer)
    instance = viewer.layers["stack [SINE instance]"]
    with pytest.raises(InputError, match="shape"):
        accept(instance, viewer.add_labels(np.zeros((20, 20), np.uint8)))
    with pytest.raises(InputError, match="not into a proposal layer"):
        accept(instance, viewer.layers["stack [SINE id]"])
    small = viewer.add_labels(np.full((2, 20, 20), 255, np.uint8))
    small.data[0] = 0
    with pytest.raises(InputError, match="does not fit"):
        accept(instance, small)


def test_review_panel_accept_current_plane_new_layer_and_undo(make_napari_viewer, tiny_preset, monkeypatch):
    messages = collect_notifications(monkeypatch)
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    stack, sink = fake_run(viewer)
    review = widget.review
    review.refresh()
    review.proposals.set_layer(viewer.layers["stack [SINE instance]"])
    review.destination.setCurrentText(NEW_LAYER)
    review.set_scope("current")
    viewer.dims.set_current_step(0, 1)
    review.accept_button.click()
    created = viewer.layers["stack labels"]
    assert created.data.shape == (2, 20, 20)
    assert not created.data[0].any() and created.data[1, 0, 0] == 1
    assert "accepted 1 object(s)" in messages[-1]
    assert review.undo_button.isEnabled()
    review.undo_button.click()
    assert not created.data.any()
    review.accept_button.click()
    created.data_setitem((np.array([1]), np.array([19]), np.array([19])), 5)  # the user paints
    assert not review.undo_tracker.armed()  # undo would now revert the user's stroke: disabled


def test_promote_adds_reference_and_reruns(sample_viewer, qtbot):
    viewer, widget = sample_viewer
    widget.options.threshold.setValue(0.05)
    for mode in ("id", "instance"):
        widget.options.modes[mode].setChecked(False)
    widget.run()
    wait_for_run(qtbot, widget)
    review = widget.review
    semantic = viewer.layers["targets [SINE semantic]"]
    assert semantic.data[0].any()
    review.proposals.set_layer(semantic)
    review.destination.setCurrentText(NEW_LAYER)
    review.set_scope("current")
    viewer.dims.set_current_step(0, 0)
    review.accept_button.click()
    accepted = viewer.layers["targets labels"]
    assert accepted.data[0].any() and not accepted.data[1:].any()
    assert review.destination.layer() is accepted

    review.promote_button.click()
    assert len(widget.references.rows) == 2
    row = widget.references.rows[1]
    assert row.image.layer() is viewer.layers["targets"] and row.labels.layer() is accepted
    assert row.plane.value() == 0
    assert widget.runner.running  # promote re-runs
    wait_for_run(qtbot, widget)
    record = viewer.layers["targets [SINE semantic]"].metadata["sine"]
    assert [ref["labels"]["layer"] for ref in record["references"]] == ["reference labels", "targets labels"]
    assert record["references"][1]["plane"] == 0
    assert record["targets_done"] == 3

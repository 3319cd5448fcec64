""" "Label next": the ranked list, Next moving the viewer, review marks in the layer metadata, Export."""

from __future__ import annotations

import numpy as np
import tifffile
from sine_plugin_helpers import WARNINGS_AS_ERRORS
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from test_napari_review import fake_run

from napari_sine._inputs import TargetPlane
from napari_sine._layers import SINE_KEY, ProposalSink
from napari_sine._qt.widget import SineWidget
from napari_sine._review_state import REVIEW_KEY, mark, rank_viewer
from sine_model.bootstrap.dataset import verify_checksums
from sine_model.engine.stitching import TargetResult

pytestmark = WARNINGS_AS_ERRORS


def test_ranked_list_next_and_review_marks(make_napari_viewer, plugin_env, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    qtbot.addWidget(widget)
    stack, _ = fake_run(viewer)
    instance = viewer.layers["stack [SINE instance]"]
    panel = widget.bootstrap

    def ranked() -> list[str]:  # the list once the worker thread has scored the targets
        qtbot.waitUntil(lambda: not panel.ranking_busy, timeout=60_000)
        return [r.target.name for r in panel.ranked]

    panel.refresh()
    assert panel.ranking_busy  # scored in a worker thread, not on napari's event loop
    # plane 0: ID and instance answers half disagree, scores 0.9 / 0.3; plane 1: no ID object at all
    assert ranked() == ["stack[1]", "stack[0]"]
    assert panel.ranking.count() == 2 and panel.ranking.item(0).text().endswith("stack[1]")
    viewer.dims.current_step = (0, 0, 0)
    panel.go_next()
    assert ranked() == ["stack[1]", "stack[0]"]
    assert viewer.dims.current_step[0] == 1  # the viewer moved to the most uncertain target
    assert panel.ranking.currentRow() == 0

    widget.review.show_proposals(instance)
    widget.review.set_scope("current")
    widget.review.accept()  # accept plane 1 into a new Labels layer: recorded as accepted
    review = instance.metadata[SINE_KEY][REVIEW_KEY]
    assert [t["status"] for t in review["targets"]] == ["proposed", "accepted"]
    assert review["run"]["labels_layer"] == "stack labels"
    assert ranked() == ["stack[0]"]  # refreshed after the accept

    panel.go_next()
    assert ranked() == ["stack[0]"]
    assert viewer.dims.current_step[0] == 0
    widget.review.accept()
    labels = viewer.layers["stack labels"]
    labels.data[0, 15:18, 15:18] = 9  # the user's correction
    panel.mark_current("corrected")
    review = instance.metadata[SINE_KEY][REVIEW_KEY]
    assert [t["status"] for t in review["targets"]] == ["corrected", "accepted"]
    assert [e["status"] for e in review["targets"][0]["history"]] == ["accepted", "corrected"]
    assert ranked() == [] and panel.ranking.count() == 0 and rank_viewer(viewer) == []
    assert len(rank_viewer(viewer, include_reviewed=True)) == 2

    out = tmp_path / "dataset"
    worker = panel.export_to(str(out))
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert verify_checksums(out) == []
    exported = tifffile.imread(out / "masks" / "stack_0.tif")
    assert np.array_equal(exported, labels.data[0]) and exported[16, 16] == 9  # the corrected labels
    assert (out / "masks" / "stack_1.tif").is_file()
    assert panel.export_button.isEnabled()


def test_a_new_run_forgets_the_review(make_napari_viewer, plugin_env):
    viewer = make_napari_viewer()
    stack, _ = fake_run(viewer)
    instance = viewer.layers["stack [SINE instance]"]
    assert mark(viewer, instance, None, "skipped") == ["stack[0]", "stack[1]"]
    assert rank_viewer(viewer) == []
    record = {"target": {"layer": "stack", "source": None, "stack_axis": 0, "shape": [2, 20, 20]}}
    sink = ProposalSink(
        viewer, [TargetPlane(stack, 0, 0), TargetPlane(stack, 1, 0)], ("instance",), 9, 1, {"stack": record}
    )
    sink.write(TargetResult(0, {"instance": np.zeros((20, 20), np.uint8)}, [], (20, 20)))
    assert sink.layer(stack, "instance") is instance  # the earlier run's layer, rewritten
    assert REVIEW_KEY not in instance.metadata[SINE_KEY]
    assert [r.target.name for r in rank_viewer(viewer)] == ["stack[0]", "stack[1]"]

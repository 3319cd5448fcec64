"""The dock stays narrow and scrolls; the advanced options fold; the model list can load in a worker.

Widths come from Qt's layouts and the fonts, not from the machine's speed: measured here 317 px for the
docked widget (443 px before the narrow layout), so the bound below leaves room for other fonts.
"""

from __future__ import annotations

from sine_plugin_helpers import TINY_PRESET, TINY_SCALE, WARNINGS_AS_ERRORS, wait_for_run
from sine_plugin_helpers import plugin_env_fixture as plugin_env_fixture  # fixture `plugin_env`
from sine_plugin_helpers import sample_viewer_fixture as sample_viewer_fixture  # fixture `sample_viewer`
from sine_plugin_helpers import tiny_preset_fixture as tiny_preset_fixture  # fixture `tiny_preset`

from napari_sine._inputs import InputError
from napari_sine._qt import options_panel
from napari_sine._qt.widget import SineWidget
from napari_sine._sample_data import nuclei_sample
from napari_sine._settings import WidgetSettings

pytestmark = WARNINGS_AS_ERRORS

MAX_DOCK_WIDTH = 380  # px; the widget was 443 px wide, leaving napari's default canvas 300 of 752 px


def test_dock_is_narrow_and_scrolls(sample_viewer, qtbot):
    viewer, widget = sample_viewer
    viewer.window._qt_window.show()
    qtbot.waitUntil(lambda: widget.isVisible())
    hint = widget.minimumSizeHint()
    assert hint.width() <= MAX_DOCK_WIDTH, hint.width()
    assert hint.height() < 200  # any height fits: the column scrolls
    assert widget.sizeHint().width() == hint.width()  # the dock opens at its narrowest
    column = widget.scroll.widget()  # every section is inside the scrolling column
    assert all(column.isAncestorOf(section) for section in (widget.references, widget.options, widget.review))
    # long layer names are elided, not widening the dock
    viewer.layers["targets"].name = "a very long target layer name, as microscopy files often have"
    assert widget.minimumSizeHint().width() == hint.width()


def test_advanced_options_fold_and_unfold_when_one_is_on(make_napari_viewer, tiny_preset):
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    options = widget.options
    assert not options.advanced.is_expanded()
    assert not options.threshold.isVisibleTo(widget) and options.model.isVisibleTo(widget)
    options.advanced.button.click()
    assert options.threshold.isVisibleTo(widget) and options.refine.isVisibleTo(widget)
    options.advanced.button.click()
    assert not options.refine.isVisibleTo(widget)
    options.recipe.setChecked(False)  # saved with the settings: the user's own stages
    again = SineWidget(viewer)
    assert again.options.advanced.is_expanded()  # a result-changing option is never out of sight
    again.close()


def test_model_list_loads_in_a_worker_when_torch_is_not_loaded(make_napari_viewer, tiny_preset, qtbot,
                                                                monkeypatch):
    saved = WidgetSettings.load()
    saved.model, saved.device = TINY_PRESET, "cpu"
    saved.save()
    # as in a fresh napari, where reading the registry would import torch
    monkeypatch.setattr(options_panel, "registry_loaded", lambda: False)
    viewer = make_napari_viewer()
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    options = widget.options
    assert options.loading and options.model.itemText(0) == "loading models…"
    try:
        options.model_choice()
        raise AssertionError("a run was allowed while the model list loads")
    except InputError as error:
        assert "still loading" in str(error)
    options.threshold.setValue(0.3)  # saving now keeps the remembered model and device
    assert WidgetSettings.load().model == TINY_PRESET and WidgetSettings.load().device == "cpu"
    qtbot.waitUntil(lambda: not options.loading, timeout=60_000)
    assert options.model_name() == TINY_PRESET and options.device.currentText() == "cpu"
    assert options.model_choice().name == TINY_PRESET
    assert options.model.isEnabled() and options.refresh_models_button.isEnabled()


def _widget_while_the_list_loads(make_napari_viewer, monkeypatch) -> SineWidget:
    """The sample's layers and a widget whose model list is read in a worker, as in a fresh napari."""
    saved = WidgetSettings.load()
    saved.model, saved.device = TINY_PRESET, "cpu"
    saved.save()
    monkeypatch.setattr(options_panel, "registry_loaded", lambda: False)
    viewer = make_napari_viewer()
    for data, kwargs, kind in nuclei_sample():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    widget = SineWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.options.scale.setValue(TINY_SCALE)
    assert widget.options.loading
    return widget


def test_run_pressed_while_the_model_list_loads_starts_once_it_is_read(make_napari_viewer, tiny_preset,
                                                                        qtbot, monkeypatch):
    widget = _widget_while_the_list_loads(make_napari_viewer, monkeypatch)
    widget.run_button.click()  # a user presses Run at once
    assert widget.busy and not widget.runner.running
    assert "waiting for the model list" in widget.status.text()
    assert not widget.run_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_for_run(qtbot, widget)
    assert widget.status.text() == "done: 3 target(s)"
    assert widget.options.model_name() == TINY_PRESET
    assert "targets [SINE id]" in widget.viewer.layers


def test_a_waiting_run_can_be_cancelled(make_napari_viewer, tiny_preset, qtbot, monkeypatch):
    widget = _widget_while_the_list_loads(make_napari_viewer, monkeypatch)
    widget.run_button.click()
    widget.cancel_button.click()
    assert not widget.busy and widget.status.text() == "cancelled before the start"
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.options.loading, timeout=60_000)
    assert not widget.runner.running and "targets [SINE id]" not in widget.viewer.layers

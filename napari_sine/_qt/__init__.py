"""The Qt side of the plugin: the dock widget, its panels, layer pickers and the run controller.

Everything that imports Qt lives here; the modules beside this package (`napari_sine._inputs`, `_layers`,
`_review`, `_worker`, …) are Qt-free and testable without a display.
"""

"""Few-shot dataset bootstrapping: review state, "label this next" ranking, training-ready export.

Napari-free and torch-free at import: :mod:`~sine_model.bootstrap.review` (proposed / accepted /
corrected / skipped per target, JSON sidecar), :mod:`~sine_model.bootstrap.ranking` (per-target
uncertainty from one propagation pass), :mod:`~sine_model.bootstrap.results` (reading a results folder
of ``napari-sine propagate``) and :mod:`~sine_model.bootstrap.export` (TIFF folders, COCO, OME-Zarr and
napari-sine's training layout, with split manifest, recipe and checksums).
"""

"""The OME-Zarr labels a resumable run writes open in napari as Labels layers (napari-ome-zarr's reader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch  # noqa: F401  (torch before any Qt binding)

pytest.importorskip("napari_ome_zarr")


def test_store_opens_as_labels_layers_in_napari(tmp_path):
    from napari.components import ViewerModel
    from napari.layers import Labels, Layer
    from napari_ome_zarr import napari_get_reader

    from sine_model.io.ome_zarr_labels import OME_ZARR_NAME, OmeZarrLabels

    store = OmeZarrLabels.create(tmp_path / OME_ZARR_NAME, ("instance", "semantic"), 3, (24, 32))
    planes = {m: np.random.default_rng(k).integers(0, 6, (3, 24, 32)).astype(np.uint32)
              for k, m in enumerate(store.modes)}
    for i in range(3):
        store.write(i, {m: planes[m][i] for m in store.modes})

    viewer = ViewerModel()
    # the napari-ome-zarr reader, called directly: npe2 offers it only for paths ending in .zarr, and
    # the label images live in the store's labels/ group (the root has no image of its own)
    reader = napari_get_reader(str(tmp_path / OME_ZARR_NAME / "labels"))
    layers = [viewer.add_layer(Layer.create(*data)) for data in reader()]
    assert [type(layer) for layer in layers] == [Labels, Labels]
    assert sorted(layer.name for layer in layers) == ["labels/instance", "labels/semantic"]
    for layer in layers:
        data = layer.data[0] if layer.multiscale else layer.data
        np.testing.assert_array_equal(np.asarray(data), planes[layer.name.split("/")[1]])
        assert layer.axis_labels == ("t", "y", "x")

"""Upsampling only what is kept (a tile's core, the valid region) gives the values of upsampling all."""

from __future__ import annotations

import pytest
import torch

from sine_model.postprocess.decode import _to_padded_crop, semantic_inference
from sine_model.postprocess.semantic_region import semantic_region_inference
from sine_model.preprocess.transforms import Geometry


@pytest.mark.parametrize(("geometry", "grid", "region"), [
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(72, 150), slice(0, 72))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(150, 224), slice(73, 151))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(0, 224), slice(0, 224))),
    (Geometry(pad=224, valid_hw=(130, 201), original_hw=(130, 201)), 56, (slice(3, 130), slice(100, 201))),
    (Geometry(pad=56, valid_hw=(56, 48), original_hw=(56, 48)), 14, (slice(5, 6), slice(38, 48))),
    # resized: the whole map, cropped
    (Geometry(pad=56, valid_hw=(40, 56), original_hw=(75, 101)), 14, (slice(10, 60), slice(20, 90))),
    # 60 / 14 is not an integer: the whole map, cropped
    (Geometry(pad=60, valid_hw=(60, 60), original_hw=(60, 60)), 14, (slice(10, 50), slice(0, 30))),
])
@pytest.mark.parametrize("classes", [1, 3])
def test_region_equals_the_cropped_map(geometry, grid, region, classes):
    torch.manual_seed(classes)
    logits = torch.randn(37, classes + 1) * 3
    masks = torch.randn(37, grid, grid) * 4
    expected = semantic_inference(logits, masks, geometry, chunk=16)[:, region[0], region[1]]
    actual = semantic_region_inference(logits, masks, geometry, region, chunk=16)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert expected.std() > 0.1  # a map with structure, not a constant


def test_no_classes_gives_an_empty_map():
    geometry = Geometry(pad=56, valid_hw=(56, 56), original_hw=(56, 56))
    out = semantic_region_inference(torch.randn(5, 1), torch.randn(5, 14, 14), geometry,
                                    (slice(0, 10), slice(4, 20)))
    assert out.shape == (0, 10, 16)


def test_scale_one_upsamples_only_the_region(monkeypatch):
    """At scale 1 with an integer factor the whole map is never computed."""
    import sine_model.postprocess.semantic_region as module

    def whole_map(*args, **kwargs):
        raise AssertionError("the whole map was computed")

    geometry = Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224))
    monkeypatch.setattr(module, "semantic_inference", whole_map)
    out = module.semantic_region_inference(torch.randn(8, 3), torch.randn(8, 56, 56), geometry,
                                           (slice(72, 150), slice(0, 72)))
    assert out.shape == (2, 78, 72)


@pytest.mark.parametrize(("pad", "grid", "valid"), [
    (896, 224, (520, 696)), (224, 56, (1, 224)), (224, 56, (223, 5)), (224, 56, (224, 224)),
    (60, 14, (33, 60)),  # 60 / 14 is not an integer: the whole grid
])
def test_padded_crop_upsamples_only_the_valid_region(pad, grid, valid):
    torch.manual_seed(pad)
    masks = torch.randn(3, grid, grid) * 4
    geometry = Geometry(pad=pad, valid_hw=valid, original_hw=valid)
    whole = torch.nn.functional.interpolate(masks[None], size=(pad, pad), mode="bilinear",
                                            align_corners=False)
    torch.testing.assert_close(_to_padded_crop(masks, geometry), whole[:, :, : valid[0], : valid[1]],
                               rtol=0, atol=1e-5)

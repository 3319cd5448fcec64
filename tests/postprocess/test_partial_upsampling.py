"""Upsampling only what is kept (a tile's core, the valid region) gives the values of upsampling all."""

from __future__ import annotations

import pytest
import torch

from sine_model.postprocess.decode import _to_padded_crop, semantic_inference
from sine_model.postprocess.semantic_region import semantic_region_inference
from sine_model.preprocess.transforms import Geometry


@pytest.mark.parametrize(("geometry", "grid", "region"), [
    # the models' grids: P = 224 with 64 mask cells (P / g = 3.5), a 512² target's core
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 64, (slice(40, 184), slice(0, 184))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 64, (slice(41, 224), slice(97, 131))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(72, 150), slice(0, 72))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(150, 224), slice(73, 151))),
    (Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224)), 56, (slice(0, 224), slice(0, 224))),
    (Geometry(pad=224, valid_hw=(130, 201), original_hw=(130, 201)), 56, (slice(3, 130), slice(100, 201))),
    (Geometry(pad=56, valid_hw=(56, 48), original_hw=(56, 48)), 14, (slice(5, 6), slice(38, 48))),
    # resized: the whole map, cropped
    (Geometry(pad=56, valid_hw=(40, 56), original_hw=(75, 101)), 14, (slice(10, 60), slice(20, 90))),
    # 60 / 14 = 30 / 7: windows start at multiples of 7 cells
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
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert expected.std() > 0.1  # a map with structure, not a constant


def test_no_classes_gives_an_empty_map():
    geometry = Geometry(pad=56, valid_hw=(56, 56), original_hw=(56, 56))
    out = semantic_region_inference(torch.randn(5, 1), torch.randn(5, 14, 14), geometry,
                                    (slice(0, 10), slice(4, 20)))
    assert out.shape == (0, 10, 16)


@pytest.mark.parametrize("grid", [56, 64])
def test_scale_one_upsamples_only_the_region(monkeypatch, grid):
    """At scale 1 the whole map is never computed."""
    import sine_model.postprocess.semantic_region as module

    def whole_map(*args, **kwargs):
        raise AssertionError("the whole map was computed")

    geometry = Geometry(pad=224, valid_hw=(224, 224), original_hw=(224, 224))
    monkeypatch.setattr(module, "semantic_inference", whole_map)
    out = module.semantic_region_inference(torch.randn(8, 3), torch.randn(8, grid, grid), geometry,
                                           (slice(72, 150), slice(0, 72)))
    assert out.shape == (2, 78, 72)


@pytest.mark.parametrize(("pad", "grid", "valid"), [
    (896, 256, (520, 696)), (224, 64, (130, 201)), (896, 224, (520, 696)),
    (224, 56, (1, 224)), (224, 56, (223, 5)), (224, 56, (224, 224)),
    (60, 14, (33, 60)),
])
def test_padded_crop_upsamples_only_the_valid_region(pad, grid, valid):
    torch.manual_seed(pad)
    masks = torch.randn(3, grid, grid) * 4
    geometry = Geometry(pad=pad, valid_hw=valid, original_hw=valid)
    whole = torch.nn.functional.interpolate(masks[None], size=(pad, pad), mode="bilinear",
                                            align_corners=False)
    # in bands of rows (window_upsample.BAND_ROWS): the float rounding of shifted source coordinates,
    # as for any window (test below)
    torch.testing.assert_close(_to_padded_crop(masks, geometry), whole[:, :, : valid[0], : valid[1]],
                               rtol=1e-5, atol=2e-4 * pad / 224)


@pytest.mark.parametrize(("pad", "grid"), [(224, 64), (896, 256), (224, 56), (60, 14), (100, 7)])
def test_any_window_matches_the_whole_upsampling(pad, grid):
    from sine_model.postprocess.window_upsample import upsample_window

    rng = torch.Generator().manual_seed(grid)
    masks = torch.randn(4, grid, grid, generator=rng) * 4
    whole = torch.nn.functional.interpolate(masks[None], size=(pad, pad), mode="bilinear",
                                            align_corners=False)
    for _ in range(20):
        r0, r1 = sorted(torch.randint(0, pad + 1, (2,), generator=rng).tolist())
        c0, c1 = sorted(torch.randint(0, pad + 1, (2,), generator=rng).tolist())
        rows, cols = slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))
        if rows.stop > pad or cols.stop > pad:
            continue
        # float32 source coordinates: (d + 0.5)·g/P vs (d − offset + 0.5)·g/P + cell differ by ~1e-7·P,
        # so logits up to ~16 move by up to ~1e-4·P/224 (a misplaced window moves them by units)
        torch.testing.assert_close(upsample_window(masks, pad, rows, cols), whole[:, :, rows, cols],
                                   rtol=1e-5, atol=2e-4 * pad / 224)

"""The filter bank's faster layout (one padding, one resize per scale) against the layout it replaced.

The reference below is the previous forward pass, written against the bank's own kernels: both separable
passes as dense convolutions, the intermediate padded again between them, every feature resized on its
own. The outputs must agree to float32 rounding (~1e-5), for the encoder's configuration and for odd
sizes, strides and pyramid levels.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sine_model.modeling.filter_bank import FilterBank, _eigen_sym, _resize


def reference_scale_features(bank: FilterBank, rgb: torch.Tensor, i: int) -> list[torch.Tensor]:
    """Scale ``i`` as the bank computed it before (pad, horizontal pass, pad, vertical pass)."""
    sigma, inner = bank.local_sigmas[i], bank.inner_sigmas[i]
    horizontal, vertical = getattr(bank, f"horizontal_{i}"), getattr(bank, f"vertical_{i}")
    radius = horizontal.shape[-1] // 2
    x = torch.cat([rgb.mean(dim=1, keepdim=True), rgb], dim=1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), horizontal)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), vertical)
    smooth, gx, gy, hxx, hyy, hxy, ix, iy = x[:, :8].split(1, dim=1)
    products = torch.cat([ix * ix, iy * iy, ix * iy], dim=1) * inner**2
    g = horizontal[5, 1, 0]
    products = F.conv2d(F.pad(products, (radius, radius, 0, 0), mode="replicate"),
                        g.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    products = F.conv2d(F.pad(products, (0, 0, radius, radius), mode="replicate"),
                        g.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    big, small = _eigen_sym(products[:, :1], products[:, 1:2], products[:, 2:])
    out = [smooth, sigma * torch.sqrt(gx**2 + gy**2 + 1e-12), sigma**2 * (hxx + hyy),
           *(sigma**2 * e for e in _eigen_sym(hxx, hyy, hxy)),
           big.clamp_min(0).sqrt(), small.clamp_min(0).sqrt()]
    if bank.colour:
        out.append(x[:, 8:])
    return out


def reference_forward(bank: FilterBank, images: torch.Tensor) -> torch.Tensor:
    height, width = images.shape[-2:]
    size = (max(1, height // bank.stride), max(1, width // bank.stride))
    rgb = images.float() * bank.std + bank.mean
    pyramid = {0: rgb}
    for level in range(1, max(bank.levels) + 1):
        prev = pyramid[level - 1]
        pyramid[level] = F.avg_pool2d(prev, 2, ceil_mode=True) if min(prev.shape[-2:]) > 1 else prev
    features = [_resize(rgb, size)] if bank.include_raw else []
    for i, level in enumerate(bank.levels):
        features.extend(_resize(f, size) for f in reference_scale_features(bank, pyramid[level], i))
    return torch.cat(features, dim=1)


@pytest.mark.parametrize(("options", "shape"), [
    ({"stride": 2}, (2, 3, 224, 224)),  # the embedded encoder's bank and input
    ({}, (1, 3, 61, 47)),
    ({"stride": 3}, (1, 3, 100, 97)),
    ({"sigmas": (0.7, 4.0), "colour": False, "include_raw": False}, (1, 3, 9, 50)),
])
def test_bank_matches_its_previous_layout(options, shape):
    torch.manual_seed(0)
    bank = FilterBank(**options)
    images = torch.randn(*shape)
    with torch.no_grad():
        actual, expected = bank(images), reference_forward(bank, images)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert expected.abs().max() > 0.1  # the comparison is not between two near-zero maps


@pytest.mark.parametrize(("options", "shape"), [
    ({"stride": 2}, (3, 3, 224, 224)),  # the encoder's: channel slices of a batch are not contiguous
    ({"sigmas": (0.7, 1.6, 3.5, 5.0, 8.0, 16.0)}, (1, 3, 70, 90)),  # the refiner's (written in place)
])
def test_features_written_into_one_output_equal_the_concatenated_ones(options, shape):
    # no-grad forwards write each scale into its channels of one output (or of a given buffer): the same
    # values, to the bit, as concatenating the scales (the autograd path)
    torch.manual_seed(0)
    bank = FilterBank(**options)
    images = torch.randn(*shape)
    with torch.enable_grad():
        concatenated = bank(images.requires_grad_()).detach()
    images = images.detach()
    with torch.no_grad():
        assert torch.equal(bank(images), concatenated)
        buffer = torch.full_like(concatenated, float("nan"))
        assert bank(images, out=buffer) is buffer and torch.equal(buffer, concatenated)
        with pytest.raises(ValueError, match="out must be a contiguous float32 tensor of shape"):
            bank(images, out=buffer[:, 1:])
    with pytest.raises(ValueError, match="out= needs autograd off"):
        bank(images.requires_grad_(), out=buffer)
